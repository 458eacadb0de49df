"""The amortized guide q_φ(z|x) as a Pyro guide function with the model's signature."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import with_label
from pyrovae.core.modules import LocalPyroModule
from pyrovae.guides.families import Family


class AmortizedGuide(LocalPyroModule):
    """q_φ(z|x) = family(encoder(x)), or q_φ(z|x, y) = family(encoder([x, onehot(y)])) with
    ``num_classes`` > 0 (a conditional VAE); samples site ``"z"`` in plate ``"data"``.

    ``encoder`` maps (B, D [+ C]) to raw outputs (B, family.num_params). Both are submodules, so a
    family's own parameters (a flow's layers) are in ``.parameters()`` and the checkpoint. The
    family's distributions have ``rsample``, so Pyro's ELBOs differentiate through z (the
    reparameterization trick) without being told. ``y`` is accepted either way, so the guide
    keeps the model's signature.
    """

    def __init__(self, encoder: nn.Module, family: Family, num_classes: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.family = family
        self.num_classes = num_classes

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """The distribution q_φ(z|x[, y]) itself, batch shape (B,), event shape (d,)."""
        if self.num_classes:
            if y is None:
                raise PyroVAEError("a conditional guide needs the labels y")
            x = with_label(x, y, self.num_classes)
        return self.family(self.encoder(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.posterior(x, y))
