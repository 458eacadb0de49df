"""The compiled fast path: a training step recorded once per input signature and compiled with
``torch.compile``, none of Pyro's per-step Python.

Each plain step re-runs the model and guide under Pyro's effect handlers (messengers, traces,
site bookkeeping): a fixed Python cost of milliseconds per step, and a loss built from many
small kernels. :class:`CompiledELBO` records, once per signature, the whole step

    (θ, φ, buffers, scales, args) ↦ (loss, ∇_θ,φ loss)

as one graph of tensor operations: ``make_fx`` runs the estimator's ``differentiable_loss``
and ``torch.autograd.grad`` of it on the real tensors and keeps what they did, forward *and*
backward, so every stop-gradient (STL's φ̄, DReG's w̃ and its inner gradient, the score
function's detached z) is already resolved into explicit operations. ``torch.compile`` then
fuses that graph (Inductor by default). Dynamo on Pyro's own code does not work as well: its
handlers break the graph in a dozen places and the step gets slower, not faster.

- **Same noise.** The graph keeps the estimator's random draws as operations on the global
  generator, and Inductor is told to call torch's own random kernels (``fallback_random``), so
  a compiled step draws what the eager step draws: same loss and gradients up to floating-point
  summation order.
- **Warm-up.** Before the first step of each signature is recorded, the loss runs once
  eagerly without gradients (Pyro may create parameters on first use, and the model's own
  errors surface as they would eagerly). Its draws, and recording's, are discarded (the
  generator state is put back), so every step, the first included, runs the compiled graph:
  a resumed run is the same run.
- **Scales as inputs.** The scales of enclosing handlers (a β on the latent sites, warmed up
  step by step) are tensor inputs, so a KL warm-up reuses one graph.
- **Never silent.** Where recording or compiling fails, the step runs eagerly from then on for
  that signature, and one line names the reason. The compile time is reported once per graph.
- **Cache.** Inductor's compiled kernels are kept in ``$XDG_CACHE_HOME/pyrovae/inductor`` (unless
  ``TORCHINDUCTOR_CACHE_DIR`` says otherwise), so a second run of the same model compiles faster.

A recorded graph is valid while what the Python code branched on stays the same, so the cache
key holds the argument shapes, dtypes and devices, the modules' identities, which tensors are
their parameters (a replaced parameter is another graph) and their train/eval modes, and the
types of the enclosing handlers. Submodules added to model or guide after their first step are
not seen: build the model before training it. Control flow that depends on the
data is outside what a recording can express: use ``compile=False`` (``--no-compile``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
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

from pyrovae.core.errors import PyroVAEError, first_line
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
_VALUE_READERS = {"torch_item": (torch_item, _detached), "warn_if_nan": (warn_if_nan, _identity),
                  "warn_if_inf": (warn_if_inf, _identity)}


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


def _scaled_handlers() -> list[Any]:
    """Enclosing Pyro handlers that scale log-densities (β-VAE, poutine.scale)."""
    return [m for m in _PYRO_STACK if isinstance(getattr(m, "scale", None), (int, float,
                                                                            torch.Tensor))]


@contextmanager
def _scales_as(handlers: Sequence[Any], values: Sequence[torch.Tensor]) -> Iterator[None]:
    saved = [m.scale for m in handlers]
    try:
        for m, v in zip(handlers, values, strict=True):
            m.scale = v
        yield
    finally:
        for m, v in zip(handlers, saved, strict=True):
            m.scale = v


@dataclass
class CompileStats:
    """What the fast path did: graphs compiled, seconds spent recording and compiling (the
    first compiled call included), and the reasons of the signatures that run eagerly."""

    graphs: int = 0
    seconds: float = 0.0
    fallbacks: list[str] = field(default_factory=list)


@dataclass
class Recording:
    """A step recorded by :func:`record_step`: ``graph(*params, *buffers, *scales, *args)`` →
    (loss, ∇ loss for each of ``params``), a graph of tensor operations alone."""

    graph: torch.fx.GraphModule
    params: list[torch.Tensor]
    buffers: list[torch.Tensor]

    def inputs(self) -> list[torch.Tensor]:
        """The graph's leading inputs now: parameters (detached), buffers, handler scales."""
        scales = [torch.as_tensor(m.scale, dtype=torch.float64) for m in _scaled_handlers()]
        return [*(p.detach() for p in self.params), *self.buffers, *scales]


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
    handlers = _scaled_handlers()
    scales = [torch.as_tensor(m.scale, dtype=torch.float64) for m in handlers]
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
        with _scales_as(handlers, sc):
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


@dataclass
class _CompiledStep:
    """One recorded and compiled step: ``fn(*args)`` → (loss, ∇ of each of ``params``)."""

    fn: Callable[..., Sequence[torch.Tensor]]
    params: list[torch.Tensor]




class CompiledELBO(ELBO):
    """Any ELBO estimator (Pyro's or pyrovae's) whose ``loss_and_grads`` runs a compiled step
    (see the module docstring); ``loss`` and ``differentiable_loss`` are the wrapped
    estimator's own. The loss and gradients equal the eager ones under the same seed, up to
    floating-point summation order.

    An estimator with Python state that a graph would freeze (a counter, a running average
    kept in Python) sets ``compilable = False`` and runs eagerly, saying so once.

    ``backend``/``mode``: ``torch.compile``'s (default :func:`compile_backend`; ``mode``
    ``"reduce-overhead"`` replays CUDA graphs on a GPU). ``log``: where the compile time and
    any fallback are reported (default: standard error).
    """

    def __init__(
        self,
        estimator: ELBO,
        backend: str | None = None,
        mode: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(
            num_particles=getattr(estimator, "num_particles", 1),
            max_plate_nesting=getattr(estimator, "max_plate_nesting", float("inf")),
        )
        self.estimator = estimator
        self.backend = backend or compile_backend()
        self.mode = mode
        self.log = log
        self.stats = CompileStats()
        self._steps: dict[Hashable, _CompiledStep | str] = {}
        self._slots: dict[tuple[int, int], list[tuple[dict, str]]] = {}

    @property
    def num_graphs(self) -> int:
        """How many steps were compiled so far (one per distinct signature)."""
        return self.stats.graphs

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)
        else:
            print(f"pyrovae: {line}", file=sys.stderr)

    def _key(self, model, guide, args: tuple) -> Hashable:
        return (
            id(model),
            id(guide),
            bool(getattr(model, "training", True)),
            bool(getattr(guide, "training", True)),
            tuple(_signature(a) for a in args),
            tuple((type(m), getattr(m, "sites", None)) for m in _PYRO_STACK),
            self._parameters(model, guide),
        )

    def _parameters(self, model, guide) -> tuple:
        """Which tensors are the parameters now, with their requires_grad: a parameter
        replaced (another shape, say) or frozen is another graph. The walk over the modules
        is made once per pair (a step of a small model is a millisecond); the slots it found
        are read at every step."""
        slots = self._slots.get((id(model), id(guide)))
        if slots is None:
            slots = [
                (sub._parameters, name)
                for module in (model, guide)
                if isinstance(module, torch.nn.Module)
                for sub in module.modules()
                for name in sub._parameters
            ]
            self._slots[(id(model), id(guide))] = slots
        return tuple(
            (id(p), p.requires_grad) if (p := params[name]) is not None else None
            for params, name in slots
        )

    def _unsupported(self, model, guide) -> str | None:
        name = type(self.estimator).__name__
        if not getattr(self.estimator, "compilable", True):  # Python state a graph would freeze
            return f"{name} sets compilable = False"
        if not hasattr(self.estimator, "differentiable_loss"):
            return f"{name} has no differentiable_loss"
        if not (isinstance(model, torch.nn.Module) and isinstance(guide, torch.nn.Module)):
            return "model and guide are not torch modules"
        return None

    def _record(self, model, guide, args: tuple) -> _CompiledStep:
        """Record the step (:func:`record_step`) and wrap it in ``torch.compile``."""
        rec = record_step(self.estimator, model, guide, args)
        compiled = compile_graph(rec.graph, self.backend, self.mode)

        def run(*data: torch.Tensor):
            with torch.no_grad():
                return compiled(*rec.inputs(), *data)

        return _CompiledStep(run, rec.params)

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss (a float, summed over the batch), its gradient accumulated into ``.grad``."""
        if kwargs:
            raise PyroVAEError("the compiled path takes positional tensor arguments only")
        key = self._key(model, guide, args)
        step = self._steps.get(key)
        if step is None:
            return self._compile_and_run(key, model, guide, args)
        if isinstance(step, str):  # compiling failed: eager, as said once
            return self._eager(model, guide, args)
        return self._apply(step, step.fn(*args))

    def _compile_and_run(self, key, model, guide, args) -> float:
        """Warm up, record, compile and run the step (Dynamo and Inductor compile on the first
        call). The warm-up is an eager forward pass whose draws are discarded, so every step of
        a signature, the first included, is a compiled one (a resumed run is the same run). Any
        failure of recording or compiling leaves the generator as it was and runs eagerly."""
        reason = self._unsupported(model, guide)
        if reason is None:
            rng = get_rng_state()
            with torch.no_grad():  # errors of the model itself surface here, as eagerly
                self.estimator.differentiable_loss(model, guide, *args)
            set_rng_state(rng)
            start = time.perf_counter()
            try:
                step = self._record(model, guide, args)
                with inductor_cache():  # Dynamo and Inductor compile on the first call
                    outputs = step.fn(*args)
            except Exception as e:  # whatever the recording or the compiler raised
                set_rng_state(rng)
                reason = f"compiling failed: {type(e).__name__}: {first_line(str(e)) or '…'}"
            else:
                seconds = time.perf_counter() - start
                self.stats.graphs += 1
                self.stats.seconds += seconds
                self._steps[key] = step
                self._say(f"compiled the training step in {seconds:.1f} s ({self.backend})")
                return self._apply(step, outputs)
        line = f"the training step runs eagerly ({reason})"
        self._steps[key] = line
        self.stats.fallbacks.append(reason)
        self._say(line)
        return self._eager(model, guide, args)

    def _eager(self, model, guide, args) -> float:
        """The step the graph would have recorded, run eagerly: ``differentiable_loss``'s
        backward (its own ``loss_and_grads`` where an estimator has none)."""
        if not hasattr(self.estimator, "differentiable_loss"):
            return self.estimator.loss_and_grads(model, guide, *args)
        loss = self.estimator.differentiable_loss(model, guide, *args)
        loss.backward()
        return loss.item()

    @staticmethod
    def _apply(step: _CompiledStep, outputs: Sequence[torch.Tensor]) -> float:
        loss, *grads = outputs
        for p, g in zip(step.params, grads, strict=True):
            p.grad = g if p.grad is None else p.grad + g
        return loss.item()

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.estimator.loss(model, guide, *args, **kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self.estimator.differentiable_loss(model, guide, *args, **kwargs)

    def _get_trace(self, model, guide, args, kwargs):
        return self.estimator._get_trace(model, guide, args, kwargs)
