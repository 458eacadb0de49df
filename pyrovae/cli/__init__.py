"""``pyrovae train`` / ``evaluate`` / ``diagnose`` / ``sample`` / ``plot``: a thin layer over
:mod:`pyrovae.runs`.

The train flags are generated from :class:`~pyrovae.runs.config.TrainConfig`'s fields (a flag that
names a registry entry lists every entry with its one-line description); ``--config FILE`` reads
them from a JSON or TOML file first. ``train`` also draws the run's figures into
``RUN_DIR/figures/`` (``--no-figures`` skips them), and ``--tensorboard`` logs each epoch.
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
import re
import sys
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
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
from pyrovae.core.registry import describe
from pyrovae.inference.estimators import ESTIMATORS
from pyrovae.inference.report import test_figure
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
from pyrovae.runs.config_file import read_config_file
from pyrovae.runs.folder import DIAGNOSTICS, EVALUATION, FIGURES, read_config
from pyrovae.runs.load import OTHER_DATA_FLAG
from pyrovae.runs.tensorboard import TENSORBOARD

EXIT_USAGE = 2


_CHOICE = re.compile(r"\s+\S+\s{2,}")  # "  name  " at the start of a choice line


class _HelpFormatter(argparse.HelpFormatter):
    """Help texts keep their line breaks; each line is wrapped on its own, and a choice line
    (``  name  description``) continues under its description."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        lines = []
        for line in text.splitlines():
            name = _CHOICE.match(line)
            indent = " " * (name.end() if name else 0)
            wrapped = textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False)
            lines += wrapped or [""]
        return lines


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump), as for every other bad input, and help
    texts that keep their line breaks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def choices_help(
    text: str, registry: Mapping[str, Any], default: Any = None, pick: str = "one of"
) -> str:
    """A flag's help: ``text`` (and its default), then one line per registry entry, its name
    and its one-line description (:func:`~pyrovae.core.registry.describe`)."""
    width = max(map(len, registry))
    head = text if default is None else f"{text} (default: {default})"
    lines = [f"  {name:<{width}}  {describe(entry)}" for name, entry in registry.items()]
    return "\n".join([f"{head}, {pick}:", *lines]).replace("%", "%%")


def _readable(value: Any) -> str:
    """A default as it is typed on the command line: ``400 400``, not ``(400, 400)``."""
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


METAVARS = {int: "N", float: "X"}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "dest": f.name}
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            # X | None: a flag of X; int | tuple[int, ...]: one value or several (the tuple)
            options = typing.get_args(hint)
            tuples = [a for a in options if typing.get_origin(a) is tuple]
            hint = tuples[0] if tuples else next(a for a in options if a is not type(None))
        args = typing.get_args(hint)
        registry = f.metadata["choices"]
        if hint is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=args[0], nargs="+")
        else:
            kwargs["type"] = hint
        if "type" in kwargs:
            name = "NAME" if registry is not None else f.name.upper()
            kwargs["metavar"] = METAVARS.get(kwargs["type"], name)
        if registry is not None:
            kwargs["help"] = choices_help(f.metadata["help"], registry, f.default)
        else:
            text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
            if f.default is not None and hint is not bool:
                text += f" (default: {_readable(f.default)})"
            kwargs["help"] = text
        parser.add_argument(_flag(f.name), **kwargs)


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        help="the only folder a registered dataset is looked for in (default: $PYROVAE_DATA, …)",
    )
    parser.add_argument(
        "--no-download", action="store_true", help="never try a torchvision download"
    )
    parser.add_argument(
        OTHER_DATA_FLAG,
        action="store_true",
        help="use data whose content hash differs from the one the run was trained on",
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
    train.add_argument(
        "--config",
        metavar="FILE",
        help="settings from a JSON or TOML file of TrainConfig fields (the flags above, spelled "
        "latent_dim = 2), or a run's own config.json; flags override it, it overrides --preset",
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
        "--tensorboard",
        action="store_true",
        help=f"also write each epoch's metrics and image grids as TensorBoard events in "
        f"RUN_DIR/{TENSORBOARD}/ (needs pip install 'pyrovae[tensorboard]')",
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
        "--estimators",
        nargs="+",
        required=True,
        metavar="NAME",
        help=choices_help("estimators to compare", ESTIMATORS, pick="any of"),
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
        "tensorboard": args.tensorboard,
    }
    with process_group_from_env(args.dist_timeout) as rank:
        if args.resume is not None:
            fixed = [_flag(n) for n in sorted(set(given) - RESUMABLE)]
            fixed += [
                _flag(n) for n in ("run_dir", "preset", "config") if getattr(args, n) is not None
            ]
            if fixed:
                error = PyroVAEError(f"--resume keeps the run's settings; drop {', '.join(fixed)}")
                raise reported_by_root(error)  # every rank has the same arguments
            epochs, device = given.get("epochs"), given.get("device")
            path, history = resume_run(
                args.resume, epochs, device, **common, allow_other_data=args.allow_other_data
            )
        elif args.allow_other_data:
            error = PyroVAEError(f"{OTHER_DATA_FLAG} is for --resume; a new run records its data")
            raise reported_by_root(error)
        else:
            preset = args.preset

            def resolved() -> TrainConfig:
                settings = {} if args.config is None else read_config_file(args.config)
                settings |= given
                if preset is None:
                    return TrainConfig(**settings)
                return preset_config(preset, **settings)

            config = agree(resolved)
            path, history = train_run(config, args.run_dir, **common)
    if rank == 0:
        config = read_config(path)
        name, key = test_figure(config.beta, config.kl_warmup)
        last = history[-1]
        print(f"test {name} {last[key]:.2f} nats per image after epoch {last['epoch']}")
        print(f"run folder: {path}")


def _evaluate(args: argparse.Namespace) -> None:
    results = evaluate_run(
        args.run_dir,
        args.device,
        args.data_dir,
        not args.no_download,
        num_samples=args.num_samples,
        test_subset=args.test_subset,
        progress=not args.no_progress,
        allow_other_data=args.allow_other_data,
    )
    print(f"epoch {results['epoch']}, {results['num_test']} test images, per image in nats:")
    if results.get("point_mass"):  # the autoencoder: no ELBO, no KL, no log p(x)
        print(f"  reconstruction term  {results['test_recon']:.3f}")
        print(f"  −log p(z) at code    {results['test_kl']:.3f}")
        print("  log p(x)             n/a: a point-mass guide has no density to sample with")
    else:
        print(
            f"  test ELBO            {results['test_elbo']:.3f} "
            f"({results['test_elbo_bpd']:.4f} bits/dim)"
        )
        print(f"  reconstruction term  {results['test_recon']:.3f}")
        print(f"  KL(q(z|x) || p(z))   {results['test_kl']:.3f}")
    if "log_px" in results:
        stderr = results["log_px_stderr"]
        spread = f"± {stderr:.3f}" if stderr is not None else "± n/a"
        print(
            f"  log p(x)             {results['log_px']:.3f} {spread} "
            f"(K={results['num_samples']}, MC error {results['log_px_mc_stderr']:.3f}; "
            f"{results['log_px_bpd']:.4f} bits/dim)"
        )
        print(f"  effective samples    {results['ess']:.1f} of {results['num_samples']}")
    print(f"  active units         {_per_layer(results['active_units'], results['latent_dim'])}")
    print(f"written to {Path(args.run_dir) / EVALUATION}")


def _per_layer(active: int | list[int] | None, dims: int | list[int]) -> str:
    """``6 / 50``, or per stochastic layer ``20 / 100 (z1), 5 / 50 (z2)``."""
    if isinstance(dims, int):
        return f"{'n/a' if active is None else active} / {dims}"
    counts = active if active is not None else ["n/a"] * len(dims)
    return ", ".join(
        f"{a} / {d} (z{i})" for i, (a, d) in enumerate(zip(counts, dims, strict=True), start=1)
    )


def _loading(args: argparse.Namespace) -> dict[str, Any]:
    """Where a command that reloads a run puts it and finds its data."""
    return {
        "device": args.device,
        "data_dir": args.data_dir,
        "download": not args.no_download,
        "allow_other_data": args.allow_other_data,
    }


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
    layers = [g for g in first if "/" in g]  # encoder/z1, … with several stochastic layers
    if layers:
        print("SNR per stochastic layer (encoder: q(z_l|·); decoder: what z_l feeds)")
        print(f"{'estimator':<{width}}  {'K':>4}" + "".join(f"  {g:>10}" for g in layers))
        for r in rows:
            cells = "".join(f"  {r[g]['snr']:>10.4f}" for g in layers)
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
