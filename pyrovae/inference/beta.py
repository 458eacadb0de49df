"""β-VAE and KL annealing by composition: a scale on the latent site, not a new model.

Scaling the log-density of site ``"z"`` by β in model and guide alike turns every estimator's
log p(z) − log q(z|x) (or its analytic KL) into β times it: L_β = E_q[log p(x|z)] − β·KL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyro.poutine.messenger import Messenger


class LatentScale(Messenger):
    """Multiply the log-density of the named sample sites by ``scale`` (model and guide)."""

    def __init__(self, scale: float, sites: Sequence[str] = ("z",)) -> None:
        super().__init__()
        self.scale = scale
        self.sites = frozenset(sites)

    def _process_message(self, msg) -> None:
        if msg["type"] == "sample" and msg["name"] in self.sites:
            msg["scale"] = msg["scale"] * self.scale


def beta_schedule(beta: float, warmup_steps: int = 0) -> Callable[[int], float]:
    """β_t = β · min(1, (t + 1) / warmup) for step t = 0, 1, …; constant β when warmup = 0."""
    if warmup_steps <= 0:
        return lambda step: beta
    return lambda step: beta * min(1.0, (step + 1) / warmup_steps)
