"""Look-ups in the registries (one dict per swappable kind) with a one-line error for bad names."""

from __future__ import annotations

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
