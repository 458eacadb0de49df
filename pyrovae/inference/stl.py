"""The ELBO with the "sticking the landing" gradient (Roeder et al. 2017)."""

from __future__ import annotations

import torch

from pyrovae.inference.particle_elbo import ParticleELBO, require_reparameterized
from pyrovae.inference.particles import Particles


class STL(ParticleELBO):
    """``elbo-stl``: L^A = (1/K) Σ_k [log p(x, z_k) − log q_φ(z_k|x)] with log q at stop-grad(φ).

    Dropping the score term ∇_φ log q_φ(z)|_z (zero in expectation) leaves an unbiased gradient
    that is exactly zero when q is the true posterior. Only the guide's parameters are stopped:
    with several sites log q_φ̄(z2|z1) keeps z1's path (see ``Particles.log_q_stop``).
    """

    description = "ELBO with the sticking-the-landing gradient (the score term dropped)"
    name = "elbo-stl"

    def bound(self, p: Particles) -> torch.Tensor:
        return p.log_w.mean(0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, "elbo-stl")
        return (p.log_p - p.log_q_stop).mean(0).sum()
