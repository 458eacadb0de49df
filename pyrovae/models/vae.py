"""The generative model p(z) p_θ(x|z) (or p_θ(x|z, y)) as a Pyro model function."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import LabelCondition, joined
from pyrovae.core.modules import LocalPyroModule
from pyrovae.guides.layers import StochasticLayer, latent_sites
from pyrovae.models.condition import masked


class VAE(LocalPyroModule):
    """p(z) p_θ(x|z) with sites ``"z"`` (latent) and ``"x"`` (observed) in plate ``"data"``.

    Composed of its parts: ``prior()`` gives p(z), ``decoder(z)`` the likelihood's parameters and
    ``likelihood(params)`` p_θ(x|z). With a ``condition`` (:mod:`~pyrovae.models.condition`) it
    is a conditional VAE: the decoder sees [z, c] for the context c = condition.context(x, y),
    i.e. p_θ(x|z, c), the likelihood covers the condition's ``predicted`` pixels only (all of
    them for a label, x_miss for observed pixels x_obs), and a ``conditional`` prior is p(z|c)
    (else p(z) stays). ``num_classes`` > 0 is the label's condition, c = onehot(y). ``image_shape``
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
        condition: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.prior = prior
        self.decoder = decoder
        self.likelihood = likelihood
        self.condition = LabelCondition(num_classes) if num_classes else condition
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.layers = nn.ModuleList(layers)

    @property
    def num_classes(self) -> int:
        """C for a label's condition, else 0."""
        return getattr(self.condition, "num_classes", 0)

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

    def context(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """c = condition.context(x, y), (B, n_c); None without a condition. For a label's
        condition x only gives the dtype and device."""
        return None if self.condition is None else self.condition.context(x, y)

    def top_prior(self, c: torch.Tensor | None) -> dist.Distribution:
        """p(z_L|c) for a conditional prior (batch (B,)), else p(z_L) (batch ())."""
        if getattr(self.prior, "conditional", False):
            if c is None:
                raise PyroVAEError("a conditional prior p(z|c) needs a condition")
            return self.prior(c)
        return self.prior()

    def _decode(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(z if c is None else joined(z, c))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        sites = self.sites
        c = self.context(x, y)  # None, or (B, n_c)
        predicted = getattr(self.condition, "predicted", None)  # the pixels p(x|z, c) covers
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(sites[-1], self.top_prior(c))  # (B, d), or (K, B, d) with particles
            for name, layer in zip(sites[-2::-1], self.layers[::-1], strict=True):
                z = pyro.sample(name, layer(z))  # p(z_l|z_{l+1}), top down
            px = masked(self.likelihood(self._decode(z, c)), predicted)
            pyro.sample("x", px, obs=x)  # x: (B, D)
        return z

    def mean(
        self, z: torch.Tensor, y: torch.Tensor | None = None, x: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E_θ[x|z] (or E_θ[x|z, c] for the context of labels y or of images x), the
        likelihood's mean for codes z (…, d): shape (…, D). With several layers z is the bottom
        layer's z1."""
        return self.likelihood(self._decode(z, self.context(z if x is None else x, y))).mean

    @torch.no_grad()
    def generate(self, num: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """E[x|z] for z ~ p(z) (p(z|y) for a conditional prior), shape (num, D): the
        likelihood's mean (pixel probabilities). With several layers, ancestral:
        z_L ~ p(z_L), z_l ~ p(z_l|z_{l+1}), then E[x|z1]. ``y``: (num,) labels or one label."""
        ref = next(self.decoder.parameters())
        c = None
        if self.condition is not None:
            labels = torch.as_tensor(y, device=ref.device).expand(num) if y is not None else None
            c = self.context(ref.new_empty(num, 0), labels)  # (num, n_c)
        return self._ancestral_mean(c, (num,))

    @torch.no_grad()
    def complete(self, x: torch.Tensor, num: int) -> torch.Tensor:
        """``num`` completions of each image x (B, D) from its observed pixels: z ~ p(z|x_obs)
        (or p(z)), x_miss = E_θ[x_miss|z, x_obs], the observed pixels copied from x:
        shape (num, B, D)."""
        c = self.context(x)
        guess = self._ancestral_mean(c, (num, x.shape[0]))  # (num, B, D)
        return torch.where(self.condition.predicted, guess, x)

    def _ancestral_mean(self, c: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
        """E_θ[x|z1, c] for draws z_L ~ p(z_L|c), z_l ~ p(z_l|z_{l+1}) of leading ``shape``
        (the conditional prior's own batch shape, that of c, included): (*shape, D)."""
        prior = self.top_prior(c)
        z = prior.sample(shape[: len(shape) - len(prior.batch_shape)])  # (*shape, d_L)
        for layer in self.layers[::-1]:
            z = layer(z).sample()
        return self.likelihood(self._decode(z, c)).mean
