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

        Σ_k w̃_k² d log w̄_k / dφ,   log w̄_k = log p_θ(x, z_k) − log q_φ̄(z_k|x),

    the total derivative along the sampled path z_k(ε, φ), log q at stop-grad(φ).

    Built as S = Σ w̃ log w̄ (θ-gradient of IWAE, w̃-weighted path gradient for φ) plus
    Σ_s ⟨g_s, z_s⟩ over the latent sites s, with g_s = ∂/∂z_s Σ_k (w̃_k² − w̃_k) log w̄_k held
    constant. g_s is the *partial* derivative (taken at the views through which z_s enters the
    densities, :class:`~pyrovae.inference.particles.Particles`), so by the chain rule
    Σ_s g_s dz_s/dφ is the total derivative, z1's effect through z2 = g(ε2, z1, φ) counted once,
    in ⟨g_2, z_2⟩. The compiled path records the step with ``make_fx``, which runs this inner
    ``autograd.grad`` on the real tensors and keeps its operations: g_s is an explicit part of
    the compiled graph, and the backward of the whole sees it as the constant it is.
    """

    description = "L_K with the doubly-reparameterized encoder gradient: SNR not decaying in K"

    @staticmethod
    def encoder_weights(w: torch.Tensor) -> torch.Tensor:
        """The weights of the encoder's path gradient, from the normalized weights w̃: w̃²."""
        return w * w

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, "iwae-dreg")
        log_w_stop = p.log_p - p.log_q_stop  # (K, B); equals log w in value
        w = torch.softmax(log_w_stop.detach(), dim=0)  # normalized weights w̃, per datapoint
        main = (w * log_w_stop).sum()
        latents = p.latents
        views = [(name, v) for name, v in p.inputs if latents[name].requires_grad]
        if not views:
            return main
        reweight = ((self.encoder_weights(w) - w) * log_w_stop).sum()
        grads = torch.autograd.grad(
            reweight, [v for _, v in views], retain_graph=True, allow_unused=True
        )
        correction = sum(
            (g.detach() * latents[name]).sum()
            for (name, _), g in zip(views, grads, strict=True)
            if g is not None
        )
        return main + correction
