"""The compiled fast path: a training step recorded once per input signature and compiled with
``torch.compile``, none of Pyro's per-step Python.

Each plain step re-runs the model and guide under Pyro's effect handlers (messengers, traces,
site bookkeeping): a fixed Python cost of milliseconds per step, and a loss built from many
small kernels. :class:`CompiledELBO` records, once per signature, the whole step

    (θ, φ, buffers, scales, args) ↦ (loss, ∇_θ,φ loss)

as one graph of tensor operations (:func:`~pyrovae.inference.recording.record_step`): ``make_fx``
runs the estimator's ``differentiable_loss`` and ``torch.autograd.grad`` of it on the real
tensors and keeps what they did, forward *and* backward, so every stop-gradient (STL's φ̄,
DReG's reweighting hook, the score function's detached z) is already resolved into explicit
operations. ``torch.compile`` then
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
  a resumed run is the same run. Buffers that the step updates in place (NVIL's running
  average) are put back after recording too, and the graph's own in-place update then makes
  the step's.
- **Scales and temperatures as inputs.** The scales of enclosing handlers (a β on the latent
  sites, warmed up step by step) and the temperature of a relaxed discrete code (annealed,
  :mod:`~pyrovae.inference.temperature`) are tensor inputs, so a KL warm-up or an annealed τ
  reuses one graph and never goes stale.
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

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from pyro.infer import ELBO
from pyro.poutine.runtime import _PYRO_STACK

from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.modules import buffers_kept
from pyrovae.core.runtime import get_rng_state, set_rng_state
from pyrovae.inference.recording import (
    CompileStats,
    _signature,
    compile_backend,
    compile_graph,
    inductor_cache,
    record_step,
    say,
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
                with buffers_kept((model, guide)):  # recording runs the step on them too
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
                say(self.log, f"compiled the training step in {seconds:.1f} s ({self.backend})")
                return self._apply(step, outputs)
        line = f"the training step runs eagerly ({reason})"
        self._steps[key] = line
        self.stats.fallbacks.append(reason)
        say(self.log, line)
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
