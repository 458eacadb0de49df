"""One step of N independent replicas of one model (seeds side by side, trained by
:func:`~pyrovae.inference.side_by_side.fit_replicas`) batched into one compiled graph.

Replica r is the run of seed s_r: its own parameters, optimizer, data order and noise stream.
Its step is the recorded step of one replica (:func:`~pyrovae.inference.recording.record_step`)
with the random draws taken out of the graph: the draws of every replica are made first, each
from its own generator state, exactly as its lone run would make them (same operations, same
order), and the graph, now a function of (θ, φ, buffers, scales, x, ε), is vectorized over
replicas with ``torch.func.vmap`` and compiled. So each replica sees its own batch and its own
noise, and its losses and gradients equal its lone run's up to floating-point summation order
(batched matrix products add in another order).

A graph whose random draws depend on its inputs (none of pyrovae's estimators: their draws are
standard normals of a fixed shape) cannot be split so; its replicas then step one after another
(each a compiled step under its own generator state), as one line says.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
from pyro.infer import ELBO
from torch import fx

from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.modules import buffers_kept
from pyrovae.core.runtime import get_rng_state, set_rng_state
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.recording import (
    CompileStats,
    Recording,
    compile_backend,
    compile_graph,
    inductor_cache,
    record_step,
    say,
)


def _is_random(node: fx.Node) -> bool:
    tags = getattr(node.target, "tags", ())
    return node.op == "call_function" and torch.Tag.nondeterministic_seeded in tags


def _depends_on_inputs(node: fx.Node) -> bool:
    """Whether ``node`` reads, through any chain of operations, an input of the graph."""
    seen, todo = set(), list(node.all_input_nodes)
    while todo:
        n = todo.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "placeholder":
            return True
        todo.extend(n.all_input_nodes)
    return False


@dataclass
class NoiseSplit:
    """A recorded step with its random draws as inputs: ``graph(*inputs, *noise)`` equals the
    recording on ``inputs`` when ``noise`` is what :meth:`draw` returns from the same generator
    state."""

    graph: fx.GraphModule
    draws: list[tuple[Callable, tuple, dict]]  # each draw: its operation and constant arguments
    sources: list[list[tuple[Callable, tuple, dict]]]  # the operations that make its input

    def draw(self) -> list[torch.Tensor]:
        """Every random tensor of one step, in the recording's order, from the global
        generator."""
        out = []
        for (op, args, kwargs), chain in zip(self.draws, self.sources, strict=True):
            value = None
            for src_op, src_args, src_kwargs in chain:
                value = src_op(*src_args, **src_kwargs)
            out.append(op(value, *args, **kwargs) if value is not None else op(*args, **kwargs))
        return out


def split_noise(rec: Recording) -> NoiseSplit:
    """Take the random draws out of ``rec``'s graph (see the module docstring); a draw that
    depends on the graph's inputs is a :class:`PyroVAEError`."""
    gm = fx.GraphModule(rec.graph, rec.graph.graph.__deepcopy__())
    graph = gm.graph
    randoms = [n for n in graph.nodes if _is_random(n)]
    last_input = [n for n in graph.nodes if n.op == "placeholder"][-1]
    draws, sources, dead = [], [], []
    for i, node in enumerate(randoms):
        if _depends_on_inputs(node):
            raise PyroVAEError(f"the random draw {node.target} depends on the step's inputs")
        if any(isinstance(a, fx.Node) for a in node.args[1:]) or any(
            isinstance(v, fx.Node) for v in node.kwargs.values()
        ):
            raise PyroVAEError(f"the random draw {node.target} takes computed arguments")
        chain = []
        if node.args and isinstance(node.args[0], fx.Node):  # an in-place draw into a tensor
            src = node.args[0]
            if src.op != "call_function" or src.all_input_nodes or len(src.users) != 1:
                raise PyroVAEError(f"the random draw {node.target} fills a computed tensor")
            chain.append((src.target, src.args, src.kwargs))
            dead.append(src)
            draws.append((node.target, node.args[1:], node.kwargs))
        else:
            draws.append((node.target, node.args, node.kwargs))
        sources.append(chain)
        with graph.inserting_after(last_input):
            new = graph.placeholder(f"noise_{i}")
        last_input = new
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    for src in dead:
        graph.erase_node(src)
    graph.lint()
    gm.recompile()
    return NoiseSplit(gm, draws, sources)


@dataclass
class _Batched:
    fn: Callable[..., Sequence[torch.Tensor]]
    split: NoiseSplit
    recordings: list[Recording]


class ReplicaStep:
    """One step of N replicas (lists of models and guides of one architecture): losses and
    gradients of all in one vectorized, compiled graph, each replica under its own generator
    state (``streams``, advanced as its lone run's would be)."""

    def __init__(
        self,
        estimator: ELBO,
        backend: str | None = None,
        mode: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.estimator = estimator
        self.backend = backend or compile_backend()
        self.mode = mode
        self.log = log
        self.stats = CompileStats()
        self._steps: dict[Hashable, _Batched | list[CompiledELBO]] = {}

    def loss_and_grads(
        self, models: Sequence, guides: Sequence, batches: Sequence[tuple], streams: list
    ) -> list[float]:
        """Each replica's loss (a float, summed over its batch), its gradient accumulated into
        its parameters' ``.grad``; ``streams[r]`` (a generator state) advanced in place."""
        key = (tuple(a.shape for a in batches[0]), models[0].training, guides[0].training)
        step = self._steps.get(key)
        if step is None:
            step = self._build(key, models, guides, batches, streams)
        if isinstance(step, list):  # one compiled step per replica, one after another
            return one_by_one(step, models, guides, batches, streams)
        return self._run(step, batches, streams)

    def _build(self, key, models, guides, batches, streams):
        """Warm up (eagerly, draws discarded), record replica 0's step, split its noise out,
        vectorize and compile; a step that cannot be split runs replica by replica."""
        rng = get_rng_state()
        set_rng_state(streams[0])
        try:
            with torch.no_grad():  # the model's own errors surface here, as eagerly
                for m, g, args in zip(models, guides, batches, strict=True):
                    self.estimator.differentiable_loss(m, g, *args)
        finally:
            set_rng_state(rng)
        start = time.perf_counter()
        try:
            with buffers_kept((*models, *guides)):  # recording runs the step on them too
                recordings = [record_step(self.estimator, m, g, batches[0])
                              for m, g in zip(models, guides, strict=True)]
            split = split_noise(recordings[0])
            fn = self._vectorize(split, recordings, batches, streams)
            step = _Batched(fn, split, recordings)
            self._steps[key] = step
            self.stats.graphs += 1
            self.stats.seconds += time.perf_counter() - start
            say(self.log,
                f"compiled the step of {len(models)} replicas in "
                f"{time.perf_counter() - start:.1f} s ({self.backend})"
            )
            return step
        except Exception as e:  # whatever recording, splitting or compiling raised
            set_rng_state(rng)
            reason = f"{type(e).__name__}: {first_line(str(e)) or '…'}"
        line = f"the replicas step one after another ({reason})"
        self.stats.fallbacks.append(reason)
        say(self.log, line)
        singles = [
            CompiledELBO(self.estimator, self.backend, self.mode, log=self.log) for _ in models
        ]
        self._steps[key] = singles
        return singles

    def _vectorize(self, split: NoiseSplit, recordings, batches, streams) -> Callable:
        """vmap over replicas of the split graph, recorded once more (``make_fx``) into a
        batched graph of its own and compiled; run once here so that compiling happens now."""
        from torch.fx.experimental.proxy_tensor import make_fx

        n_lead = len(recordings[0].inputs())
        n_scales = n_lead - len(recordings[0].params) - len(recordings[0].buffers)
        n_params = len(recordings[0].params) + len(recordings[0].buffers)
        n_args = len(batches[0])
        in_dims = (0,) * n_params + (None,) * n_scales + (0,) * (n_args + len(split.draws))
        batched = torch.func.vmap(split.graph, in_dims=in_dims)
        example = self._inputs(split, recordings, batches, [get_rng_state() for _ in batches])
        with torch.no_grad():
            graph = make_fx(batched)(*example)
        compiled = compile_graph(graph, self.backend, self.mode)
        with torch.no_grad(), inductor_cache():
            compiled(*example)  # compile now, on inputs of the right shapes
        return compiled

    @staticmethod
    def _inputs(split: NoiseSplit, recordings, batches, streams) -> list[torch.Tensor]:
        """The batched graph's inputs: stacked parameters and buffers, the scales, stacked
        batches, and every replica's noise drawn from its own stream (advanced in place)."""
        rng = get_rng_state()
        noise = []
        for r in range(len(recordings)):
            set_rng_state(streams[r])
            noise.append(split.draw())
            streams[r] = get_rng_state()
        set_rng_state(rng)
        leads = [rec.inputs() for rec in recordings]
        n_stacked = len(recordings[0].params) + len(recordings[0].buffers)
        stacked = [torch.stack(xs) for xs in list(zip(*leads, strict=True))[:n_stacked]]
        scales = leads[0][n_stacked:]
        args = [torch.stack(xs) for xs in zip(*batches, strict=True)]
        eps = [torch.stack(xs) for xs in zip(*noise, strict=True)]
        return [*stacked, *scales, *args, *eps]

    def _run(self, step: _Batched, batches, streams) -> list[float]:
        inputs = self._inputs(step.split, step.recordings, batches, streams)
        with torch.no_grad():
            losses, *grads = step.fn(*inputs)
        n_params = len(step.recordings[0].params)
        buffers = inputs[n_params : n_params + len(step.recordings[0].buffers)]
        for r, rec in enumerate(step.recordings):
            for p, g in zip(rec.params, grads, strict=True):
                p.grad = g[r] if p.grad is None else p.grad + g[r]
            with torch.no_grad():  # what the step updated in place (NVIL's running average)
                for b, stacked in zip(rec.buffers, buffers, strict=True):
                    b.copy_(stacked[r])
        return losses.tolist()


def one_by_one(estimators, models, guides, batches, streams) -> list[float]:
    """Replica r's ``loss_and_grads`` with ``estimators[r]`` under its generator state
    ``streams[r]`` (advanced in place), one replica after another."""
    rng = get_rng_state()
    losses = []
    for r, (est, m, g, args) in enumerate(zip(estimators, models, guides, batches, strict=True)):
        set_rng_state(streams[r])
        losses.append(est.loss_and_grads(m, g, *args))
        streams[r] = get_rng_state()
    set_rng_state(rng)
    return losses
