"""``pyrovae train`` / ``pyrovae evaluate``: a thin layer over :mod:`pyrovae.experiment`.

The train flags are generated from :class:`~pyrovae.config.TrainConfig`'s fields. Bad input
prints one line ``pyrovae: error: …`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Sequence
from typing import Any, NoReturn

from pyrovae.config import TrainConfig
from pyrovae.errors import PyroVAEError

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
        if typing.get_origin(hint) is tuple:
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
    train.add_argument("--run-dir", help="run folder (default: a new folder under runs/)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")

    evaluate = sub.add_parser("evaluate", help="print a run's test figures")
    evaluate.add_argument("run_dir", metavar="RUN_DIR")
    evaluate.add_argument("--device", help="cpu, cuda or auto (default: the run's)")
    _add_data_flags(evaluate)
    return parser


RESUMABLE = {"epochs", "device"}


def _train(args: argparse.Namespace) -> None:
    from pyrovae.experiment import resume_run, train_run

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)
    }
    common = {
        "data_dir": args.data_dir,
        "download": not args.no_download,
        "progress": not args.no_progress,
    }
    if args.resume is not None:
        fixed = sorted(set(given) - RESUMABLE)
        if fixed or args.run_dir is not None:
            names = ", ".join(_flag(n) for n in fixed) or "--run-dir"
            raise PyroVAEError(f"--resume keeps the run's settings; drop {names}")
        path, history = resume_run(args.resume, given.get("epochs"), given.get("device"), **common)
    else:
        path, history = train_run(TrainConfig(**given), args.run_dir, **common)
    last = history[-1]
    print(f"test ELBO {last['test_elbo']:.2f} nats per image after epoch {last['epoch']}")
    print(f"run folder: {path}")


def _evaluate(args: argparse.Namespace) -> None:
    from pyrovae.experiment import evaluate_run

    figures = evaluate_run(args.run_dir, args.device, args.data_dir, not args.no_download)
    print(f"epoch {figures['epoch']}, {figures['num_test']} test images, per image in nats:")
    print(f"  test ELBO            {figures['test_elbo']:.3f}")
    print(f"  reconstruction term  {figures['test_recon']:.3f}")
    print(f"  KL(q(z|x) || p(z))   {figures['test_kl']:.3f}")
    print(f"written to {args.run_dir}/evaluation.json")


COMMANDS = {"train": _train, "evaluate": _evaluate}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except PyroVAEError as e:
        print(f"pyrovae: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pyrovae: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
