"""``fit_replicas``: N seeds of one model trained side by side in one process, each the run its
seed gives alone (up to floating-point summation order); their steps batched into one graph
(:class:`~pyrovae.inference.replicas.ReplicaStep`) or taken in turn."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from pyro.infer import ELBO
from tqdm import tqdm

from pyrovae.core.distributed import is_distributed
from pyrovae.core.errors import PyroVAEError, TrainingDiverged
from pyrovae.core.registry import lookup
from pyrovae.core.runtime import get_rng_state, set_rng_state, set_seed
from pyrovae.data.base import TrainingData
from pyrovae.data.batches import num_batches
from pyrovae.inference.beta import LatentScale, beta_schedule
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.divergence import DIVERGENCE_FACTOR, DivergenceGuard
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.evaluate import bits_per_dim, evaluate_elbo
from pyrovae.inference.replicas import ReplicaStep, one_by_one
from pyrovae.inference.report import bar_text, bits_dims, test_figure, train_name
from pyrovae.inference.schedules import LR_SCHEDULES, set_learning_rate
from pyrovae.inference.temperature import Temperature, temperature_schedule
from pyrovae.inference.train import EpochCallback, compile_log


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
    temperature: Callable[[int], float] | None = None,
    divergence_factor: float = DIVERGENCE_FACTOR,
    start_epoch: int = 0,
    streams: list | None = None,
    compile: bool = True,
    compile_mode: str | None = None,
    batched: bool | None = None,
    progress: bool = True,
    epoch_lines: bool | None = None,
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

    ``temperature``: as for ``fit`` (an estimator that relaxes a discrete code); ``progress``
    and ``epoch_lines`` too (one line per epoch: the seeds' mean ± sd).

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
    annealed = getattr(estimator, "annealed", False)  # a relaxed code's τ, as fit anneals it
    tau_at = temperature or temperature_schedule()
    tau = None
    lr_now = [opt.param_groups[0]["lr"] for opt in optimizers]
    if batched is None:
        batched = next(models[0].parameters()).device.type == "cuda"
    log = compile_log(progress)
    lines = progress if epoch_lines is None else epoch_lines
    dims = bits_dims(models[0], data)
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
        totals, seen = [0.0] * n, 0
        for m, g, opt in zip(models, guides, optimizers, strict=True):
            opt.zero_grad(set_to_none=True)
            m.train()
            g.train()
        start = time.perf_counter()
        for i, group in enumerate(zip(*iterators, strict=True)):
            batches = [b if conditional else (b,) for b in group]
            weight = beta_at((epoch - 1) * steps_per_epoch + i)
            tau = tau_at((epoch - 1) * steps_per_epoch + i) if annealed else None
            if schedule is not LR_SCHEDULES["constant"]:
                factor = schedule(epoch - 1, i, steps_per_epoch, epochs)
                lr_now = [set_learning_rate(opt, factor) for opt in optimizers]
            with (
                LatentScale(weight) if scaled else nullcontext(),
                Temperature(tau) if annealed else nullcontext(),
            ):
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
            seen += batches[0][0].shape[0]
            if progress:  # the seeds' mean, before update() draws it
                bar.set_postfix_str(bar_text(objective, sum(totals) / n, seen), refresh=False)
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
            if dims is not None:
                record["test_elbo_bpd"] = bits_per_dim(test["elbo"], dims)
            if annealed:
                record["temperature"] = tau
            histories[r].append(record)
            if on_epoch_end is not None:
                set_rng_state(streams[r])
                on_epoch_end[r](record)
        set_rng_state(rng)
        if lines:
            name, key = test_figure(beta, kl_warmup)
            mean, std = mean_and_std([h[-1][key] for h in histories])
            tqdm.write(
                f"epoch {epoch}/{epochs}, {n} seeds: test {name} {mean:.2f} ± {std:.2f} nats "
                f"(mean ± sd over seeds; {seconds:.1f} s)"
            )
    return histories
