"""Relaxed discrete codes: Gumbel-softmax / Concrete (Jang et al. 2017; Maddison et al. 2017)
and its straight-through variant.

Both draw the code through its relaxation at temperature τ (:class:`~pyrovae.guides.discrete.
Relaxed`), feed that draw to the decoder, and take the KL of the discrete q to the prior in
closed form (as Jang et al. do):

    L̃ = (1/K) Σ_k log p_θ(x | z̃_k) − KL(q_φ(z|x) ‖ p(z)),

with a pathwise gradient through z̃_k. ``gumbel-softmax``: z̃ the relaxed value, so the value
is not the ELBO (the decoder sees a point of the simplex) and the gradient is biased for τ > 0,
less so as τ falls (and noisier). ``straight-through``: z̃ the hard one-hot (or binary) draw in
the forward pass, an unbiased ELBO value, with the relaxed draw's gradient (biased).

τ is the enclosing :class:`~pyrovae.inference.temperature.Temperature`'s (training anneals it),
else the estimator's own ``temperature``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.analytic_kl import kl_form
from pyrovae.inference.kinds import DISCRETE, refusal, site_kind
from pyrovae.inference.particle_elbo import ParticleELBO
from pyrovae.inference.particles import Particles
from pyrovae.inference.temperature import TEMPERATURE, current_temperature


class Relax(Messenger):
    """Replace each latent site's discrete code by its relaxation (at τ, ``hard`` for
    straight-through); a site without one is refused in one line, naming ``estimator``."""

    def __init__(self, temperature: Any, hard: bool, estimator: str) -> None:
        super().__init__()
        self.temperature, self.hard, self.estimator = temperature, hard, estimator

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
            return
        fn = msg["fn"]
        inner = fn.base_dist if isinstance(fn, ExpandedDistribution) else fn
        relaxed = getattr(inner, "relaxed", None)
        if relaxed is None:
            raise PyroVAEError(refusal(self.estimator, site_kind(fn), msg["name"]))
        out = relaxed(self.temperature, self.hard)
        msg["fn"] = out.expand(fn.batch_shape) if inner is not fn else out


class RelaxedELBO(ParticleELBO):
    """The shared estimator of :mod:`~pyrovae.inference.relaxed`; ``hard`` picks the variant."""

    latent_kinds = frozenset({DISCRETE})
    annealed = True  # training runs each step inside a Temperature (fit's schedule)
    hard: ClassVar[bool]

    def __init__(self, num_particles: int = 1, temperature: float = TEMPERATURE, **kwargs):
        super().__init__(num_particles=num_particles, **kwargs)
        if not temperature > 0:
            raise PyroVAEError(f"the temperature must be positive, got {temperature}")
        self._temperature = float(temperature)

    @property
    def temperature(self) -> float:
        """τ used where no :class:`Temperature` encloses the step (fixed: a compiled graph
        records it as a constant)."""
        return self._temperature

    def particles(self, model, guide, args, kwargs) -> Particles:
        tau = current_temperature(self._temperature)
        return super().particles(model, Relax(tau, self.hard, self.name)(guide), args, kwargs)

    def bound(self, p: Particles) -> torch.Tensor:
        return kl_form(p, self.name).mean(0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        return bound  # pathwise, through the relaxed draw


class GumbelSoftmax(RelaxedELBO):
    """``gumbel-softmax``: the decoder reads the relaxed code z̃ = softmax((log π + g)/τ)."""

    description = "discrete codes: relaxed (Concrete) draw at an annealed τ; biased, low variance"
    name = "gumbel-softmax"
    objective = "relaxed ELBO"  # what train_elbo is: the decoder read relaxed codes
    hard = False


class StraightThrough(RelaxedELBO):
    """``straight-through``: the decoder reads the hard draw; its gradient is the relaxed one's."""

    description = "discrete codes: hard draw forward, relaxed gradient backward (biased)"
    name = "straight-through"
    hard = True
