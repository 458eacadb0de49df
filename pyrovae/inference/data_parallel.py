"""Data-parallel gradients: one global batch split across the ranks of a process group, the
gradients summed, so every rank makes the update one process would make on the whole batch.

With W ranks and a global batch of B rows, rank r takes its contiguous slice of the batch
(``tensor_split``: ⌈B/W⌉ or ⌊B/W⌋ rows), draws its noise from its own stream and computes the
loss L_r summed over its rows. Each rank then applies

    g = Σ_r ∇L_r,

the gradient of the loss summed over the global batch: a sum, not DDP's default average of the
ranks' gradients, because pyrovae's losses are sums over the batch. DistributedDataParallel
forms it during the backward pass (a communication hook that all-reduces each gradient bucket
without dividing by W). An epoch's last batch may have fewer rows than there are ranks; a rank
without rows has no forward pass to run through DDP, so that step's gradients are summed by one
all-reduce after the backward instead. On the compiled path
(:class:`~pyrovae.inference.compiled.CompiledELBO`) the step itself returns the gradients, so
they are always summed by that one all-reduce.

The W losses are then all-gathered, so every rank holds Σ_r L_r (what the epoch's train ELBO
and the divergence rule read) and the same verdict: a non-finite L_r on any rank stops every
rank before the update, naming the rank.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from pyro.infer import ELBO
from torch.nn.parallel import DistributedDataParallel

from pyrovae.core.distributed import rank, reported_by_root, world_size
from pyrovae.core.errors import PyroVAEError, TrainingDiverged
from pyrovae.inference.compiled import CompiledELBO


def shard(args: tuple[torch.Tensor, ...], r: int, w: int) -> tuple[torch.Tensor, ...]:
    """Rank ``r``'s slice of a global batch (each tensor split alike along dim 0, W parts)."""
    return tuple(t.tensor_split(w)[r] for t in args)


def _sum_buckets(state, bucket):  # no annotations: DDP compares them with its own classes
    """DDP communication hook: Σ_r of each gradient bucket (``dist.GradBucket``) as a future
    (DDP's own hook divides by W)."""
    return (
        dist.all_reduce(bucket.buffer(), group=state, async_op=True)
        .get_future()
        .then(lambda fut: fut.value()[0])
    )


class _Loss(torch.nn.Module):
    """Model and guide as one module, so that DDP sees their parameters; the loss of a batch
    shard under the estimator of the step."""

    def __init__(self, model: torch.nn.Module, guide: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.guide = guide

    def forward(self, estimator: ELBO, *args: torch.Tensor) -> torch.Tensor:
        return estimator.differentiable_loss(self.model, self.guide, *args)


class DataParallel:
    """Model and guide under DistributedDataParallel in the current process group.

    ``sharded(estimator)`` gives an estimator whose ``loss_and_grads`` on a global batch
    computes this rank's shard and leaves Σ_r ∇L_r in every parameter's ``.grad``, so
    :func:`~pyrovae.inference.train.svi_step` trains data-parallel unchanged.
    """

    def __init__(self, model: torch.nn.Module, guide: torch.nn.Module) -> None:
        self.module = _Loss(model, guide)
        self.rank, self.world = rank(), world_size()
        self.named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        if not self.named:
            raise PyroVAEError("model and guide have no trainable parameters")
        # device_ids=None: the module lives on one device (CPU, or this rank's GPU) and the
        # batches are already there; DDP checks the parameters' shapes and copies rank 0's
        self.ddp = DistributedDataParallel(self.module, device_ids=None)
        self.ddp.register_comm_hook(None, _sum_buckets)

    def sharded(self, estimator: ELBO) -> ShardedELBO:
        inner = getattr(estimator, "estimator", estimator)  # a CompiledELBO's wrapped estimator
        if not hasattr(inner, "differentiable_loss"):
            raise reported_by_root(
                PyroVAEError(
                    f"{type(inner).__name__} has no differentiable_loss, which data-parallel "
                    "training needs (DDP sums gradients through the loss's backward)"
                )
            )
        return ShardedELBO(self, estimator)

    def loss_and_grads(self, estimator: ELBO, *args: torch.Tensor) -> list[float]:
        """This rank's shard of the global batch ``args``: its loss's backward, the gradients
        summed over ranks; returns every rank's loss, in rank order."""
        mine = shard(args, self.rank, self.world)
        loss = None
        if isinstance(estimator, CompiledELBO):  # the step gives gradients: one all-reduce
            if mine[0].shape[0] > 0:
                value = estimator.loss_and_grads(self.module.model, self.module.guide, *mine)
                loss = self.named[0][1].new_tensor(value, dtype=torch.float64)
            self._sum_gradients()
        elif args[0].shape[0] >= self.world:
            loss = self.ddp(estimator, *mine)
            loss.backward()
            self._check_gradients()
        else:  # some rank has no rows: no DDP forward there, one all-reduce for all
            if mine[0].shape[0] > 0:
                loss = estimator.differentiable_loss(self.module.model, self.module.guide, *mine)
                loss.backward()
            self._sum_gradients()
        return self._gather(loss)

    def _check_gradients(self) -> None:
        """DDP (without its per-step search for unused parameters, a graph traversal every
        step) sums only parameters that the loss reaches: one it does not reach is an error."""
        missing = [n for n, p in self.named if p.grad is None]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise reported_by_root(
                PyroVAEError(
                    f"no gradient reached {', '.join(missing[:3])}{more}: data-parallel "
                    "training needs every parameter of model and guide in the loss"
                )
            )

    def _sum_gradients(self) -> None:
        params = [p for _, p in self.named]
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        )
        dist.all_reduce(flat)
        for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad = g.view_as(p).to(p.dtype)

    def _gather(self, loss: torch.Tensor | None) -> list[float]:
        p = self.named[0][1]
        mine = loss.detach().reshape(1).double() if loss is not None else p.new_zeros(1).double()
        out = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(out, mine)
        return torch.cat(out).tolist()


class ShardedELBO:
    """``estimator`` over a global batch split across the ranks (see :class:`DataParallel`):
    ``loss_and_grads`` returns Σ_r L_r, the same on every rank, and raises
    :class:`TrainingDiverged`, naming the ranks, when some L_r is not finite."""

    def __init__(self, parallel: DataParallel, estimator: ELBO) -> None:
        self.parallel = parallel
        self.estimator = estimator

    def loss_and_grads(self, model, guide, *args: torch.Tensor) -> float:
        if model is not self.parallel.module.model or guide is not self.parallel.module.guide:
            raise ValueError("a ShardedELBO steps the model and guide its DataParallel wraps")
        losses = self.parallel.loss_and_grads(self.estimator, *args)
        bad = [str(r) for r, loss in enumerate(losses) if not math.isfinite(loss)]
        if bad:
            ranks = f"rank{'s' if len(bad) > 1 else ''} {', '.join(bad)}"
            value = losses[int(bad[0])]
            message = f"loss became {value} on {ranks} (the parameters were not updated)"
            raise reported_by_root(TrainingDiverged(message))
        return sum(losses)
