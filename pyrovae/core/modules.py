"""A PyroModule whose parameters live in the module, never in Pyro's global param store."""

from __future__ import annotations

from typing import Any

import pyro
from pyro.nn import PyroModule


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
