"""Seeds side by side: N independent replicas of one model trained in one process, their steps
batched into one compiled graph.

Replica r is the run of seed s_r: its own parameters, optimizer, data order and noise stream.
Its step is the recorded step of one replica (:func:`~pyrovae.inference.compiled.record_step`)
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

import math
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from pyro.infer import ELBO
from torch import fx
from tqdm import tqdm

from pyrovae.core.distributed import is_distributed
from pyrovae.core.errors import PyroVAEError, TrainingDiverged, first_line
from pyrovae.core.registry import lookup
from pyrovae.core.runtime import get_rng_state, set_rng_state, set_seed
from pyrovae.data.base import TrainingData
from pyrovae.data.batches import num_batches
from pyrovae.inference.beta import LatentScale, beta_schedule
from pyrovae.inference.compiled import (
    CompiledELBO,
    CompileStats,
    Recording,
    compile_backend,
    compile_graph,
    inductor_cache,
    record_step,
)
from pyrovae.inference.divergence import DIVERGENCE_FACTOR, DivergenceGuard
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.evaluate import evaluate_elbo
from pyrovae.inference.report import test_figure, train_name
from pyrovae.inference.schedules import LR_SCHEDULES, set_learning_rate
from pyrovae.inference.train import EpochCallback, compile_log


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

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)
        else:
            print(f"pyrovae: {line}", file=sys.stderr)

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
            return self._one_by_one(step, models, guides, batches, streams)
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
            recordings = [record_step(self.estimator, m, g, batches[0])
                          for m, g in zip(models, guides, strict=True)]
            split = split_noise(recordings[0])
            fn = self._vectorize(split, recordings, batches, streams)
            step = _Batched(fn, split, recordings)
            self._steps[key] = step
            self.stats.graphs += 1
            self.stats.seconds += time.perf_counter() - start
            self._say(
                f"compiled the step of {len(models)} replicas in "
                f"{time.perf_counter() - start:.1f} s ({self.backend})"
            )
            return step
        except Exception as e:  # whatever recording, splitting or compiling raised
            set_rng_state(rng)
            reason = f"{type(e).__name__}: {first_line(str(e)) or '…'}"
        line = f"the replicas step one after another ({reason})"
        self.stats.fallbacks.append(reason)
        self._say(line)
        singles = [
            CompiledELBO(self.estimator, self.backend, self.mode, log=self._say) for _ in models
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
        for r, rec in enumerate(step.recordings):
            for p, g in zip(rec.params, grads, strict=True):
                p.grad = g[r] if p.grad is None else p.grad + g[r]
        return losses.tolist()

    @staticmethod
    def _one_by_one(singles, models, guides, batches, streams) -> list[float]:
        return one_by_one(singles, models, guides, batches, streams)


class _InTurn:
    """Each replica's own compiled step, one after another (``fit_replicas(batched=False)``)."""

    def __init__(self, singles: list[CompiledELBO]) -> None:
        self.singles = singles

    def loss_and_grads(self, models, guides, batches, streams) -> list[float]:
        return one_by_one(self.singles, models, guides, batches, streams)


def _quiet(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` without the compile times (each replica's compile after the first is the same
    graph, Inductor's cache answers it); fallbacks are still said."""
    return lambda line: None if line.startswith("compiled ") else log(line)


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


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """Distinct seeds, at least two (one seed is a plain run)."""
    seeds = list(seeds)
    if len(seeds) < 2:
        raise PyroVAEError(f"--seeds needs at least two seeds, got {seeds}")
    if len(set(seeds)) != len(seeds):
        raise PyroVAEError(f"--seeds must be distinct, got {seeds}")
    return seeds


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (sample, n − 1) standard deviation over replicas; NaN std for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def fit_replicas(
    models: Sequence,
    guides: Sequence,
    data: TrainingData,
    estimator: ELBO | str = "elbo",
    *,
    seeds: Sequence[int],
    epochs: int,
    optimizers: Sequence[torch.optim.Optimizer],
    batch_size: int = 128,
    num_particles: int = 1,
    beta: float = 1.0,
    kl_warmup: int = 0,
    lr_schedule: str = "constant",
    divergence_factor: float = DIVERGENCE_FACTOR,
    start_epoch: int = 0,
    streams: list | None = None,
    compile: bool = True,
    compile_mode: str | None = None,
    batched: bool | None = None,
    progress: bool = True,
    on_epoch_end: Sequence[EpochCallback] | None = None,
) -> list[list[dict[str, Any]]]:
    """:func:`~pyrovae.inference.train.fit` for replicas r = 1…N side by side: ``models[r]``,
    ``guides[r]`` and ``optimizers[r]`` trained on ``data`` with seed ``seeds[r]`` (its data
    order, binarization and noise stream). Each replica follows the run ``fit`` makes with its
    seed alone, up to floating-point summation order.

    ``batched``: every step of all replicas one vectorized graph (:class:`ReplicaStep`), or
    each replica's compiled step in turn (the same as each run alone, in one process). By
    default batched on a GPU, where N small models in one graph fill the device, and in turn on
    the CPU, where the batched matrix products measured slower than N separate ones (see
    BENCHMARKS.md). ``compile=False``, and a short last batch: each replica's eager step in turn.

    ``streams``: each replica's generator state when resuming (``start_epoch`` > 0); a fresh
    start seeds replica r's stream with ``seeds[r]`` as ``fit`` does. While
    ``on_epoch_end[r]`` runs, the global generators hold replica r's stream (a checkpoint saves
    it). A replica whose loss is not finite or blows up stops every replica, naming its seed.
    Returns each replica's per-epoch records (those of ``fit``).
    """
    seeds = check_seeds(seeds)
    n = len(seeds)
    if not (len(models) == len(guides) == len(optimizers) == n):
        raise PyroVAEError("fit_replicas needs one model, guide and optimizer per seed")
    if isinstance(estimator, str):
        estimator = make_estimator(estimator, num_particles)
    if is_distributed():
        raise PyroVAEError("seeds side by side run in one process; drop torchrun or --seeds")
    if batch_size < 1:
        raise PyroVAEError(f"--batch-size must be at least 1, got {batch_size}")
    schedule = lookup(LR_SCHEDULES, lr_schedule, "learning-rate schedule")
    if streams is None:
        streams = []
        for seed in seeds:
            set_seed(seed)
            streams.append(get_rng_state())
    streams = list(streams)
    conditional = getattr(models[0], "num_classes", 0) > 0
    test_y = data.test_y if conditional else None
    steps_per_epoch = num_batches(data.num_train, batch_size)
    beta_at = beta_schedule(beta, kl_warmup)
    scaled = beta != 1.0 or kl_warmup > 0
    lr_now = [opt.param_groups[0]["lr"] for opt in optimizers]
    if batched is None:
        batched = next(models[0].parameters()).device.type == "cuda"
    log = compile_log(progress)
    step: ReplicaStep | _InTurn | None = None
    if compile:
        step = ReplicaStep(estimator, mode=compile_mode, log=log) if batched else _InTurn(
            [CompiledELBO(estimator, mode=compile_mode, log=log if r == 0 else _quiet(log))
             for r in range(n)]
        )
    guards = [DivergenceGuard(divergence_factor) for _ in seeds]
    histories: list[list[dict[str, Any]]] = [[] for _ in seeds]
    objective = train_name(estimator, beta, kl_warmup)
    for epoch in range(start_epoch + 1, epochs + 1):
        iterators = [data.train_batches(s, epoch, batch_size, labels=conditional) for s in seeds]
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs} ({n} seeds)",
                   disable=not progress, leave=False, dynamic_ncols=True)
        totals = [0.0] * n
        for m, g, opt in zip(models, guides, optimizers, strict=True):
            opt.zero_grad(set_to_none=True)
            m.train()
            g.train()
        start = time.perf_counter()
        for i, group in enumerate(zip(*iterators, strict=True)):
            batches = [b if conditional else (b,) for b in group]
            weight = beta_at((epoch - 1) * steps_per_epoch + i)
            if schedule is not LR_SCHEDULES["constant"]:
                factor = schedule(epoch - 1, i, steps_per_epoch, epochs)
                lr_now = [set_learning_rate(opt, factor) for opt in optimizers]
            with LatentScale(weight) if scaled else nullcontext():
                if step is not None and batches[0][0].shape[0] == batch_size:
                    losses = step.loss_and_grads(models, guides, batches, streams)
                else:
                    losses = one_by_one([estimator] * n, models, guides, batches, streams)
            for r, loss in enumerate(losses):
                try:
                    if not math.isfinite(loss):
                        raise TrainingDiverged(f"loss became {loss}")
                    guards[r].check(loss / batches[r][0].shape[0])
                except TrainingDiverged as e:
                    bar.close()
                    raise TrainingDiverged(
                        f"seed {seeds[r]}: epoch {epoch}, step {i + 1}: {e} (the parameters of "
                        "every seed were not updated)"
                    ) from None
            for r, opt in enumerate(optimizers):
                opt.step()
                opt.zero_grad(set_to_none=True)
                totals[r] += losses[r]
            if progress and i % 20 == 0:
                bar.set_postfix_str(f"{objective} {-sum(totals) / n / ((i + 1) * batch_size):.2f}",
                                    refresh=False)
            bar.update()
        seconds = time.perf_counter() - start
        bar.close()
        rng = get_rng_state()
        for r in range(n):
            test = evaluate_elbo(models[r], guides[r], data.test_x, test_y)
            if not math.isfinite(test["elbo"]):
                raise TrainingDiverged(
                    f"seed {seeds[r]}: epoch {epoch}: the test ELBO is {test['elbo']} (the epoch "
                    "is not checkpointed)"
                )
            record = {
                "epoch": epoch,
                "train_elbo": -totals[r] / data.num_train,
                "test_elbo": test["elbo"],
                "test_recon": test["recon"],
                "test_kl": test["kl"],
                "beta": weight,
                "lr": lr_now[r],
                "seconds": seconds,  # the whole side-by-side step time of the epoch
            }
            histories[r].append(record)
            if on_epoch_end is not None:
                set_rng_state(streams[r])
                on_epoch_end[r](record)
        set_rng_state(rng)
        if progress:
            name, key = test_figure(beta, kl_warmup)
            mean, std = mean_and_std([h[-1][key] for h in histories])
            tqdm.write(
                f"epoch {epoch}/{epochs}, {n} seeds: test {name} {mean:.2f} ± {std:.2f} nats "
                f"(mean ± sd over seeds; {seconds:.1f} s)"
            )
    return histories
