"""A traced fast path for any estimator: Pyro's tracing runs once per input signature, not per step.

Each step of a plain estimator re-runs the model and guide under Pyro's effect handlers
(messengers, traces, site bookkeeping): a fixed Python cost of a few milliseconds per step. With
:class:`JitELBO` the estimator's ``differentiable_loss`` is recorded once with ``torch.jit.trace``
and later steps replay the recorded graph of tensor operations: the same random draws (the
graph's ``normal`` ops read the global generator as the eager code does), the same loss and the
same gradient, none of the Python.

Pyro's own ELBOs report part of their loss through ``torch_item`` (a Python float); a trace
would freeze that float at its recording-time value, so the replayed loss would carry an offset
that depends on when the graph was recorded (a resumed run records anew, and its reported
``train_elbo`` drifted by ~1e-7 relative). While recording, ``torch_item`` keeps the value as a
detached tensor in the graph instead, so every replay reports its own step's loss.

A recorded graph is only valid while everything the Python code branched on stays the same, so
the cache key holds the argument shapes, dtypes and devices, the modules' identities and
train/eval modes, and the scales set by enclosing Pyro handlers (a β on the latent site is a
constant of the graph). Anything else that changes the control flow of model or guide
(a different number of sites, data-dependent branches) is outside what a trace can express.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import pyro
import torch
from pyro.infer import ELBO
from pyro.infer.util import torch_item
from pyro.poutine.runtime import _PYRO_STACK

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import get_rng_state, set_rng_state


class _LossGraph(torch.nn.Module):
    """``estimator.differentiable_loss(model, guide, *args)`` as a module, so that tracing sees
    the parameters of model and guide as the graph's parameters (updated in place by the
    optimizer, so never stale) rather than as constants."""

    def __init__(self, estimator: ELBO, model: torch.nn.Module, guide: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.guide = guide
        self._estimator = estimator

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self._estimator.differentiable_loss(self.model, self.guide, *args)


def _detached(x: Any) -> Any:
    """``torch_item`` while recording: the value stays a (detached) tensor of the graph."""
    return x.detach() if isinstance(x, torch.Tensor) else x


@contextmanager
def _items_in_graph() -> Iterator[None]:
    """Replace ``torch_item`` in Pyro's inference modules for the duration of a recording."""
    modules = [m for m in list(sys.modules.values()) if _uses_torch_item(m)]
    saved = [(m, m.torch_item) for m in modules]
    try:
        for m in modules:
            m.torch_item = _detached
        yield
    finally:
        for m, fn in saved:
            m.torch_item = fn


def _uses_torch_item(module: Any) -> bool:
    name = getattr(module, "__name__", "") or ""
    return name.startswith("pyro.infer") and getattr(module, "torch_item", None) is torch_item


def _signature(x: Any) -> Hashable:
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.dtype, x.device, x.requires_grad)
    raise PyroVAEError(f"the jit path takes tensor arguments only, got {type(x).__name__}")


def _handler_state() -> Hashable:
    """What enclosing Pyro handlers contribute to a trace: their types and scales."""
    state = []
    for messenger in _PYRO_STACK:
        scale = getattr(messenger, "scale", None)
        if isinstance(scale, torch.Tensor):
            scale = tuple(scale.detach().cpu().reshape(-1).tolist())
        state.append((type(messenger), scale))
    return tuple(state)


class JitELBO(ELBO):
    """Any ELBO estimator (Pyro's or pyrovae's) with its gradient computation traced and cached.

    ``differentiable_loss`` / ``loss_and_grads`` replay a recorded graph (one per signature, see
    the module docstring); ``loss`` (no gradient, used for evaluation) is the wrapped estimator's.
    The loss equals the plain path's under the same seed up to floating-point summation order.
    """

    def __init__(self, estimator: ELBO) -> None:
        super().__init__(
            num_particles=getattr(estimator, "num_particles", 1),
            max_plate_nesting=getattr(estimator, "max_plate_nesting", float("inf")),
        )
        self.estimator = estimator
        self._graphs: dict[Hashable, torch.jit.ScriptModule] = {}

    @property
    def traceable(self) -> bool:
        """False for an estimator whose loss takes a gradient itself (``iwae-dreg``: a recorded
        graph cannot hold an ``autograd.grad`` call) or that has no ``differentiable_loss``
        (Pyro's ``RenyiELBO``): those run plainly."""
        return getattr(self.estimator, "traceable", True) and hasattr(
            self.estimator, "differentiable_loss"
        )

    @property
    def num_traces(self) -> int:
        """How many graphs were recorded so far (one per distinct signature)."""
        return len(self._graphs)

    def _graph(self, model, guide, args: tuple) -> torch.jit.ScriptModule:
        key = (
            id(model),
            id(guide),
            bool(getattr(model, "training", True)),
            bool(getattr(guide, "training", True)),
            tuple(_signature(a) for a in args),
            _handler_state(),
        )
        graph = self._graphs.get(key)
        if graph is None:
            if not (isinstance(model, torch.nn.Module) and isinstance(guide, torch.nn.Module)):
                raise PyroVAEError("the jit path needs model and guide to be torch modules")
            rng = get_rng_state()  # recording runs the function once: its draws are discarded
            with warnings.catch_warnings():
                # the trace's own notes: Python booleans (validation checks) become constants,
                # and torch marks jit.trace as superseded by torch.compile / torch.export
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", FutureWarning)
                with pyro.validation_enabled(False), _items_in_graph():
                    graph = torch.jit.trace(
                        _LossGraph(self.estimator, model, guide), args, check_trace=False
                    )
            set_rng_state(rng)
            self._graphs[key] = graph
        return graph

    def _get_trace(self, model, guide, args, kwargs):
        return self.estimator._get_trace(model, guide, args, kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.estimator.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        if not self.traceable:
            return self.estimator.differentiable_loss(model, guide, *args, **kwargs)
        if kwargs:
            raise PyroVAEError("the jit path takes positional tensor arguments only")
        graph = self._graph(model, guide, args)
        # replayed as recorded: TorchScript's optimizing passes (differentiable subgraphs with
        # their own autodiff) made a step slower here, not faster
        with torch.jit.optimized_execution(False):
            return graph(*args)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        if not self.traceable:
            return self.estimator.loss_and_grads(model, guide, *args, **kwargs)
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
