"""A PyroModule whose parameters live in the module, never in Pyro's global param store; and
buffers kept across a block that may update them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn


class LocalPyroModule(PyroModule):
    """PyroModule with ``module_local_params`` switched on for its own construction and calls only.

    In Pyro's default mode a PyroModule reads and writes its parameters through the global param
    store, so two models with the same attribute names silently share weights. Here the setting
    is scoped to this module, so nothing leaks into (or out of) the store and the process-wide
    setting is left as the user had it. Train with a torch optimizer over ``.parameters()``.
    """

    def __init__(self, name: str = "") -> None:
        with pyro.settings.context(module_local_params=True):
            super().__init__(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with pyro.settings.context(module_local_params=True):
            return super().__call__(*args, **kwargs)


@contextmanager
def buffers_kept(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Inside the block the modules' floating-point buffers may change (a running average that a
    step updates in place, NVIL's); on leaving they hold their values from before again."""
    found = {id(b): b for m in modules for b in m.buffers() if b.is_floating_point()}
    buffers = list(found.values())
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved, strict=True):
                b.copy_(value)
