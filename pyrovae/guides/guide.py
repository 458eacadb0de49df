"""The amortized guide q_φ(z|x) as a Pyro guide function with the model's signature."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from torch import nn

from pyrovae.core.labels import LabelCondition, joined
from pyrovae.core.modules import LocalPyroModule
from pyrovae.guides.families import Family
from pyrovae.guides.layers import StochasticLayer, latent_sites


class AmortizedGuide(LocalPyroModule):
    """q_φ(z|x) = family(encoder(x)), or q_φ(z|x, c) = family(encoder([x, c])) with the context
    c = condition.context(x, y) of a conditional VAE (``num_classes`` > 0: c = onehot(y));
    samples site ``"z"`` in plate ``"data"``.

    The ``condition`` is the model's (:mod:`~pyrovae.models.condition`), held by a plain
    reference: the model owns it (a frozen baseline network inside it is saved once, with the
    model, and moved with it).

    ``encoder`` maps (B, D + n_c) to raw outputs (B, family.num_params). Both are submodules, so a
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
        condition: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.family = family
        # object.__setattr__: not a submodule (see above)
        object.__setattr__(
            self, "condition", LabelCondition(num_classes) if num_classes else condition
        )
        self.layers = nn.ModuleList(layers)
        self.baseline = baseline

    @property
    def num_classes(self) -> int:
        """C for a label's condition, else 0."""
        return getattr(self.condition, "num_classes", 0)

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
        """The distribution q_φ(z|x[, c]) itself (the bottom layer's q(z1|x) for a hierarchical
        guide), batch shape (B,), event shape (d,)."""
        if self.condition is not None:
            x = joined(x, self.condition.context(x, y))
        return self.family(self.encoder(x))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        sites = self.sites
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(sites[0], self.posterior(x, y))
            for name, layer in zip(sites[1:], self.layers, strict=True):
                z = pyro.sample(name, layer(z))  # q(z_l|z_{l−1})
        return z


class PriorEncoder(nn.Module):
    """The GSNN's "encoder": the conditional prior's own network applied to the context part of
    the guide's input [x, c], so that q(z|x, c) = p(z|c) (Sohn et al. 2015's Gaussian stochastic
    neural network, trained with the recognition model replaced by the prior). The prior is
    held by a plain reference, so its parameters stay the model's only."""

    def __init__(self, prior: nn.Module, num_pixels: int) -> None:
        super().__init__()
        object.__setattr__(self, "prior", prior)
        self.num_pixels = num_pixels

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.prior.net(h[..., self.num_pixels :])  # [x, c] ↦ ψ(c)
