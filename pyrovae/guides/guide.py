"""The amortized guide q_φ(z|x) as a Pyro guide function with the model's signature."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyrovae.guides.families import Family
from pyrovae.modules import LocalPyroModule


class AmortizedGuide(LocalPyroModule):
    """q_φ(z|x) = family(encoder(x)); samples site ``"z"`` in plate ``"data"``.

    The family's distributions have ``has_rsample``, so Pyro's ELBOs differentiate through z
    (the reparameterization trick) without being told.
    """

    def __init__(self, encoder: nn.Module, family: Family) -> None:
        super().__init__()
        self.encoder = encoder
        self.family = family

    def posterior(self, x: torch.Tensor):
        """The distribution q_φ(z|x) itself, batch shape (B,), event shape (d,)."""
        return self.family(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.posterior(x))
