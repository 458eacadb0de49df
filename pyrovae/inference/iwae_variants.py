"""Rainforth et al. (2018)'s remedies for the IWAE encoder's gradient SNR, which decays as 1/√K.

With log-weights log w_mk = log p(x, z_mk) − log q(z_mk|x) of M·K particles per datapoint,
L_K(w_1…K) = log (1/K) Σ_k w_k (the IWAE bound):

- ``miwae:M`` (K = ``--num-particles``): MIWAE(M, K) = (1/M) Σ_m L_K(w_m1…w_mK), the average of
  M independent IWAE bounds; MIWAE(1, K) = L_K, MIWAE(M, 1) = the ELBO of M samples.
- ``ciwae:β``: CIWAE(β) = β·(1/K) Σ_k log w_k + (1 − β)·L_K on the same K samples.
- ``piwae:M``: PIWAE(M, K), θ (the model) climbs L_MK of all M·K particles, φ (the guide)
  climbs MIWAE(M, K) of the same particles; the bound reported is L_MK.

Each name takes its parameter after a colon (``miwae:8``); bare, it is the paper's
(M = 8, β = 0.5).
"""

from __future__ import annotations

from functools import partial

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.iwae import _reweighted
from pyrovae.inference.particle_elbo import ParticleELBO, require_reparameterized
from pyrovae.inference.particles import Particles, log_mean_exp

GROUPS = 8  # M of Rainforth et al.'s MIWAE(8, 8) and PIWAE(8, 8)
BETA = 0.5  # β of their CIWAE
# PIWAE splices two weightings w̃_k (θ) and v_k (φ) into one backward pass (see PIWAE);
# a w̃_k below this floor (an underflowed weight) is raised to it, so that its particle's
# φ-gradient can be rescaled: θ's gradient moves by at most M·K·FLOOR relatively.
FLOOR = 1e-20


def parse_groups(text: str) -> int:
    """M of ``miwae:M`` / ``piwae:M``: a positive integer."""
    try:
        m = int(text)
    except ValueError:
        m = 0
    if m < 1 or str(m) != text.strip():
        raise PyroVAEError(
            f"M, the number of IWAE bounds averaged, must be an integer ≥ 1: {text!r}"
        )
    return m


def parse_beta(text: str) -> float:
    """β of ``ciwae:β``: a number in [0, 1]."""
    try:
        beta = float(text)
    except ValueError:
        beta = float("nan")
    if not 0 <= beta <= 1:
        raise PyroVAEError(f"CIWAE's β must be a number in [0, 1], got {text!r}")
    return beta


def grouped_bound(log_w: torch.Tensor, groups: int) -> torch.Tensor:
    """(1/M) Σ_m L_K of the M consecutive blocks of K = rows/M particles in ``log_w`` (MK, B),
    per datapoint, (B,)."""
    return log_mean_exp(log_w.reshape(groups, -1, *log_w.shape[1:]), dim=1).mean(0)


def group_weights(log_w: torch.Tensor, groups: int) -> torch.Tensor:
    """∂ MIWAE(M, K) / ∂ log w: (1/M) × the weights w̃ normalized within each block, (MK, B)."""
    w = torch.softmax(log_w.reshape(groups, -1, *log_w.shape[1:]), dim=1)
    return (w / groups).reshape(log_w.shape)


class _Grouped(ParticleELBO):
    """M groups of K particles, drawn as one vectorized pass of M·K."""

    option = "groups"
    parse = staticmethod(parse_groups)

    def __init__(self, num_particles: int = 1, groups: int = GROUPS, **kwargs) -> None:
        parse_groups(str(groups))
        self.groups, self.per_bound = groups, num_particles
        super().__init__(num_particles=groups * num_particles, **kwargs)

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.groups}"


class MIWAE(_Grouped):
    """``miwae:M``: MIWAE(M, K) = (1/M) Σ_m log (1/K) Σ_k w_mk, reparameterized gradient."""

    description = "MIWAE(M, K): the mean of M IWAE bounds of K samples each (miwae:M; M = 8)"
    name = "miwae"

    @property
    def objective(self) -> str:
        return f"MIWAE({self.groups},{self.per_bound})"

    def bound(self, p: Particles) -> torch.Tensor:
        return grouped_bound(p.log_w, self.groups).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, self.name)
        return bound


class PIWAE(_Grouped):
    """``piwae:M``: θ by ∇_θ L_MK, φ by ∇_φ MIWAE(M, K), the same M·K particles.

    One backward pass of S = Σ_k w̃_k log p(x, z_k) − Σ_k v_k log q(z_k|x), w̃ the weights of
    L_MK and v = ∂MIWAE/∂ log w (both held constant), with the model reading views of z whose
    gradient hook multiplies what arrives there, w̃_k ∂ log p_k / ∂z_k, by v_k / w̃_k. θ gets
    Σ w̃_k ∇_θ log p_k (L_MK's), φ gets Σ v_k d log w_k / dφ (MIWAE's, path and score terms).
    """

    description = "PIWAE(M, K): the model climbs IWAE(MK), the guide MIWAE(M, K) (piwae:M; M = 8)"
    name = "piwae"

    importance_weighted = True  # the bound reported is L_MK, the one θ climbs
    model_views = True

    def bound(self, p: Particles) -> torch.Tensor:
        return log_mean_exp(p.log_w, dim=0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, self.name)
        log_w = p.log_w.detach()
        w = torch.softmax(log_w, dim=0).clamp_min(FLOOR)  # θ: L_MK's weights
        v = group_weights(log_w, self.groups)  # φ: MIWAE(M, K)'s
        latents = p.latents
        for name, view in p.inputs:
            if latents[name].requires_grad and view.requires_grad:
                view.register_hook(partial(_reweighted, v / w))
        return (w * p.log_p).sum() - (v * p.log_q).sum()


class CIWAE(ParticleELBO):
    """``ciwae:β``: CIWAE(β) = β·(1/K) Σ_k log w_k + (1 − β)·log (1/K) Σ_k w_k."""

    description = "CIWAE(β) = β·ELBO + (1 − β)·IWAE on the same K samples (ciwae:β; β = 0.5)"
    name = "ciwae"
    option = "beta"
    parse = staticmethod(parse_beta)

    def __init__(self, num_particles: int = 1, beta: float = BETA, **kwargs) -> None:
        self.beta = parse_beta(str(beta))
        super().__init__(num_particles=num_particles, **kwargs)

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.beta:g}"

    @property
    def objective(self) -> str:
        return f"CIWAE({self.beta:g})"

    def bound(self, p: Particles) -> torch.Tensor:
        log_w = p.log_w
        return (self.beta * log_w.mean(0) + (1 - self.beta) * log_mean_exp(log_w, dim=0)).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, self.name)
        return bound
