"""The importance-weighted bound (Burda et al. 2015) and its doubly-reparameterized gradient.

L_K = Σ_b log (1/K) Σ_k w_bk,  w_bk = p(x_b, z_bk) / q(z_bk|x_b): the log-mean-exp is per datapoint.
"""

from __future__ import annotations

import torch

from pyrovae.inference.particle_elbo import ParticleELBO, require_reparameterized
from pyrovae.inference.particles import Particles, log_mean_exp


class IWAE(ParticleELBO):
    """``iwae``: L_K with its reparameterized gradient Σ_k w̃_k ∇ log w_k, w̃ = w / Σ_j w_j."""

    description = "importance-weighted bound L_K = log (1/K) Σ_k w_k, tighter than the ELBO"

    def bound(self, p: Particles) -> torch.Tensor:
        return log_mean_exp(p.log_w, dim=0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, "iwae")
        return bound  # autograd through z = g_φ(ε, x) gives Σ_k w̃_k ∇ log w_k


class DReG(IWAE):
    """``iwae-dreg`` (Tucker et al. 2018): the decoder gradient of IWAE; the encoder gradient

        Σ_k w̃_k² (∂ log w_k / ∂z_k)(∂z_k / ∂φ),  log w_k with log q evaluated at stop-grad(φ).

    Built as S = Σ w̃ log w̄ (θ-gradient of IWAE) plus ⟨g, z⟩ with g = ∂/∂z Σ (w̃² − w̃) log w̄
    held constant, which turns S's pathwise φ-gradient from w̃-weighted into w̃²-weighted.
    """

    description = "L_K with the doubly-reparameterized encoder gradient: SNR not decaying in K"

    traceable = False  # g is a gradient taken inside the loss: a recorded graph cannot hold it

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, "iwae-dreg")
        log_w_stop = p.log_p - p.log_q_stop  # (K, B); equals log w in value
        w = torch.softmax(log_w_stop.detach(), dim=0)  # normalized weights w̃, per datapoint
        main = (w * log_w_stop).sum()
        latents = [z for z in p.latents if z.requires_grad]
        if not latents:
            return main
        grads = torch.autograd.grad(
            ((w * w - w) * log_w_stop).sum(), latents, retain_graph=True, allow_unused=True
        )
        correction = sum(
            (g.detach() * z).sum() for g, z in zip(grads, latents, strict=True) if g is not None
        )
        return main + correction
