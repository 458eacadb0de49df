"""VIMCO (Mnih & Rezende 2016): the importance-weighted bound L_K by the score function, each
sample's signal centred by a baseline made of the other K − 1 samples.

Per datapoint, w_k = p(x, z_k) / q(z_k|x), L̂ = log (1/K) Σ_j w_j, w̃_k = w_k / Σ_j w_j. With
z_1…z_K drawn without a path to φ,

    ∇_φ E[L̂] = E[Σ_k L̂ ∇_φ log q(z_k)] + E[∇_φ L̂],   ∇_φ L̂ = −Σ_k w̃_k ∇_φ log q(z_k),

and L̂ in the first term may be replaced by L̂ − L̂_{−k} for any L̂_{−k} that does not depend on
z_k. VIMCO's L̂_{−k} is L̂ with w_k replaced by the geometric mean of the others,
ŵ_{−k} = exp((1/(K−1)) Σ_{j≠k} log w_j):

    g_φ = Σ_k (L̂ − L̂_{−k}) ∇_φ log q(z_k) − Σ_k w̃_k ∇_φ log q(z_k),
    g_θ = Σ_k w̃_k ∇_θ log p(x, z_k)   (IWAE's).

Both are unbiased for ∇ L_K, for continuous (z detached) and discrete guide sites alike.
"""

from __future__ import annotations

import math

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.particle_elbo import ParticleELBO
from pyrovae.inference.particles import Particles, log_mean_exp


def leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    """L̂_{−k}, (K, B): log (1/K) (Σ_{j≠k} w_j + ŵ_{−k}) from log w (K, B), K ≥ 2, stably."""
    k = log_w.shape[0]
    others = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)  # log ŵ_{−k}, (K, B)
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)  # (K, K, 1)
    # row k: log w with its k-th entry replaced by log ŵ_{−k}, (K, K, B)
    replaced = torch.where(eye, others.unsqueeze(1), log_w.unsqueeze(0))
    return torch.logsumexp(replaced, dim=1) - math.log(k)


class VIMCO(ParticleELBO):
    """``vimco`` (K ≥ 2): L_K with the score-function gradient and VIMCO's per-sample baselines.

    Surrogate per datapoint: L̂(log p, log q) + Σ_k (L̂ − L̂_{−k})·log q(z_k), the signal held
    constant: its autograd with z detached gives g_θ and g_φ of the module docstring.
    """

    description = "L_K by the score function, leave-one-out baselines (Mnih & Rezende 2016)"

    latent_kinds = frozenset({"continuous", "discrete"})
    detach_latents = True
    importance_weighted = True  # the bound is L_K

    def __init__(self, num_particles: int = 2, **kwargs) -> None:
        if num_particles < 2:
            raise PyroVAEError(
                f"vimco needs --num-particles of at least 2 (each sample's baseline comes from "
                f"the others), got {num_particles}"
            )
        super().__init__(num_particles=num_particles, **kwargs)

    def bound(self, p: Particles) -> torch.Tensor:
        return log_mean_exp(p.log_w, dim=0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        per_datapoint = log_mean_exp(p.log_w, dim=0)  # L̂, (B,)
        log_w = p.log_w.detach()
        signal = log_mean_exp(log_w, dim=0) - leave_one_out_bounds(log_w)  # (K, B)
        return per_datapoint.sum() + (signal * p.log_q).sum()
