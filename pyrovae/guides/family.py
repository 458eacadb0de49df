"""The contract of a guide family (see :mod:`~pyrovae.guides.families`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn


class Family(nn.Module, ABC):
    """A guide family over z ∈ ℝ^d: ``num_params`` raw encoder outputs per datapoint ↦ q_φ(z|x)."""

    num_params: int  # raw encoder outputs per datapoint
    has_density = True  # False for a point mass: no KL, no importance sampling from it
    latent_kind = "continuous"  # or "discrete": which estimators apply (inference.kinds)
    code = "continuous"  # what a prior must be over to pair with it (a prior's own ``code``)

    def __init__(self, latent_dim: int, **options: Any) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @property
    def code_dim(self) -> int:
        """The size of a value z, what the decoder reads: d here."""
        return self.latent_dim

    @classmethod
    def num_states(cls, latent_dim: int, categories: int = 10) -> int | None:
        """How many values one datapoint's code has: None for a continuous one."""
        return None

    @abstractmethod
    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        """q_φ(z|x) for raw outputs (B, num_params): batch shape (B,), event shape (d,)."""

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, num_params={self.num_params}"
