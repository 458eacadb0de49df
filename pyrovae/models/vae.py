"""The generative model p(z) p_θ(x|z) (or p_θ(x|z, y)) as a Pyro model function."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import with_label
from pyrovae.core.modules import LocalPyroModule
from pyrovae.guides.layers import StochasticLayer, latent_sites


class VAE(LocalPyroModule):
    """p(z) p_θ(x|z) with sites ``"z"`` (latent) and ``"x"`` (observed) in plate ``"data"``.

    Composed of its parts: ``prior()`` gives p(z), ``decoder(z)`` the likelihood's parameters and
    ``likelihood(params)`` p_θ(x|z). With ``num_classes`` > 0 it is a conditional VAE: the
    decoder sees [z, onehot(y)], i.e. p_θ(x|z, y), and the prior stays p(z). ``image_shape``
    (C, H, W) says how a flattened x (D = C·H·W, channel-major) is an image, for figures
    (None: square grey images, D = side²).

    With ``layers`` (L − 1 of them) it has L stochastic layers (Burda et al. 2015):
    p(z_L) Π_{l=1..L−1} p(z_l|z_{l+1}) p_θ(x|z1), ``layers[l − 1]`` giving p(z_l|z_{l+1}) and
    ``prior()`` the top layer's p(z_L); sites ``"z1"`` … ``"zL"``. The decoder sees z1 only.
    """

    def __init__(
        self,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        num_classes: int = 0,
        image_shape: tuple[int, int, int] | None = None,
        layers: Sequence[StochasticLayer] = (),
    ) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.num_classes = num_classes
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.layers = nn.ModuleList(layers)

    @property
    def sites(self) -> tuple[str, ...]:
        """The latent sites, bottom first."""
        return latent_sites(1 + len(self.layers))

    def layer_parameters(self) -> dict[str, list[nn.Parameter]]:
        """θ by layer: for each site z_l, the parameters of what z_l feeds (p_θ(x|z1) for the
        bottom one, p(z_{l−1}|z_l) above); the top site's include the prior's own."""
        below = [[*self.decoder.parameters(), *self.likelihood.parameters()]]
        below += [list(layer.parameters()) for layer in self.layers]
        below[-1] = below[-1] + list(self.prior.parameters())
        return dict(zip(self.sites, below, strict=True))

    def _decode(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.num_classes:
            if y is None:
                raise PyroVAEError("a conditional VAE needs the labels y")
            z = with_label(z, y, self.num_classes)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        sites = self.sites
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(sites[-1], self.prior())  # (B, d), or (K, B, d) with particles
            for name, layer in zip(sites[-2::-1], self.layers[::-1], strict=True):
                z = pyro.sample(name, layer(z))  # p(z_l|z_{l+1}), top down
            pyro.sample("x", self.likelihood(self._decode(z, y)), obs=x)  # x: (B, D)
        return z

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E_θ[x|z] (or E_θ[x|z, y]), the likelihood's mean for codes z (…, d): shape (…, D).
        With several layers z is the bottom layer's z1."""
        return self.likelihood(self._decode(z, y)).mean

    @torch.no_grad()
    def generate(self, num: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z] for z ~ p(z), shape (num, D): the likelihood's mean (pixel probabilities).
        With several layers, ancestral: z_L ~ p(z_L), z_l ~ p(z_l|z_{l+1}), then E[x|z1]."""
        z = self.prior().sample((num,))  # (num, d_L)
        for layer in self.layers[::-1]:
            z = layer(z).sample()
        return self.mean(z, y)
