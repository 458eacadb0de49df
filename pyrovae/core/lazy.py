"""A package's public names imported on first use (PEP 562), so that importing the package (and
the command line's ``--help``) loads no torch."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    namespace: dict[str, Any], sources: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package whose ``globals()`` is ``namespace``:
    a public name (``sources``: name ↦ the module that defines it) or a module of the package
    is imported on first use, then kept as a plain global; ``dir()`` lists ``__all__`` and the
    modules as when the package imported them all."""
    package = namespace["__name__"]
    submodules = {
        m.name for m in pkgutil.iter_modules(namespace["__path__"]) if not m.name.startswith("_")
    }

    def __getattr__(name: str) -> Any:
        if name in sources:
            value = getattr(importlib.import_module(sources[name]), name)
        elif name in submodules:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace["__all__"]) | submodules)

    return __getattr__, __dir__
