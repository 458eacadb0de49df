"""``pyrovae diagnose``: gradient variance and SNR of estimators at a run's checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.parser import _add_data_flags, _loading, choices_help
from pyrovae.core.choices import ESTIMATORS
from pyrovae.core.defaults import DIAGNOSE_BATCH as BATCH
from pyrovae.core.defaults import DIAGNOSE_MOST_ESTIMATORS as MOST_ESTIMATORS
from pyrovae.core.defaults import DIAGNOSE_SAMPLES as SAMPLES
from pyrovae.core.ranges import SIZE
from pyrovae.runs.folder import DIAGNOSTICS


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``diagnose`` subcommand and its flags."""
    diagnose = subparsers.add_parser(
        "diagnose", help="gradient variance and SNR of estimators at a run's checkpoint"
    )
    diagnose.add_argument("run_dir", metavar="RUN_DIR")
    diagnose.add_argument(
        "--estimators",
        nargs="+",
        metavar="NAME",
        help=choices_help(
            "estimators to compare (miwae:M, ciwae:β, piwae:M with their parameter; default: "
            "the run's own and elbo, iwae, iwae-dreg or score-function where they apply, "
            f"{MOST_ESTIMATORS} in all)",
            ESTIMATORS,
            pick="any of",
        ),
    )
    diagnose.add_argument(
        "--num-particles",
        nargs="+",
        type=SIZE,
        metavar="K",
        help="particle counts K to try with each estimator (default: 1, 10 and the run's K)",
    )
    diagnose.add_argument(
        "--samples",
        type=SAMPLES,
        default=100,
        metavar="M",
        help="gradients drawn per row (default: 100)",
    )
    diagnose.add_argument(
        "--batch-size",
        type=SIZE,
        metavar="B",
        help=f"the fixed batch: the first B test images (default: {BATCH}, or all when fewer)",
    )
    diagnose.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    diagnose.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data_flags(diagnose)


def run(args: argparse.Namespace) -> None:
    """Say how long it will take, draw the gradients and print one row per estimator and
    particle count."""
    from pyrovae.runs.diagnose import diagnose_run

    rows = diagnose_run(
        args.run_dir,
        args.estimators,
        args.num_particles,
        samples=args.samples,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        announce=lambda estimate: print(estimate, flush=True),
        **_loading(args),
    )
    first = rows[0]
    print(
        f"gradients at the checkpoint: {first['samples']} draws per row, "
        f"batch of the first {first['batch_size']} test images"
    )
    width = max(len("estimator"), *(len(r["estimator"]) for r in rows))
    columns = [  # (group, figure, header, format); 9 characters each
        (group, key, f"{group[:3]} {label}", fmt)
        for group in ("encoder", "decoder")
        for key, label, fmt in (
            ("snr", "SNR", ">9.4f"),
            ("variance_mean", "var", ">9.3e"),
            ("mean_norm", "|E g|", ">9.3e"),
        )
    ]
    print(f"{'estimator':<{width}}  {'K':>4}" + "".join(f"  {h:>9}" for _, _, h, _ in columns))
    for r in rows:
        cells = "".join(f"  {r[g][key]:{fmt}}" for g, key, _, fmt in columns)
        print(f"{r['estimator']:<{width}}  {r['num_particles']:>4}{cells}")
    layers = [g for g in first if "/" in g]  # encoder/z1, … with several stochastic layers
    if layers:
        print("SNR per stochastic layer (encoder: q(z_l|·); decoder: what z_l feeds)")
        print(f"{'estimator':<{width}}  {'K':>4}" + "".join(f"  {g:>10}" for g in layers))
        for r in rows:
            cells = "".join(f"  {r[g]['snr']:>10.4f}" for g in layers)
            print(f"{r['estimator']:<{width}}  {r['num_particles']:>4}{cells}")
    print(f"written to {Path(args.run_dir) / DIAGNOSTICS}")
