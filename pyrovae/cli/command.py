"""The ``pyrovae`` command: :data:`VERBS` (one module per verb), the parser they make up, and
:func:`main`, which runs one verb and turns its errors into one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

import torch

from pyrovae.cli import diagnose, evaluate, plot, sample, train
from pyrovae.cli.parser import EXIT_USAGE, _Parser, check_ranges
from pyrovae.core.distributed import launch_rank
from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.files import os_error

# Each verb's module has add_parser(subparsers), its subcommand and flags, and run(args).
# The parser lists them in this order.
VERBS: dict[str, ModuleType] = {
    "train": train,
    "evaluate": evaluate,
    "diagnose": diagnose,
    "sample": sample,
    "plot": plot,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``pyrovae`` parser: one subcommand per entry of :data:`VERBS`."""
    parser = _Parser(prog="pyrovae", description="Variational autoencoders on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for verb in VERBS.values():
        verb.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyrovae ARGV``; the exit status: 0, 2 on bad input, 130 when interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "train" and launch_rank() != 0:
        return 0  # one process does it: rank 0 (see the pyrovae.cli docstring)
    try:
        check_ranges(parser, args)
        VERBS[args.command].run(args)
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


# torch's RuntimeErrors for memory it cannot give: the CPU allocator's, and a tensor whose size
# in bytes passes 2⁶³ (sizes within their ranges can still multiply past it: --hidden 2³¹−1 2³¹−1)
NO_MEMORY = ("can't allocate memory", "Storage size calculation overflowed")


def _out_of_memory(e: BaseException) -> bool:
    """A GPU's or the CPU allocator's out-of-memory error, or a size past any memory."""
    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(
        text in str(e) for text in NO_MEMORY
    )
