"""Stochastic layers: a distribution over one layer's latent z_l given an input h, and the site
names of a stack of them.

A hierarchical guide is q(z1|x) Π_l q(z_l|z_{l−1}) and the model p(z_L) Π_l p(z_l|z_{l+1})
p(x|z1) (Burda et al. 2015): each factor but the first of the guide and the top prior is a
:class:`StochasticLayer`, family(net(h)).
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.guides.families import Family


def latent_sites(num_layers: int) -> tuple[str, ...]:
    """Site names of ``num_layers`` stochastic layers, bottom first: ``("z",)`` for one layer
    (today's model), ``("z1", "z2", …)`` for several."""
    if num_layers < 1:
        raise ValueError(f"a model has at least one stochastic layer, got {num_layers}")
    return ("z",) if num_layers == 1 else tuple(f"z{i}" for i in range(1, num_layers + 1))


class StochasticLayer(nn.Module):
    """A conditional distribution family(net(h)) over z ∈ ℝ^d given h: the net maps (…, B, h) to
    the family's raw parameters (…, B, num_params); leading (particle) dims pass through."""

    def __init__(self, net: nn.Module, family: Family) -> None:
        super().__init__()
        self.net = net
        self.family = family

    @property
    def latent_dim(self) -> int:
        return self.family.latent_dim

    def forward(self, h: torch.Tensor) -> dist.Distribution:
        return self.family(self.net(h))
