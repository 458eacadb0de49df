"""Recording a training step: the estimator's loss and its gradient, forward and backward, run
once on the real tensors under ``make_fx`` and kept as a graph of tensor operations, and
``torch.compile`` of such a graph. The compiled fast path
(:mod:`~pyrovae.inference.compiled`) and seeds side by side
(:mod:`~pyrovae.inference.replicas`) are built on it.

While recording, what Python reads of a tensor's value cannot stay in a graph: Pyro's
``torch_item`` keeps its value a tensor, its NaN warnings are skipped (checked on the eager
warm-up step), a flow's permutation reads as Python ints, and pyrovae's own value checks are
skipped (:func:`~pyrovae.core.runtime.is_recording`). Parameters, floating-point buffers and
the scales and temperatures of enclosing handlers (β, τ) are inputs of the graph; integer
buffers are structure, its constants.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer import ELBO
from pyro.infer.util import torch_item
from pyro.poutine.runtime import _PYRO_STACK
from pyro.util import warn_if_inf, warn_if_nan

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import get_rng_state, recording, set_rng_state

BACKEND_ENV = "PYROVAE_COMPILE_BACKEND"
DEFAULT_BACKEND = "inductor"


def compile_backend() -> str:
    """The ``torch.compile`` backend of the fast path: ``$PYROVAE_COMPILE_BACKEND`` or Inductor.

    ``eager`` (Dynamo without code generation) records and replays the same graph without
    compiling kernels: what the test suite uses, where each tiny model would otherwise wait
    seconds for its kernels.
    """
    return os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND


def inductor_cache_dir() -> str:
    """Where Inductor keeps compiled kernels across runs (``TORCHINDUCTOR_CACHE_DIR`` first)."""
    from pyrovae.data.files import cache_dir  # the one cache root of pyrovae

    return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or str(cache_dir() / "inductor")


@contextmanager
def inductor_cache() -> Iterator[None]:
    """Inductor's cache in pyrovae's cache folder while compiling (where the user has not chosen
    one), and torch's note that a CPU machine has no CUDA runtime silenced; the environment is
    as it was afterwards."""
    name = "TORCHINDUCTOR_CACHE_DIR"
    before = os.environ.get(name)
    os.environ[name] = before or inductor_cache_dir()
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found" on CPU
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        quiet.setLevel(level)
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


class _Step(torch.nn.Module):
    """Model and guide as one module, so that ``functional_call`` can hand the recording its
    parameters and buffers as inputs (a parameter shared by both, a VampPrior's encoder, is
    one input)."""

    def __init__(self, estimator: ELBO, model: torch.nn.Module, guide: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.guide = guide
        self._estimator = estimator

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self._estimator.differentiable_loss(self.model, self.guide, *args)


def _identity(value: Any, *_: Any, **__: Any) -> Any:
    return value


def _detached(x: Any) -> Any:
    return x.detach() if isinstance(x, torch.Tensor) else x


# What Pyro's inference code calls that reads a tensor's value in Python: a recording cannot
# hold a Python float or a branch on a value, so while recording these keep tensors in the graph.
_VALUE_READERS = {
    "torch_item": (torch_item, _detached),
    "warn_if_nan": (warn_if_nan, _identity),
    "warn_if_inf": (warn_if_inf, _identity),
}


@contextmanager
def _values_in_graph() -> Iterator[None]:
    """Replace Pyro's value readers in its modules while recording."""
    saved = []
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "") or ""
        if not name.startswith("pyro."):
            continue
        for attr, (original, replacement) in _VALUE_READERS.items():
            if getattr(module, attr, None) is original:
                saved.append((module, attr, original))
                setattr(module, attr, replacement)
    try:
        yield
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)


@contextmanager
def _orders_as_ints(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """While recording, an autoregressive network's ``permutation`` (an integer buffer that
    Pyro's flow inverse iterates over, one pass per dimension) reads as a tuple of Python ints:
    a recording can index by an int, not by a tensor element it would have to read."""
    from pyro.nn import AutoRegressiveNN

    saved = []
    for module in modules:
        for sub in module.modules():
            order = sub._buffers.get("permutation") if isinstance(sub, AutoRegressiveNN) else None
            if isinstance(order, torch.Tensor):
                saved.append((sub, order))
                sub._buffers["permutation"] = tuple(order.tolist())
    try:
        yield
    finally:
        for sub, order in saved:
            sub._buffers["permutation"] = order


def _signature(x: Any) -> Hashable:
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.dtype, x.device)
    raise PyroVAEError(f"the compiled path takes tensor arguments only, got {type(x).__name__}")


# Attributes of enclosing Pyro handlers that are inputs of a recorded graph, not constants: the
# scale of a β-VAE's LatentScale (or poutine.scale) and the temperature of a relaxed code.
HANDLER_INPUTS = ("scale", "temperature")


def _handler_inputs() -> list[tuple[Any, str]]:
    """(handler, attribute) for each enclosing Pyro handler's number-valued input attribute."""
    return [
        (m, name)
        for m in _PYRO_STACK
        for name in HANDLER_INPUTS
        if isinstance(getattr(m, name, None), (int, float, torch.Tensor))
    ]


def _handler_values(inputs: Sequence[tuple[Any, str]]) -> list[torch.Tensor]:
    return [torch.as_tensor(getattr(m, name), dtype=torch.float64) for m, name in inputs]


@contextmanager
def _inputs_as(inputs: Sequence[tuple[Any, str]], values: Sequence[torch.Tensor]):
    saved = [getattr(m, name) for m, name in inputs]
    try:
        for (m, name), v in zip(inputs, values, strict=True):
            setattr(m, name, v)
        yield
    finally:
        for (m, name), v in zip(inputs, saved, strict=True):
            setattr(m, name, v)


@dataclass
class CompileStats:
    """What the fast path did: graphs compiled, seconds spent recording and compiling (the
    first compiled call included), and the reasons of the signatures that run eagerly."""

    graphs: int = 0
    seconds: float = 0.0
    fallbacks: list[str] = field(default_factory=list)


def say(log: Callable[[str], None] | None, line: str) -> None:
    """A compile time or a fallback, to ``log``, or on standard error where there is none."""
    if log is not None:
        log(line)
    else:
        print(f"pyrovae: {line}", file=sys.stderr)


@dataclass
class Recording:
    """A step recorded by :func:`record_step`: ``graph(*params, *buffers, *handler inputs,
    *args)`` → (loss, ∇ loss for each of ``params``), a graph of tensor operations alone."""

    graph: torch.fx.GraphModule
    params: list[torch.Tensor]
    buffers: list[torch.Tensor]

    def inputs(self) -> list[torch.Tensor]:
        """The graph's leading inputs now: parameters (detached), buffers, and the enclosing
        handlers' scales and temperatures (:data:`HANDLER_INPUTS`)."""
        handlers = _handler_values(_handler_inputs())
        return [*(p.detach() for p in self.params), *self.buffers, *handlers]


@contextmanager
def _one_fake_mode() -> Iterator[None]:
    """One fake-tensor mode for the shapes ``make_fx`` notes beside each operation it records.

    Tracing real tensors, it makes a new mode for every operation unless a tracing context
    names one, and each new mode captures the whole Python call stack with its source lines:
    at the depth of a run inside ``fit`` that took 6 times the recording itself (0.7 s instead
    of 0.12 s for a small IWAE step, 80 frames deep). The mode holds metadata only: the graph
    recorded is the same."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode

    with tracing(TracingContext(FakeTensorMode())):
        yield


def record_step(estimator: ELBO, model, guide, args: tuple) -> Recording:
    """Record ``estimator``'s step on (model, guide, args) with ``make_fx``: the loss and
    ``torch.autograd.grad`` of it, run once on the real tensors, forward and backward. The
    generator state is put back afterwards (recording's draws are discarded)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    holder = _Step(estimator, model, guide)
    named = dict(holder.named_parameters())
    names = [n for n, p in named.items() if p.requires_grad]
    frozen = {n: p for n, p in named.items() if not p.requires_grad}
    # floating-point buffers are inputs (they may change); integer ones (a flow's permutation,
    # masks) are structure, constants of the graph, so code may iterate over them
    buffers = {n: b for n, b in holder.named_buffers() if b.is_floating_point()}
    handlers = _handler_inputs()
    scales = _handler_values(handlers)
    n_params, n_buffers, n_scales = len(names), len(buffers), len(scales)

    def step(*inputs: torch.Tensor):
        params = inputs[:n_params]
        bufs = inputs[n_params : n_params + n_buffers]
        sc = inputs[n_params + n_buffers : n_params + n_buffers + n_scales]
        data = inputs[n_params + n_buffers + n_scales :]
        tensors = {
            **dict(zip(names, params, strict=True)),
            **frozen,
            **dict(zip(buffers, bufs, strict=True)),
        }
        with _inputs_as(handlers, sc):
            loss = torch.func.functional_call(holder, tensors, data, tie_weights=True)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [
            g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)
        ]
        return (loss.detach(), *grads)

    leaves = [named[n].detach().requires_grad_(True) for n in names]
    inputs = (*leaves, *buffers.values(), *scales, *args)
    rng = get_rng_state()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with (
                pyro.validation_enabled(False),
                _values_in_graph(),
                _orders_as_ints((model, guide)),
                recording(),
                _one_fake_mode(),
            ):
                graph = make_fx(step)(*inputs)
    finally:
        set_rng_state(rng)
    return Recording(graph, [named[n] for n in names], list(buffers.values()))


def compile_graph(graph: Callable, backend: str, mode: str | None = None) -> Callable:
    """``torch.compile`` of a recorded graph; Inductor calls torch's own random kernels, so the
    compiled graph draws what the eager code draws."""
    options = {"fallback_random": True} if backend == "inductor" else None
    return torch.compile(
        graph, backend=backend, mode=mode, options=options, dynamic=False, fullgraph=True
    )
