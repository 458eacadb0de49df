"""The amortized guide q_φ(z|x) as a Pyro guide function with the model's signature."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import with_label
from pyrovae.core.modules import LocalPyroModule
from pyrovae.guides.families import Family
from pyrovae.guides.layers import StochasticLayer, latent_sites


class AmortizedGuide(LocalPyroModule):
    """q_φ(z|x) = family(encoder(x)), or q_φ(z|x, y) = family(encoder([x, onehot(y)])) with
    ``num_classes`` > 0 (a conditional VAE); samples site ``"z"`` in plate ``"data"``.

    ``encoder`` maps (B, D [+ C]) to raw outputs (B, family.num_params). Both are submodules, so a
    family's own parameters (a flow's layers) are in ``.parameters()`` and the checkpoint. The
    family's distributions have ``rsample``, so Pyro's ELBOs differentiate through z (the
    reparameterization trick) without being told. ``y`` is accepted either way, so the guide
    keeps the model's signature.

    With ``layers`` (L − 1 of them) it is hierarchical (Burda et al. 2015):
    q(z1|x) Π_{l=2..L} q(z_l|z_{l−1}), ``layers[l − 2]`` giving q(z_l|z_{l−1}); sites
    ``"z1"`` … ``"zL"``. :meth:`posterior` is then the bottom layer's q(z1|x).

    ``baseline``: a network that an estimator trains alongside φ without it being part of q
    (NVIL's b_ψ(x), :class:`~pyrovae.inference.nvil.NVILBaseline`); held here so that the same
    optimizer trains it and the checkpoint keeps it. Not used in :meth:`forward`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        family: Family,
        num_classes: int = 0,
        layers: Sequence[StochasticLayer] = (),
        baseline: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.family = family
        self.num_classes = num_classes
        self.layers = nn.ModuleList(layers)
        self.baseline = baseline

    @property
    def sites(self) -> tuple[str, ...]:
        """The latent sites, bottom first."""
        return latent_sites(1 + len(self.layers))

    @property
    def latent_dims(self) -> tuple[int, ...]:
        """Each layer's latent size, bottom first."""
        return (self.family.latent_dim, *(layer.latent_dim for layer in self.layers))

    def layer_parameters(self) -> dict[str, list[nn.Parameter]]:
        """φ by layer: each site's parameters (those of q(z_l|·)), bottom first."""
        bottom = [*self.encoder.parameters(), *self.family.parameters()]
        upper = [list(layer.parameters()) for layer in self.layers]
        return dict(zip(self.sites, [bottom, *upper], strict=True))

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None):
        """The distribution q_φ(z|x[, y]) itself (the bottom layer's q(z1|x) for a hierarchical
        guide), batch shape (B,), event shape (d,)."""
        if self.num_classes:
            if y is None:
                raise PyroVAEError("a conditional guide needs the labels y")
            x = with_label(x, y, self.num_classes)
        return self.family(self.encoder(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        sites = self.sites
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(sites[0], self.posterior(x, y))
            for name, layer in zip(sites[1:], self.layers, strict=True):
                z = pyro.sample(name, layer(z))  # q(z_l|z_{l−1})
        return z
