"""The ``pyrovae`` command: :data:`VERBS` (one module per verb), the parser they make up, and
:func:`main`, which runs one verb and turns its errors into one line on stderr."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

from pyrovae.cli import diagnose, evaluate, gaps, plot, sample, train
from pyrovae.cli.parser import EXIT_USAGE, _Parser, check_ranges
from pyrovae.core.errors import Note, PyroVAEError, first_line
from pyrovae.core.files import os_error
from pyrovae.core.signals import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Terminated,
    sigterm_as_interrupt,
)
from pyrovae.core.threads import AUTO, parse_threads, use_threads

# Each verb's module has add_parser(subparsers), its subcommand and flags, and run(args).
# The parser lists them in this order.
VERBS: dict[str, ModuleType] = {
    "train": train,
    "evaluate": evaluate,
    "diagnose": diagnose,
    "gaps": gaps,
    "sample": sample,
    "plot": plot,
}
"""The subcommands by name: name ↦ its module, with ``add_parser(subparsers)`` and ``run(args)``."""


def build_parser() -> argparse.ArgumentParser:
    """The ``pyrovae`` parser: one subcommand per entry of :data:`VERBS`, each with
    ``--threads``. Building it, ``--help`` and a bad argument load no torch (the verbs' modules
    import it where they run)."""
    parser = _Parser(prog="pyrovae", description="Variational autoencoders on Pyro.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for verb in VERBS.values():
        verb.add_parser(sub)
    for verb_parser in sub.choices.values():  # every verb computes with torch
        verb_parser.add_argument(
            "--threads",
            type=parse_threads,
            default=AUTO,
            metavar="N",
            help="torch's CPU threads: a number, or auto: $OMP_NUM_THREADS when set, else the "
            "cores this process may use less the 1-minute load average, at least 1. How this "
            "process runs, not a setting of the run: not recorded, may change on --resume, "
            "same results (default: auto)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyrovae ARGV``; the exit status: 0, 2 on bad input, 130 when interrupted (Ctrl-C),
    143 when terminated (SIGTERM, as a scheduler stops a job)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # as argparse's own errors: at once (no torch loaded yet), on every rank
        check_ranges(parser, args)
    except PyroVAEError as e:
        print(f"pyrovae: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    from pyrovae.core.distributed import launch_rank

    if args.command != "train" and launch_rank() != 0:
        return 0  # one process does it: rank 0 (see the pyrovae.cli docstring)
    try:
        with sigterm_as_interrupt(), _notes_on_one_line():
            return _run(parser, args)
    except KeyboardInterrupt as e:  # out here: also when it lands while an error is handled
        terminated = isinstance(e, Terminated)
        if launch_rank() == 0:  # under torchrun every rank gets the signal; rank 0 says it
            what = "terminated (SIGTERM)" if terminated else "interrupted"
            print(f"pyrovae: {what}; the last checkpoint is kept", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the verb with its ``--threads``; its errors as one line on stderr and exit status
    2."""
    try:
        use_threads(args.threads)
        VERBS[args.command].run(args)
    except PyroVAEError as e:
        if not getattr(e, "reported_by_root", False):  # every rank has it; rank 0 says it
            print(f"pyrovae: error: {e}", file=sys.stderr)
        return EXIT_USAGE
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


@contextmanager
def _notes_on_one_line() -> Iterator[None]:
    """:class:`~pyrovae.core.errors.Note` warnings as ``pyrovae: note: ...`` lines on stderr
    for the block; other warnings as Python shows them."""
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, Note):
            print(f"pyrovae: note: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


# torch's RuntimeErrors for memory it cannot give: the CPU allocator's, and a tensor whose size
# in bytes passes 2⁶³ (sizes within their ranges can still multiply past it: --hidden 2³¹−1 2³¹−1)
NO_MEMORY = ("can't allocate memory", "Storage size calculation overflowed")


def _out_of_memory(e: BaseException) -> bool:
    """A GPU's or the CPU allocator's out-of-memory error, or a size past any memory."""
    import torch

    return isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(
        text in str(e) for text in NO_MEMORY
    )
