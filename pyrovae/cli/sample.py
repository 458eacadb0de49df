"""``pyrovae sample``: images from a run's prior, as a PNG grid."""

from __future__ import annotations

import argparse

from pyrovae.core.ranges import COUNT, SEED, SIZE


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``sample`` subcommand and its flags."""
    sample = subparsers.add_parser(
        "sample", help="generate images from a run's prior (as a PNG grid)"
    )
    sample.add_argument("run_dir", metavar="RUN_DIR")
    sample.add_argument("--label", type=COUNT, help="the class to generate (conditional VAE)")
    sample.add_argument("--num", type=SIZE, default=64, help="how many images (default: 64)")
    sample.add_argument("--out", help="PNG file (default: samples[-label-Y].png in RUN_DIR)")
    sample.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    sample.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    sample.add_argument("--force", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> None:
    """Draw the samples and write the grid."""
    from pyrovae.runs.sample import sample_run

    target = sample_run(
        args.run_dir, args.num, args.label, args.out, args.seed, args.device, args.force
    )
    print(f"{args.num} samples written to {target}")
