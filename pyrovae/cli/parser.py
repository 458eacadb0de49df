"""What every verb's parser shares: the help formatter, :class:`_Parser` (one-line errors), the
flags generated from :class:`~pyrovae.runs.config.TrainConfig`, the data flags,
:func:`choices_help` (a flag that names a registry entry) and :func:`check_ranges` (every
integer flag within its declared range)."""

from __future__ import annotations

import argparse
import dataclasses
import re
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, NoReturn

from pyrovae.core.defaults import OTHER_DATA_FLAG
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.ranges import IntRange
from pyrovae.core.registry import describe
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.config import flag as _flag

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

# The registry flags whose value is a name (--dataset's may be a path instead), with the word
# TrainConfig's check names the kind by: check_ranges refuses an unknown name right after
# parsing, in the same words, before torch is loaded. --estimator's NAME:PARAMETER is checked up
# to the colon (its parameter by TrainConfig).
NAMED_KINDS = {
    "pixels": "pixel mode",
    "estimator": "estimator",
    "likelihood": "likelihood",
    "guide": "guide",
    "prior": "prior",
    "net": "network",
    "conditional_model": "conditional model",
    "activation": "activation",
    "lr_schedule": "learning-rate schedule",
}


@dataclasses.dataclass(frozen=True)
class _Name:
    """argparse's ``type`` for a registry flag: reads the text as it is; :meth:`check` refuses
    a name (before any ``:``) not among ``names``, as :func:`~pyrovae.core.registry.lookup`
    does."""

    names: tuple[str, ...]
    kind: str

    def __call__(self, text: str) -> str:
        return text

    def check(self, flag: str, value: str | None) -> None:
        """A one-line :class:`PyroVAEError` unless ``value`` (None: not given) names an entry."""
        if value is None:
            return
        name = value.partition(":")[0] if self.kind == "estimator" else value
        if name not in self.names:
            known = ", ".join(sorted(self.names))
            raise PyroVAEError(f"unknown {self.kind} {name!r}; choose one of: {known}")


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
            kwargs["type"] = f.metadata["range"] or kwargs["type"]  # read, checked after parsing
            if f.name in NAMED_KINDS:
                kwargs["type"] = _Name(tuple(registry), NAMED_KINDS[f.name])
        if registry is not None:
            kwargs["help"] = choices_help(f.metadata["help"], registry, f.default)
        else:
            text = f.metadata["help"].replace("%", "%%")  # argparse formats help with %
            if f.default is not None and hint is not bool and _readable(f.default):
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


def _loading(args: argparse.Namespace) -> dict[str, Any]:
    """Where a command that reloads a run puts it and finds its data."""
    return {
        "device": args.device,
        "data_dir": args.data_dir,
        "download": not args.no_download,
        "allow_other_data": args.allow_other_data,
    }


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, in one line, a value outside the :class:`~pyrovae.core.ranges.IntRange` its flag
    was declared with (its ``type``), or an unknown registry name (:class:`_Name`), in
    ``parser`` and the subcommand chosen: right after parsing, before any file is read or
    anything is built (and before torch is loaded)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            check_ranges(action.choices[getattr(args, action.dest)], args)
        elif isinstance(action.type, (IntRange, _Name)):
            name = (action.option_strings or [action.dest])[0]
            action.type.check(name, getattr(args, action.dest, None))
