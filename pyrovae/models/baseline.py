"""The deterministic baseline of structured output prediction (Sohn, Lee & Yan 2015): a network
from the condition straight to the likelihood's parameters, no latent variable.

p_θ(x_miss|x_obs) = likelihood(net(x_obs)) over the predicted pixels: trained by any of the
ELBOs with an empty guide, each of which is then log p_θ(x_miss|x_obs) itself, exactly (no
latent site, nothing to sample), and so is the importance-sampled evaluation for every K.
"""

from __future__ import annotations

import pyro
import torch
from torch import nn

from pyrovae.core.modules import LocalPyroModule
from pyrovae.models.condition import masked


class DeterministicBaseline(LocalPyroModule):
    """p_θ(x|c) = likelihood(net(c)) over the condition's ``predicted`` pixels; site ``"x"`` in
    plate ``"data"``, no latent sites. ``net`` maps the context (B, n_c) to (B, D·params)."""

    prior = None  # no latent: no prior, no layers, no sites, no label
    layers: tuple = ()
    sites: tuple[str, ...] = ()
    num_classes = 0

    def __init__(
        self,
        net: nn.Module,
        likelihood: nn.Module,
        condition: nn.Module,
        image_shape: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.likelihood = likelihood
        self.condition = condition
        self.image_shape = None if image_shape is None else tuple(image_shape)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        c = self.condition.context(x, y)  # (B, n_c)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", masked(self.likelihood(self.net(c)), self.condition.predicted), obs=x)

    def predict(self, c: torch.Tensor) -> torch.Tensor:
        """ŷ = E_θ[x|c], the likelihood's mean for every pixel, (B, D)."""
        return self.likelihood(self.net(c)).mean

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num: int = 1) -> torch.Tensor:
        """The one completion of each image x (B, D), E_θ[x_miss|x_obs] with the observed
        pixels copied from x, repeated ``num`` times: (num, B, D)."""
        guess = self.predict(self.condition.context(x))
        return torch.where(self.condition.predicted, guess, x).expand(num, *x.shape)


class NoLatents(LocalPyroModule):
    """The guide of a model without latent sites: it samples nothing."""

    sites: tuple[str, ...] = ()
    num_classes = 0
    layers: tuple = ()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        return None
