"""The importance-weighted bound (Burda et al. 2015) and its doubly-reparameterized gradient.

L_K = Σ_b log (1/K) Σ_k w_bk,  w_bk = p(x_b, z_bk) / q(z_bk|x_b): the log-mean-exp is per datapoint.
"""

from __future__ import annotations

from functools import partial

import torch

from pyrovae.inference.particle_elbo import ParticleELBO, require_reparameterized
from pyrovae.inference.particles import Particles, log_mean_exp


class IWAE(ParticleELBO):
    """``iwae``: L_K with its reparameterized gradient Σ_k w̃_k ∇ log w_k, w̃ = w / Σ_j w_j."""

    description = "importance-weighted bound L_K = log (1/K) Σ_k w_k, tighter than the ELBO"
    name = "iwae"

    importance_weighted = True  # the bound is L_K (what training reports it as)

    def bound(self, p: Particles) -> torch.Tensor:
        return log_mean_exp(p.log_w, dim=0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, "iwae")
        return bound  # autograd through z = g_φ(ε, x) gives Σ_k w̃_k ∇ log w_k


class DReG(IWAE):
    """``iwae-dreg`` (Tucker et al. 2018): the decoder gradient of IWAE; the encoder gradient

        Σ_k w̃_k² d log w̄_k / dφ,   log w̄_k = log p_θ(x, z_k) − log q_φ̄(z_k|x),

    the total derivative along the sampled path z_k(ε, φ), log q at stop-grad(φ).

    Built as S = Σ w̃ log w̄ (θ-gradient of IWAE, w̃-weighted path gradient for φ), with a
    gradient hook at every tensor through which a latent z_s enters the densities (its views,
    :class:`~pyrovae.inference.particles.Particles`) that multiplies the gradient arriving there,
    w̃_k ∂ log w̄_k / ∂z_s, by w̃_k once more: the partial derivatives then carry w̃², and the
    chain rule through z_s = g(ε, z_{s−1}, φ) gives Σ_k w̃_k² d log w̄_k / dφ, z1's effect
    through z2 counted once. θ's gradient does not pass through the views: it stays IWAE's.
    One backward pass, and the compiled path records the hook's multiplication with the rest.
    """

    description = "L_K with the doubly-reparameterized encoder gradient: SNR not decaying in K"
    name = "iwae-dreg"

    @staticmethod
    def encoder_weights(w: torch.Tensor) -> torch.Tensor:
        """The weights of the encoder's path gradient, from the normalized weights w̃: w̃²."""
        return w * w

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, "iwae-dreg")
        log_w_stop = p.log_p - p.log_q_stop  # (K, B); equals log w in value
        w = torch.softmax(log_w_stop.detach(), dim=0)  # normalized weights w̃, per datapoint
        # the factor that turns the path gradient's w̃ into encoder_weights(w̃); 0 where w̃ is
        factor = torch.where(w > 0, self.encoder_weights(w) / w, torch.zeros_like(w))
        latents = p.latents
        for name, view in p.inputs:
            if latents[name].requires_grad and view.requires_grad:
                view.register_hook(partial(_reweighted, factor))
        return (w * log_w_stop).sum()


def _reweighted(factor: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``grad`` (K, B, …) times ``factor`` (K, B), broadcast over the event dimensions."""
    return grad * factor.reshape(factor.shape + (1,) * (grad.dim() - factor.dim()))
