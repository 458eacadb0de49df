"""Posterior families: the encoder's raw output ↦ q_φ(z|x), always reparameterized."""

from __future__ import annotations

from abc import ABC, abstractmethod

import pyro.distributions as dist
import torch
import torch.nn.functional as F

MIN_SCALE = 1e-4


class Family(ABC):
    """A guide family: ``num_params(d)`` raw outputs per datapoint ↦ a distribution over z."""

    @abstractmethod
    def num_params(self, latent_dim: int) -> int:
        """How many raw encoder outputs one datapoint needs."""

    @abstractmethod
    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        """q_φ(z|x) for raw encoder outputs ``raw`` of shape (B, num_params(d))."""


class DiagonalNormal(Family):
    """q_φ(z|x) = N(μ, diag σ²), μ and σ = softplus(ρ) + 1e-4 from the encoder."""

    def num_params(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def __call__(self, raw: torch.Tensor) -> dist.Distribution:
        loc, rho = raw.chunk(2, dim=-1)  # (B, d) each
        # No argument validation: a NaN here must surface as a NaN loss (caught by training),
        # not as a ValueError from deep inside a trace.
        scale = F.softplus(rho) + MIN_SCALE
        return dist.Normal(loc, scale, validate_args=False).to_event(1)


GUIDES: dict[str, Family] = {"normal": DiagonalNormal()}
