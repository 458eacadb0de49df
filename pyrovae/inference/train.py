"""Stochastic variational inference: ``fit`` maximizes an ELBO estimator over (model, guide)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
from pyro.infer import ELBO
from tqdm import tqdm  # text bars: tqdm.auto warns in a notebook without ipywidgets

from pyrovae.core.distributed import (
    check_batch_size,
    from_root,
    is_distributed,
    is_root,
    rank,
    rank_seed,
    reported_by_root,
)
from pyrovae.core.errors import PyroVAEError, TrainingDiverged
from pyrovae.core.labels import takes_labels
from pyrovae.core.registry import lookup
from pyrovae.core.runtime import set_seed
from pyrovae.data.base import TrainingData
from pyrovae.data.batches import num_batches
from pyrovae.inference.beta import LatentScale, beta_schedule
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.data_parallel import DataParallel
from pyrovae.inference.divergence import DIVERGENCE_FACTOR, DivergenceGuard
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.evaluate import bits_per_dim, evaluate_elbo
from pyrovae.inference.report import bar_text, bits_dims, epoch_line, train_name
from pyrovae.inference.schedules import LR_SCHEDULES, set_learning_rate
from pyrovae.inference.semi_supervised import classification_accuracy
from pyrovae.inference.temperature import Temperature, temperature_schedule

EpochCallback = Callable[[dict[str, Any]], None]


def svi_step(
    estimator: ELBO,
    model,
    guide,
    optimizer: torch.optim.Optimizer,
    *args: torch.Tensor,
    guard: DivergenceGuard | None = None,
) -> float:
    """One SVI step on model/guide arguments ``args`` (x, or x and y): the estimator's
    ``loss_and_grads`` (the surrogate's backward), then the optimizer.

    Returns the loss summed over the batch. A non-finite loss, or one that ``guard`` finds blown
    up, raises before the update, so the parameters keep their last good values.
    """
    try:
        loss = estimator.loss_and_grads(model, guide, *args)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss became {loss} (the parameters were not updated)")
        if guard is not None:
            guard.check(loss / args[0].shape[0])
    except TrainingDiverged:
        optimizer.zero_grad(set_to_none=True)
        raise
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def make_optimizer(
    modules: Iterable[torch.nn.Module],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.Adam:
    """Adam over the parameters of model and guide (they live in the modules, not Pyro's store);
    a parameter shared by both (a VampPrior's encoder) is optimized once. ``betas`` = (β₁, β₂),
    the decay rates of the moment estimates; ``eps`` is added to √v̂ (Burda et al. 2015: 1e-4).

    Adam's fused kernel (one pass per parameter instead of a dozen, same update up to
    floating-point rounding) where torch has one for the parameters' device and dtype.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise PyroVAEError(f"--lr must be a positive number, got {lr}")
    params = list({id(p): p for m in modules for p in m.parameters()}.values())
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise PyroVAEError(f"--adam-betas needs two numbers in [0, 1), got {tuple(betas)}")
    if not (math.isfinite(eps) and eps > 0):
        raise PyroVAEError(f"--adam-eps must be a positive number, got {eps}")
    return torch.optim.Adam(
        params, lr=lr, betas=tuple(betas), eps=eps, fused=_fused_adam_supported(params)
    )


def _fused_adam_supported(params: list[torch.nn.Parameter]) -> bool:
    return bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.dtype in FUSED_DTYPES for p in params
    )


FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fit(
    model,
    guide,
    data: TrainingData,
    estimator: ELBO | str = "elbo",
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    num_particles: int = 1,
    seed: int = 0,
    beta: float = 1.0,
    kl_warmup: int = 0,
    lr_schedule: str = "constant",
    temperature: Callable[[int], float] | None = None,
    divergence_factor: float = DIVERGENCE_FACTOR,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    compile: bool = True,
    compile_mode: str | None = None,
    progress: bool = True,
    epoch_lines: bool | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Train ``model``/``guide`` on ``data``'s training images for epochs ``start_epoch+1 …
    epochs`` (device-resident or streamed: the same batches either way).

    ``estimator`` is a registry name (built with ``num_particles``) or any object with Pyro's
    ELBO contract. With ``start_epoch == 0`` the global RNGs are seeded with ``seed``; when
    resuming, the caller restores them. Each epoch's shuffle and binarization come from
    generators seeded by (seed, epoch), so a resumed run draws the same batches.
    ``beta``/``kl_warmup``: the KL weight β (linearly warmed up over that many steps), applied as
    a scale on site ``"z"``. A model with ``num_classes`` > 0 is conditional: it gets the labels.
    ``compile``: run each step as one compiled graph of loss and gradient, recorded once per
    batch shape (:class:`~pyrovae.inference.compiled.CompiledELBO`: same noise, same loss and
    gradients, none of the per-step Python of Pyro's handlers; the first step of each shape runs
    eagerly, the compile time is reported once, and a step that cannot be compiled runs eagerly
    with one line saying why). ``False`` runs the handlers every step, as a model whose control
    flow depends on the data needs. ``compile_mode``: ``torch.compile``'s mode (e.g.
    ``"reduce-overhead"``: CUDA graphs on a GPU). A KL warm-up's β is an input of the graph.
    A short last batch (one step an epoch, not worth its own compile) runs eagerly.
    ``temperature``: global step ↦ τ, for an estimator that relaxes a discrete code
    (``annealed``: gumbel-softmax, straight-through); default Jang et al.'s
    :func:`~pyrovae.inference.temperature.temperature_schedule`. Each step runs inside a
    :class:`~pyrovae.inference.temperature.Temperature` (an input of the compiled graph, like
    β), and the record holds the epoch's last ``temperature``.
    ``lr_schedule``: a name in :data:`~pyrovae.inference.schedules.LR_SCHEDULES`,
    applied to the optimizer's initial learning rate at every step (a function of epoch and step
    only, so resuming follows it exactly). ``divergence_factor``: stop a run whose loss has
    blown up without becoming NaN (:mod:`~pyrovae.inference.divergence`; 0: only NaN stops it).
    A NaN or infinite test ELBO stops it too. Stopping raises :class:`TrainingDiverged` before
    the bad update and before ``on_epoch_end``, so the last checkpoint is the last good one.

    Called in every process of an initialized ``torch.distributed`` process group, with the
    same data and a model and guide on each process's device, ``fit`` trains data-parallel
    (:mod:`~pyrovae.inference.data_parallel`): ``batch_size`` stays the global batch, every rank
    draws the same shuffle and binarization and takes its slice of each batch, its noise comes
    from a stream seeded by (``seed``, rank) (:func:`~pyrovae.core.distributed.rank_seed`; rank
    0's is ``seed``'s own), and the gradients are summed over ranks, so the update is the one a
    single process makes on the whole batch with those draws. The test ELBO is computed on rank
    0 and sent to all; every rank returns the same records (but ``seconds``, its own clock) and
    calls ``on_epoch_end``; a non-finite loss on any rank stops every rank.

    What it prints (rank 0 only): ``progress``, a bar over each epoch's steps (on standard
    error) showing the epoch's running mean of the training objective, as fresh as the bar is
    drawn (the steps' losses are floats already: no device sync is added), and the compile
    time; ``epoch_lines``, one line per epoch on standard output
    (:func:`~pyrovae.inference.report.epoch_line`). ``epoch_lines`` defaults to ``progress``,
    so ``progress=False`` alone trains silently, as before; ``progress=False,
    epoch_lines=True`` drops only the bar (the CLI's ``--no-progress``).

    Returns one record per epoch: ``train_elbo`` (mean of the per-step estimates while training)
    and ``test_elbo``, ``test_recon``, ``test_kl`` (see :func:`evaluate_elbo`), per datapoint in
    nats, ``beta`` and ``lr`` at the epoch's last step, and the epoch's wall time ``seconds``
    (training steps only). On 8-bit data (a pixel mode of many levels) ``test_elbo_bpd`` is
    the test ELBO in bits per dimension, −ELBO / (D ln 2), as ``evaluate`` computes it. A guide
    with a classifier q(y|x) (``classify``: M2's) adds ``test_accuracy``, the share of test
    images whose most probable class is their label.
    Batches are the model/guide arguments as the data hands them out: x, (x, y), or M2's
    (x_u, x_l, y_l) (:class:`~pyrovae.data.labelled.SemiSupervisedData`).
    """
    if isinstance(estimator, str):
        estimator = make_estimator(estimator, num_particles)
    if batch_size < 1:
        raise PyroVAEError(f"--batch-size must be at least 1, got {batch_size}")
    schedule = lookup(LR_SCHEDULES, lr_schedule, "learning-rate schedule")
    if optimizer is None:
        optimizer = make_optimizer((model, guide), lr)
    check_batch_size(batch_size)
    if start_epoch == 0:
        set_seed(rank_seed(seed, rank()))
    n = data.num_train
    conditional = takes_labels(model)
    test_y = data.test_y if conditional else None
    classifies = hasattr(guide, "classify")  # q(y|x): M2's guide
    steps_per_epoch = num_batches(n, batch_size)
    beta_at = beta_schedule(beta, kl_warmup)
    scaled = beta != 1.0 or kl_warmup > 0
    annealed = getattr(estimator, "annealed", False)
    tau_at = temperature or temperature_schedule()
    tau = None
    scheduled = schedule is not LR_SCHEDULES["constant"]
    lr_now = optimizer.param_groups[0]["lr"]
    show = progress and is_root()
    lines = (progress if epoch_lines is None else epoch_lines) and is_root()
    dims = bits_dims(model, data)  # None: no bits per dimension for this data
    fast = CompiledELBO(estimator, mode=compile_mode, log=compile_log(show)) if compile else None
    plain = estimator
    if is_distributed():
        parallel = DataParallel(model, guide)
        plain = parallel.sharded(plain)
        fast = parallel.sharded(fast) if fast is not None else None
    guard = DivergenceGuard(divergence_factor)
    objective = train_name(estimator, beta, kl_warmup)  # what train_elbo is, by name
    history = []
    for epoch in range(start_epoch + 1, epochs + 1):
        batches = data.train_batches(seed, epoch, batch_size, labels=conditional)
        bar = tqdm(
            total=num_batches(n, batch_size),
            desc=f"epoch {epoch}/{epochs}",
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        total, seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        model.train()
        guide.train()
        start = time.perf_counter()
        for step, batch in enumerate(batches):
            args = batch if isinstance(batch, tuple) else (batch,)  # (x,), (x, y), …
            global_step = (epoch - 1) * steps_per_epoch + step
            weight = beta_at(global_step)
            tau = tau_at(global_step) if annealed else None
            if scheduled:
                factor = schedule(epoch - 1, step, steps_per_epoch, epochs)
                lr_now = set_learning_rate(optimizer, factor)
            try:
                with (
                    LatentScale(weight) if scaled else nullcontext(),
                    Temperature(tau) if annealed else nullcontext(),
                ):
                    # a short last batch (one step an epoch) is not worth a compile of its own
                    full = fast is not None and args[0].shape[0] == batch_size
                    step_estimator = fast if full else plain
                    total += svi_step(step_estimator, model, guide, optimizer, *args, guard=guard)
            except TrainingDiverged as e:
                bar.close()
                error = TrainingDiverged(f"epoch {epoch}, step {step + 1}: {e}")
                raise reported_by_root(error) from None  # every rank stops alike
            seen += args[0].shape[0]
            if show:  # before update(), which draws the bar when it is due: never stale
                bar.set_postfix_str(bar_text(objective, total, seen), refresh=False)
            bar.update()
        seconds = time.perf_counter() - start
        bar.close()
        test = from_root(lambda: evaluate_elbo(model, guide, data.test_x, test_y))
        if not math.isfinite(test["elbo"]):
            error = TrainingDiverged(
                f"epoch {epoch}: the test ELBO is {test['elbo']} (the epoch is not checkpointed)"
            )
            raise reported_by_root(error)
        record = {
            "epoch": epoch,
            "train_elbo": -total / n,
            "test_elbo": test["elbo"],
            "test_recon": test["recon"],
            "test_kl": test["kl"],
            "beta": weight,
            "lr": lr_now,
            "seconds": seconds,
        }
        if dims is not None:
            record["test_elbo_bpd"] = bits_per_dim(test["elbo"], dims)
        if classifies:
            record["test_accuracy"] = from_root(
                lambda: classification_accuracy(guide, data.test_x, data.test_y)
            )
        if annealed:
            record["temperature"] = tau
        history.append(record)
        if lines:
            tqdm.write(epoch_line(record, epochs, estimator, beta, kl_warmup))
        if on_epoch_end is not None:
            on_epoch_end(record)
    return history


def compile_log(show: bool) -> Callable[[str], None]:
    """Where the compiled path reports: above the bar while it shows; else only a fallback
    (never silent), on standard error, and no compile times."""

    def log(line: str) -> None:
        if show:
            tqdm.write(line)
        elif not line.startswith("compiled ") and is_root():
            print(f"pyrovae: {line}", file=sys.stderr)

    return log
