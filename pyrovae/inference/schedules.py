"""Learning-rate schedules: lr_t = lr₀ · f(t), f a pure function of where training is.

Because f depends only on (epoch, step) and the run's length, a resumed run follows exactly the
schedule of an uninterrupted one, across stage boundaries too: there is no scheduler state to
checkpoint. lr₀ is each parameter group's ``initial_lr`` (set once, kept in Adam's state dict).

- ``constant``: f = 1.
- ``burda`` (Burda et al. 2015): stage i = 0, 1, … lasts 3^i epochs at f = 10^(−i/7); N stages
  take (3^N − 1)/2 epochs (8 stages: 3280).
- ``cosine``: f = ½ (1 + cos(π t / T)) over the run's T = epochs × steps_per_epoch steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# (epoch index from 0, step within the epoch, steps per epoch, total epochs) ↦ factor
Schedule = Callable[[int, int, int, int], float]


def burda_stage(epoch: int) -> int:
    """The stage i of 0-based ``epoch``: stage i spans epochs [(3^i − 1)/2, (3^(i+1) − 1)/2)."""
    stage, end = 0, 1
    while epoch >= end:
        stage += 1
        end += 3**stage
    return stage


def burda_epochs(stages: int) -> int:
    """Epochs of the first ``stages`` stages: Σ_{i<N} 3^i = (3^N − 1)/2."""
    return (3**stages - 1) // 2


def _constant(epoch: int, step: int, steps_per_epoch: int, epochs: int) -> float:
    """f = 1: lr throughout."""
    return 1.0


def _burda(epoch: int, step: int, steps_per_epoch: int, epochs: int) -> float:
    """f = 10^(−i/7) in stage i = 0, 1, …, which lasts 3^i epochs (Burda et al. 2015)."""
    return 10.0 ** (-burda_stage(epoch) / 7)


def _cosine(epoch: int, step: int, steps_per_epoch: int, epochs: int) -> float:
    """f = ½(1 + cos πt/T): from lr down to 0 over the run's T steps."""
    t = epoch * steps_per_epoch + step
    return 0.5 * (1.0 + math.cos(math.pi * t / (epochs * steps_per_epoch)))


LR_SCHEDULES: dict[str, Schedule] = {
    "constant": _constant,
    "burda": _burda,
    "cosine": _cosine,
}


def set_learning_rate(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """lr = initial_lr · factor in every parameter group; returns the first group's lr."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
    return optimizer.param_groups[0]["lr"]
