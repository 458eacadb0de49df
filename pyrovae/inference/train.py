"""Stochastic variational inference: ``fit`` maximizes an ELBO estimator over (model, guide)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

import torch
from pyro.infer import ELBO
from tqdm import tqdm  # text bars: tqdm.auto warns in a notebook without ipywidgets

from pyrovae.core.errors import PyroVAEError, TrainingDiverged
from pyrovae.core.runtime import set_seed
from pyrovae.data.base import TrainingData
from pyrovae.data.batches import num_batches
from pyrovae.inference.beta import LatentScale, beta_schedule
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.evaluate import evaluate_elbo
from pyrovae.inference.jit import JitELBO

EpochCallback = Callable[[dict[str, Any]], None]


def svi_step(
    estimator: ELBO, model, guide, optimizer: torch.optim.Optimizer, *args: torch.Tensor
) -> float:
    """One SVI step on model/guide arguments ``args`` (x, or x and y): the estimator's
    ``loss_and_grads`` (the surrogate's backward), then the optimizer.

    Returns the loss summed over the batch. A non-finite loss raises before the update, so the
    parameters keep their last good values.
    """
    loss = estimator.loss_and_grads(model, guide, *args)
    if not math.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"loss became {loss} (the parameters were not updated)")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def make_optimizer(modules: Iterable[torch.nn.Module], lr: float) -> torch.optim.Adam:
    """Adam over the parameters of model and guide (they live in the modules, not Pyro's store);
    a parameter shared by both (a VampPrior's encoder) is optimized once.

    Adam's fused kernel (one pass per parameter instead of a dozen, same update up to
    floating-point rounding) where torch has one for the parameters' device and dtype.
    """
    if not (math.isfinite(lr) and lr > 0):
        raise PyroVAEError(f"--lr must be a positive number, got {lr}")
    params = list({id(p): p for m in modules for p in m.parameters()}.values())
    return torch.optim.Adam(params, lr=lr, fused=_fused_adam_supported(params))


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
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    jit: bool = True,
    progress: bool = True,
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
    ``jit``: replay the loss graph recorded once per batch shape
    (:class:`~pyrovae.inference.jit.JitELBO`: same loss, same gradients, none of the per-step
    Python of Pyro's handlers); ``False`` runs the handlers every step, as a model whose control
    flow depends on the data needs. The steps of a KL warm-up, whose β changes every step, run
    plainly.

    Returns one record per epoch: ``train_elbo`` (mean of the per-step estimates while training)
    and ``test_elbo``, ``test_recon``, ``test_kl`` (see :func:`evaluate_elbo`), per datapoint in
    nats, and the epoch's wall time ``seconds`` (training steps only).
    """
    if isinstance(estimator, str):
        estimator = make_estimator(estimator, num_particles)
    if batch_size < 1:
        raise PyroVAEError(f"--batch-size must be at least 1, got {batch_size}")
    if optimizer is None:
        optimizer = make_optimizer((model, guide), lr)
    if start_epoch == 0:
        set_seed(seed)
    n = data.num_train
    conditional = getattr(model, "num_classes", 0) > 0
    test_y = data.test_y if conditional else None
    steps_per_epoch = num_batches(n, batch_size)
    beta_at = beta_schedule(beta, kl_warmup)
    scaled = beta != 1.0 or kl_warmup > 0
    fast = JitELBO(estimator) if jit else estimator
    history = []
    for epoch in range(start_epoch + 1, epochs + 1):
        batches = data.train_batches(seed, epoch, batch_size, labels=conditional)
        bar = tqdm(
            total=num_batches(n, batch_size),
            desc=f"epoch {epoch}/{epochs}",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        total, seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        model.train()
        guide.train()
        start = time.perf_counter()
        for step, batch in enumerate(batches):
            args = batch if conditional else (batch,)
            weight = beta_at((epoch - 1) * steps_per_epoch + step)
            step_estimator = fast if weight == beta else estimator  # β fixed: one graph
            try:
                with LatentScale(weight) if scaled else nullcontext():
                    total += svi_step(step_estimator, model, guide, optimizer, *args)
            except TrainingDiverged as e:
                bar.close()
                raise TrainingDiverged(f"epoch {epoch}, step {step + 1}: {e}") from None
            seen += args[0].shape[0]
            if progress and (step % 20 == 0):
                bar.set_postfix_str(f"elbo {-total / seen:.2f}", refresh=False)
            bar.update()
        seconds = time.perf_counter() - start
        bar.close()
        test = evaluate_elbo(model, guide, data.test_x, test_y)
        record = {
            "epoch": epoch,
            "train_elbo": -total / n,
            "test_elbo": test["elbo"],
            "test_recon": test["recon"],
            "test_kl": test["kl"],
            "beta": weight,
            "seconds": seconds,
        }
        history.append(record)
        if progress:
            tqdm.write(
                f"epoch {epoch}/{epochs}: train ELBO {record['train_elbo']:.2f}, "
                f"test ELBO {record['test_elbo']:.2f} nats ({seconds:.1f} s)"
            )
        if on_epoch_end is not None:
            on_epoch_end(record)
    return history
