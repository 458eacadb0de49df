"""β-VAE and KL annealing by composition: a scale on the latent sites, not a new model.

Scaling the log-densities of the latent sites (``"z"``; ``"z1"`` … ``"zL"`` with several
stochastic layers) by β in model and guide alike turns every estimator's log p(z) − log q(z|x)
(or its analytic KL) into β times it: L_β = E_q[log p(x|z)] − β·KL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample


class LatentScale(Messenger):
    """Multiply the log-density of sample sites by ``scale`` (model and guide): the named
    ``sites``, or by default every latent (unobserved) one."""

    def __init__(self, scale: float, sites: Sequence[str] | None = None) -> None:
        super().__init__()
        self.scale = scale
        self.sites = None if sites is None else frozenset(sites)

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or site_is_subsample(msg):  # a plate's own index site
            return
        chosen = not msg["is_observed"] if self.sites is None else msg["name"] in self.sites
        if chosen:
            msg["scale"] = msg["scale"] * self.scale


def beta_schedule(beta: float, warmup_steps: int = 0) -> Callable[[int], float]:
    """β_t = β · min(1, (t + 1) / warmup) for step t = 0, 1, …; constant β when warmup = 0."""
    if warmup_steps <= 0:
        return lambda step: beta
    return lambda step: beta * min(1.0, (step + 1) / warmup_steps)
