"""Reweighted wake-sleep (Bornschein & Bengio 2015), its wake updates, per datapoint.

With K samples z_k ~ q_φ(z|x) (no path to φ) and normalized weights w̃_k = w_k / Σ_j w_j,
w_k = p_θ(x, z_k) / q_φ(z_k|x):

    θ: Σ_k w̃_k ∇_θ log p_θ(x, z_k)      (the gradient of L_K in θ, IWAE's),
    φ (wake): Σ_k w̃_k ∇_φ log q_φ(z_k|x)  (a self-normalized estimate of −∇_φ KL(p(z|x) ‖ q)).

Both are ascended. The two are not the gradient of one objective: θ climbs L_K while φ fits
q to the posterior in the inclusive direction KL(p ‖ q), so the loss reported (−L_K, the bound
the θ update climbs) does not decrease along the φ update, and the φ estimate is biased for
finite K (self-normalized), consistent as K → ∞.

Pyro's ``ReweightedWakeSleep`` (``insomnia=1``) forms the weights from log-densities summed
over the whole batch (one log-sum-exp over K of batch totals), so it matches this estimator
only for a batch of one datapoint (tested); here the log-sum-exp is per datapoint, as in L_K.
Its ``loss`` is a pair (wake-θ, φ losses); here it is the one number −L_K.
"""

from __future__ import annotations

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.particle_elbo import ParticleELBO
from pyrovae.inference.particles import Particles, log_mean_exp


class RWS(ParticleELBO):
    """``rws`` (K ≥ 2): θ by IWAE's gradient, φ by the wake-φ update; the bound is L_K.

    Surrogate: Σ_b Σ_k w̃_bk (log p(x_b, z_bk) + log q(z_bk|x_b)), w̃ held constant, z detached.
    """

    description = "reweighted wake-sleep: θ on L_K, φ by wake-φ Σ w̃ ∇ log q (not one objective)"

    latent_kinds = frozenset({"continuous", "discrete"})
    detach_latents = True
    importance_weighted = True  # the bound is L_K

    def __init__(self, num_particles: int = 2, **kwargs) -> None:
        if num_particles < 2:
            raise PyroVAEError(
                "rws needs --num-particles of at least 2 (with K = 1 its wake-φ gradient "
                f"∇ log q(z) has mean zero), got {num_particles}"
            )
        super().__init__(num_particles=num_particles, **kwargs)

    def bound(self, p: Particles) -> torch.Tensor:
        return log_mean_exp(p.log_w, dim=0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(p.log_w.detach(), dim=0)  # w̃, (K, B), per datapoint
        return (w * (p.log_p + p.log_q)).sum()
