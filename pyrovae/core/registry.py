"""Look-ups in the registries (one dict per swappable kind) with a one-line error for bad names,
and each entry's one-line description (what ``--help`` lists)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TypeVar

from pyrovae.core.errors import PyroVAEError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, kind: str) -> T:
    """``registry[name]``, or a :class:`PyroVAEError` naming the known entries."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise PyroVAEError(f"unknown {kind} {name!r}; choose one of: {known}") from None


def describe(entry: object) -> str:
    """A registry entry's one-line description: its ``description`` attribute, else the first
    line of its own docstring (a class's or a function's, never one inherited from its type),
    without a final full stop; empty when it has neither. A string is its own description (the
    torch-free copies in :mod:`pyrovae.core.choices`)."""
    if isinstance(entry, str):
        return entry
    text = getattr(entry, "description", None)
    if text is None and (inspect.isclass(entry) or inspect.isroutine(entry)):
        text = entry.__doc__
    lines = (text or "").strip().splitlines()
    return lines[0].strip().removesuffix(".") if lines else ""
