"""Priors p(z): callables that return a distribution over one datapoint's latent vector."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I_d)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        # Buffers follow the module across devices, so no tensor is created per step.
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)


PRIORS: dict[str, type[nn.Module]] = {"normal": StandardNormalPrior}
