"""``pyrovae gaps``: the inference gap split into its approximation and amortization parts."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.parser import _add_data_flags
from pyrovae.core.defaults import ELBO_SAMPLES, LOCAL
from pyrovae.core.defaults import GAPS_AIS_STEPS as AIS_STEPS
from pyrovae.core.defaults import GAPS_CHAINS as CHAINS
from pyrovae.core.defaults import GAPS_LEAPFROG as LEAPFROG
from pyrovae.core.defaults import GAPS_SAMPLES as SAMPLES
from pyrovae.core.defaults import GAPS_TEST_SUBSET as TEST_SUBSET
from pyrovae.core.ranges import SIZE
from pyrovae.runs.folder import GAPS


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``gaps`` subcommand and its flags."""
    gaps = subparsers.add_parser(
        "gaps",
        help="split log p(x) − ELBO into the approximation and amortization gaps",
        description="log p(x) − L[q_φ] = (log p(x) − L[q*]) + (L[q*] − L[q_φ]): q* is the best q "
        "of the guide's family for each test image alone (Adam from the encoder's output, "
        "stopped on a plateau), log p(x) is estimated by AIS (Cremer et al. 2018).",
    )
    gaps.add_argument("run_dir", metavar="RUN_DIR")
    gaps.add_argument(
        "--test-subset",
        type=SIZE,
        default=TEST_SUBSET,
        metavar="N",
        help=f"the first N test images (default: {TEST_SUBSET})",
    )
    for flag, default, metavar, what in (
        ("--ais-steps", AIS_STEPS, "T", "AIS intermediate distributions"),
        ("--chains", CHAINS, "C", "AIS chains per image"),
        ("--leapfrog", LEAPFROG, "L", "leapfrog steps per HMC transition"),
        ("--local-steps", LOCAL.max_steps, "N", "at most N Adam steps of the search for q*"),
        ("--local-samples", LOCAL.samples, "K", "particles per image in each step of it"),
    ):
        gaps.add_argument(
            flag, type=SIZE, default=default, metavar=metavar, help=f"{what} (default: {default})"
        )
    gaps.add_argument(
        "--local-lr",
        type=float,
        default=LOCAL.lr,
        metavar="LR",
        help=f"Adam's learning rate in the search for q* (default: {LOCAL.lr})",
    )
    gaps.add_argument(
        "--tolerance",
        type=float,
        default=LOCAL.tolerance,
        metavar="TOL",
        help="stop the search once the mean ELBO (on fixed noise, checked every "
        f"{LOCAL.check_every} steps) has risen by no more than TOL nats for {LOCAL.patience} "
        f"checks (default: {LOCAL.tolerance})",
    )
    gaps.add_argument(
        "--samples",
        type=SAMPLES,
        default=ELBO_SAMPLES,
        metavar="S",
        help=f"particles per image for L[q*] and L[q_φ] (default: {ELBO_SAMPLES})",
    )
    gaps.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    gaps.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data_flags(gaps)


def run(args: argparse.Namespace) -> None:
    """Split the gap on the run's first test images; print the table before it is written."""
    from pyrovae.inference.gaps import LocalSettings
    from pyrovae.runs.gaps import gaps_run

    local = LocalSettings(
        max_steps=args.local_steps,
        lr=args.local_lr,
        samples=args.local_samples,
        tolerance=args.tolerance,
    )
    gaps_run(
        args.run_dir,
        args.device,
        args.data_dir,
        not args.no_download,
        test_subset=args.test_subset,
        ais_steps=args.ais_steps,
        chains=args.chains,
        leapfrog=args.leapfrog,
        samples=args.samples,
        local=local,
        progress=not args.no_progress,
        allow_other_data=args.allow_other_data,
        report=_print,
    )
    print(f"written to {Path(args.run_dir) / GAPS}")


def _print(entry: dict) -> None:
    from pyrovae.inference.gaps import FIGURES

    print(
        f"epoch {entry['epoch']}, {entry['num_test']} test images, guide {entry['guide']}, "
        "per image in nats (± standard error over images; Monte-Carlo error):"
    )
    for key, label in FIGURES:
        figure = entry[key]
        stderr = "n/a" if figure["stderr"] is None else f"{figure['stderr']:.3f}"
        print(f"  {label:19s} {figure['mean']:9.3f} ± {stderr} (MC {figure['mc_stderr']:.3f})")
    ais, local = entry["ais"], entry["local"]
    if ais is not None:
        accepted = entry["acceptance"]
        rate = "" if accepted is None else f", acceptance {accepted:.2f}"
        print(f"  AIS: T={ais['steps']}, {ais['chains']} chains, L={ais['leapfrog']}{rate}")
    steps, plateaus = entry["local_steps"], entry["local_plateau"]
    span = f"{min(steps)}" if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"
    print(
        f"  q*: {span} Adam steps (lr {local['lr']}, {local['samples']} particles), "
        f"{sum(plateaus)} of {len(plateaus)} batches stopped on the plateau (under "
        f"{local['tolerance']} nats over {local['patience']} checks of {local['check_every']} "
        f"steps), else at {local['max_steps']}",
        flush=True,
    )
