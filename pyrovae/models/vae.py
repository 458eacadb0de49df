"""The generative model p(z) p_θ(x|z) (or p_θ(x|z, y)) as a Pyro model function."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import with_label
from pyrovae.core.modules import LocalPyroModule


class VAE(LocalPyroModule):
    """p(z) p_θ(x|z) with sites ``"z"`` (latent) and ``"x"`` (observed) in plate ``"data"``.

    Composed of its parts: ``prior()`` gives p(z), ``decoder(z)`` the likelihood's parameters and
    ``likelihood(params)`` p_θ(x|z). With ``num_classes`` > 0 it is a conditional VAE: the
    decoder sees [z, onehot(y)], i.e. p_θ(x|z, y), and the prior stays p(z). ``image_shape``
    (C, H, W) says how a flattened x (D = C·H·W, channel-major) is an image, for figures
    (None: square grey images, D = side²).
    """

    def __init__(
        self,
        prior: nn.Module,
        decoder: nn.Module,
        likelihood: nn.Module,
        num_classes: int = 0,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.num_classes = num_classes
        self.image_shape = None if image_shape is None else tuple(image_shape)

    def _decode(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if self.num_classes:
            if y is None:
                raise PyroVAEError("a conditional VAE needs the labels y")
            z = with_label(z, y, self.num_classes)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())  # (B, d), or (K, B, d) with vectorized particles
            pyro.sample("x", self.likelihood(self._decode(z, y)), obs=x)  # x: (B, D)
        return z

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """E_θ[x|z] (or E_θ[x|z, y]), the likelihood's mean for codes z (…, d): shape (…, D)."""
        return self.likelihood(self._decode(z, y)).mean

    @torch.no_grad()
    def generate(self, num: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z] for z ~ p(z), shape (num, D): the likelihood's mean (pixel probabilities)."""
        return self.mean(self.prior().sample((num,)), y)  # z: (num, d)
