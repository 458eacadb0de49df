"""``pyrovae plot``: redraw one run's figures, or overlay several runs' training curves."""

from __future__ import annotations

import argparse
import sys

from pyrovae.cli.parser import _add_data_flags, _loading
from pyrovae.runs.folder import FIGURES


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``plot`` subcommand and its flags."""
    plot = subparsers.add_parser(
        "plot",
        help="draw a run's figures, or overlay several runs' training curves",
        description=f"One run: redraw its figures (training curves, reconstructions, samples, "
        f"traversal; latent, manifold and latent snapshots for a 2-D latent space; bound, SNR "
        f"and gradient variance where evaluate / diagnose have run) into RUN_DIR/{FIGURES}/ or "
        f"--out. Several runs: their training curves overlaid in --out/training_curves.png "
        f"and each run's bound and diagnostic figures in --out/LABEL/.",
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    plot.add_argument(
        "--out",
        metavar="DIR",
        help=f"folder for the PNGs (default for one run: RUN_DIR/{FIGURES}; required for several)",
    )
    plot.add_argument(
        "--labels", nargs="+", metavar="LABEL", help="one name per run (default: folder names)"
    )
    plot.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    _add_data_flags(plot)


def run(args: argparse.Namespace) -> None:
    """Draw the figures and print each PNG's path."""
    from pyrovae.runs.plot import plot_runs

    written = plot_runs(args.run_dirs, args.out, args.labels, note=_note, **_loading(args))
    for path in written:
        print(path)
    print(f"{len(written)} figure{'' if len(written) == 1 else 's'} written")


def _note(text: str) -> None:
    print(f"pyrovae: note: {text}", file=sys.stderr)
