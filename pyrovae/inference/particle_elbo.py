"""The shared contract of pyrovae's own estimators (Pyro's ELBO interface).

Each estimator gives, from K vectorized particles, a ``bound`` (its value, summed over the batch)
and a ``surrogate`` whose gradient is the estimator's gradient. ``differentiable_loss`` returns
−bound with the surrogate's gradient, so ``SVI``-style steps, ``ELBOModule`` and plain torch
loops all train with it.

Each declares the kinds of latent site it applies to (``latent_kinds``, see
:mod:`~pyrovae.inference.kinds`): continuous ones by default; a guide site of another kind is a
one-line error when the particles are drawn.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from pyro.infer import ELBO

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.kinds import DEFAULT_KINDS, check_sites
from pyrovae.inference.particles import Particles, draw_particles


class ParticleELBO(ELBO):
    """An estimator built on :func:`draw_particles` (K particles in one vectorized pass)."""

    detach_latents = False  # score-function estimators sample without reparameterization
    model_views = False  # the model reads views of z, log q the z's themselves (PIWAE)
    latent_kinds: frozenset[str] = DEFAULT_KINDS  # the kinds of guide site it applies to

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1, **kwargs) -> None:
        if num_particles < 1:
            raise PyroVAEError(f"--num-particles must be at least 1, got {num_particles}")
        kwargs.pop("vectorize_particles", None)  # always vectorized
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)

    def particles(self, model, guide, args, kwargs) -> Particles:
        p = draw_particles(
            model,
            guide,
            args,
            kwargs,
            self.num_particles,
            int(self.max_plate_nesting),
            self.detach_latents,
            self.model_views,
        )
        check_sites(p.guide_trace, self.latent_kinds, getattr(self, "name", type(self).__name__))
        return p

    def _get_trace(self, model, guide, args, kwargs):
        """(model trace, guide trace) of one vectorized draw, as Pyro's ELBOs return."""
        p = self.particles(model, guide, args, kwargs)
        return p.model_trace, p.guide_trace

    @abstractmethod
    def bound(self, p: Particles) -> torch.Tensor:
        """The objective's estimate, summed over the batch (a scalar)."""

    @abstractmethod
    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        """A scalar whose gradient is this estimator's gradient of :meth:`bound`; ``bound`` is
        that bound, already computed (returned as is when the gradient is its own)."""

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return -self.bound(self.particles(model, guide, args, kwargs)).item()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        p = self.particles(model, guide, args, kwargs)
        bound = self.bound(p)
        surrogate = self.surrogate(p, bound)
        if surrogate is bound:  # a pathwise gradient of the bound itself: nothing to splice
            return -bound
        # the surrogate's value cancels exactly (it may be large: NVIL's squared error)
        return -(bound.detach() + (surrogate - surrogate.detach()))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()


def require_reparameterized(p: Particles, name: str) -> None:
    for site in p.guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
            raise PyroVAEError(
                f"{name} needs reparameterized guide sites; {site['name']!r} has no rsample "
                "(use score-function)"
            )
