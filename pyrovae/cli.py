"""``pyrovae train`` / ``evaluate`` / ``diagnose`` / ``sample`` / ``plot``: a thin layer over
:mod:`pyrovae.runs`.

The train flags are generated from :class:`~pyrovae.runs.config.TrainConfig`'s fields; ``train``
also draws the run's figures into ``RUN_DIR/figures/`` (``--no-figures`` skips them).
``pyrovae plot RUN_DIR`` redraws one run's figures; ``pyrovae plot RUN_DIR RUN_DIR … --out DIR``
overlays several runs' training curves. Bad input prints one line ``pyrovae: error: …`` on
stderr and exits with status 2.

Under ``torchrun``, ``train`` joins the process group the launcher describes and trains
data-parallel; rank 0 prints the results and the errors every rank shares. The other commands
run in one process: under torchrun rank 0 runs them and the other ranks exit at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from pyrovae.core.distributed import (
    DEFAULT_TIMEOUT,
    agree,
    launch_rank,
    process_group_from_env,
    reported_by_root,
)
from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.files import os_error
from pyrovae.runs import (
    LOG_PX_SAMPLES,
    TrainConfig,
    diagnose_run,
    evaluate_run,
    plot_runs,
    resume_run,
    sample_run,
    train_run,
)
from pyrovae.runs.config import PRESETS, preset_config
from pyrovae.runs.folder import DIAGNOSTICS, EVALUATION, FIGURES

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), as for every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name}
        args = typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=args[0], nargs="+", metavar="N")
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            kwargs["type"] = next(a for a in args if a is not type(None))
        else:
            kwargs["type"] = hint
        kwargs["help"] = f"{f.metadata['help']} (default: {f.default})"
        parser.add_argument(_flag(f.name), **kwargs)


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder holding the IDX files (else $PYROVAE_DATA, …)")
    parser.add_argument(
        "--no-download", action="store_true", help="never try a torchvision download"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyrovae", description="Variational autoencoders on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a VAE (or --resume one)")
    _add_config_flags(train)
    _add_data_flags(train)
    train.add_argument(
        "--preset",
        metavar="NAME",
        help=f"start from a named protocol ({', '.join(PRESETS)}); other flags override it",
    )
    train.add_argument("--run-dir", help="run folder (default: a new folder under runs/)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--no-figures",
        action="store_true",
        help=f"no figures in RUN_DIR/{FIGURES}/ and no latent snapshots (2-D latent) in latents.pt",
    )
    train.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="under torchrun: how long a process waits for the others to join, and in any "
        f"exchange, before it stops with an error (default: {DEFAULT_TIMEOUT:g})",
    )

    evaluate = sub.add_parser("evaluate", help="print a run's test figures")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument(
        "--num-samples",
        type=int,
        default=LOG_PX_SAMPLES,
        metavar="K",
        help=f"importance samples for log p(x); 0 skips it (default: {LOG_PX_SAMPLES}; "
        "the paper protocol is 5000)",
    )
    evaluate.add_argument(
        "--test-subset", type=int, metavar="N", help="evaluate on the first N test images only"
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    _add_data_flags(evaluate)

    diagnose = sub.add_parser(
        "diagnose", help="gradient variance and SNR of estimators at a run's checkpoint"
    )
    diagnose.add_argument("run_dir", metavar="RUN_DIR")
    diagnose.add_argument(
        "--estimators", nargs="+", required=True, metavar="NAME", help="estimators to compare"
    )
    diagnose.add_argument(
        "--num-particles",
        nargs="+",
        type=int,
        required=True,
        metavar="K",
        help="particle counts K to try with each estimator",
    )
    diagnose.add_argument(
        "--samples",
        type=int,
        default=100,
        metavar="M",
        help="gradients drawn per row (default: 100)",
    )
    diagnose.add_argument(
        "--batch-size",
        type=int,
        default=64,
        metavar="B",
        help="the fixed batch: the first B test images (default: 64)",
    )
    diagnose.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    diagnose.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_data_flags(diagnose)

    sample = sub.add_parser("sample", help="generate images from a run's prior (as a PNG grid)")
    sample.add_argument("run_dir", metavar="RUN_DIR")
    sample.add_argument("--label", type=int, help="the class to generate (conditional VAE)")
    sample.add_argument("--num", type=int, default=64, help="how many images (default: 64)")
    sample.add_argument("--out", help="PNG file (default: samples[-label-Y].png in RUN_DIR)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    sample.add_argument("--force", action="store_true", help="replace an existing --out file")

    plot = sub.add_parser(
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
    return parser


RESUMABLE = {"epochs", "device"}


def _train(args: argparse.Namespace) -> None:
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)
    }
    common = {
        "data_dir": args.data_dir,
        "download": not args.no_download,
        "progress": not args.no_progress,
        "figures": not args.no_figures,
    }
    with process_group_from_env(args.dist_timeout) as rank:
        if args.resume is not None:
            fixed = sorted(set(given) - RESUMABLE)
            if fixed or args.run_dir is not None or args.preset is not None:
                names = ", ".join(_flag(n) for n in fixed) or (
                    "--run-dir" if args.run_dir is not None else "--preset"
                )
                error = PyroVAEError(f"--resume keeps the run's settings; drop {names}")
                raise reported_by_root(error)  # every rank has the same arguments
            epochs, device = given.get("epochs"), given.get("device")
            path, history = resume_run(args.resume, epochs, device, **common)
        else:
            preset = args.preset
            config = agree(
                lambda: TrainConfig(**given) if preset is None else preset_config(preset, **given)
            )
            path, history = train_run(config, args.run_dir, **common)
    if rank == 0:
        last = history[-1]
        print(f"test ELBO {last['test_elbo']:.2f} nats per image after epoch {last['epoch']}")
        print(f"run folder: {path}")


def _evaluate(args: argparse.Namespace) -> None:
    figures = evaluate_run(
        args.run_dir,
        args.device,
        args.data_dir,
        not args.no_download,
        num_samples=args.num_samples,
        test_subset=args.test_subset,
        progress=not args.no_progress,
    )
    print(f"epoch {figures['epoch']}, {figures['num_test']} test images, per image in nats:")
    print(f"  test ELBO            {figures['test_elbo']:.3f}")
    print(f"  reconstruction term  {figures['test_recon']:.3f}")
    print(f"  KL(q(z|x) || p(z))   {figures['test_kl']:.3f}")
    if "log_px" in figures:
        stderr = figures["log_px_stderr"]
        spread = f"± {stderr:.3f}" if stderr is not None else "± n/a"
        print(
            f"  log p(x)             {figures['log_px']:.3f} {spread} "
            f"(K={figures['num_samples']}, MC error {figures['log_px_mc_stderr']:.3f})"
        )
        print(f"  effective samples    {figures['ess']:.1f} of {figures['num_samples']}")
    active = figures["active_units"]
    print(f"  active units         {'n/a' if active is None else active} / {figures['latent_dim']}")
    print(f"written to {Path(args.run_dir) / EVALUATION}")


def _loading(args: argparse.Namespace) -> dict[str, Any]:
    """Where a command that reloads a run puts it and finds its data."""
    return {"device": args.device, "data_dir": args.data_dir, "download": not args.no_download}


def _diagnose(args: argparse.Namespace) -> None:
    rows = diagnose_run(
        args.run_dir,
        args.estimators,
        args.num_particles,
        samples=args.samples,
        batch_size=args.batch_size,
        progress=not args.no_progress,
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
    print(f"written to {Path(args.run_dir) / DIAGNOSTICS}")


def _sample(args: argparse.Namespace) -> None:
    target = sample_run(
        args.run_dir, args.num, args.label, args.out, args.seed, args.device, args.force
    )
    print(f"{args.num} samples written to {target}")


def _plot(args: argparse.Namespace) -> None:
    written = plot_runs(args.run_dirs, args.out, args.labels, note=_note, **_loading(args))
    for path in written:
        print(path)
    print(f"{len(written)} figure{'' if len(written) == 1 else 's'} written")


def _note(text: str) -> None:
    print(f"pyrovae: note: {text}", file=sys.stderr)


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "diagnose": _diagnose,
    "sample": _sample,
    "plot": _plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "train" and launch_rank() != 0:
        return 0  # one process does it: rank 0 (see the module docstring)
    try:
        COMMANDS[args.command](args)
    except PyroVAEError as e:
        if not getattr(e, "reported_by_root", False):  # every rank has it; rank 0 says it
            print(f"pyrovae: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pyrovae: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    except OSError as e:  # a file problem no check foresaw: still one line, never a traceback
        print(f"pyrovae: error: {os_error('use', e.filename or '(a file)', e)}", file=sys.stderr)
        return EXIT_USAGE
    except (RuntimeError, MemoryError) as e:
        if not _out_of_memory(e):
            raise
        print(
            f"pyrovae: error: out of memory ({first_line(e)}); the last checkpoint is kept; "
            "use smaller sizes",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


def _out_of_memory(e: BaseException) -> bool:
    """A GPU's or the CPU allocator's out-of-memory error (torch raises a RuntimeError)."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(e)


if __name__ == "__main__":
    sys.exit(main())
