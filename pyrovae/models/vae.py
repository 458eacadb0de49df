"""The generative model p(z) p_θ(x|z) as a Pyro model function."""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyrovae.modules import LocalPyroModule


class VAE(LocalPyroModule):
    """p(z) p_θ(x|z) with sites ``"z"`` (latent) and ``"x"`` (observed) in plate ``"data"``.

    Composed of its parts: ``prior()`` gives p(z), ``decoder(z)`` the likelihood's parameters and
    ``likelihood(params)`` p_θ(x|z).
    """

    def __init__(self, prior: nn.Module, decoder: nn.Module, likelihood) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())  # (B, d), or (K, B, d) with vectorized particles
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)  # x: (B, D)
        return z
