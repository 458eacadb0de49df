"""Stopping a run that has blown up without becoming NaN.

The rule: a step whose loss per datapoint ℓ_t exceeds the median m of the previous (up to)
``WINDOW`` steps by more than ``factor`` · (s + 1) nats is a divergence, s = max(|m|, MAD) with
MAD = median |ℓ_i − m| over the same steps. Why this rule: the run's own recent losses are the
only scale that fits every likelihood, dataset and β (a Bernoulli VAE on 784 pixels starts near
543 nats, a Gaussian one on grey levels may sit below zero); the median ignores the occasional
noisy step of a single-sample estimate; and a blown-up run (Adam at lr 1000 moves every weight
by ~1000 in one step) jumps by many orders of magnitude within a step or two, where a healthy
run, however noisy, moves by a few percent. The level |m| is that scale for a bound; the spread
MAD is for an objective known only up to a constant, the Fisher AE's J, which is a sum of terms
of ~10⁵ nats (with σ = 0.1 its Laplacian alone is −D/σ²) and can net to tens of nats while
moving by thousands from step to step. The +1 keeps the margin meaningful when both are near
zero. A factor of 100 leaves two orders of magnitude of room; 0 turns the rule off. The prior's
KL exploding was the other candidate: it misses a decoder that blows up on its own and says
nothing for models without a prior, and a user-set bound would need a number per dataset and
likelihood.
"""

from __future__ import annotations

import statistics
from collections import deque

from pyrovae.core.errors import TrainingDiverged

WINDOW = 100
DIVERGENCE_FACTOR = 100.0


class DivergenceGuard:
    """Watches per-datapoint losses step by step; :meth:`check` raises on a blow-up."""

    def __init__(self, factor: float = DIVERGENCE_FACTOR, window: int = WINDOW) -> None:
        if not factor >= 0:
            raise ValueError(f"the divergence factor must be ≥ 0, got {factor}")
        self.factor = factor
        self.recent: deque[float] = deque(maxlen=window)

    def check(self, loss_per_datapoint: float) -> None:
        """Raise :class:`TrainingDiverged` when the loss breaks the rule; else remember it."""
        if self.factor > 0 and self.recent:
            m = statistics.median(self.recent)
            rise = loss_per_datapoint - m
            # the spread only widens the margin: computed when |m| alone would stop the run
            if rise > self.factor * (abs(m) + 1) and rise > self.factor * (
                max(abs(m), statistics.median(abs(v - m) for v in self.recent)) + 1
            ):
                raise TrainingDiverged(
                    f"the loss jumped to {loss_per_datapoint:.4g} nats per datapoint against a "
                    f"median of {m:.4g} over the last {len(self.recent)} steps, more than "
                    f"{self.factor:g}·(max(|median|, median deviation) + 1) above it: the run "
                    f"has blown up (lower --lr; --divergence-factor 0 turns this check off)"
                )
        self.recent.append(loss_per_datapoint)
