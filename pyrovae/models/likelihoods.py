"""Likelihoods p_θ(x|z): the decoder's output ↦ a distribution over a datapoint's D pixels.

Each likelihood is a small ``nn.Module`` built for ``num_pixels`` pixels, so a learned parameter
(the per-pixel scale of ``gaussian-learned``) is part of the model: trained with it, saved in its
``state_dict``. Each declares the pixel modes it is a valid density for: a Bernoulli on grey levels
is not a likelihood (its normalizer is wrong), so that pairing is refused rather than trained.

On grey levels the likelihoods are densities, so log p(x) can be positive and is not comparable
with figures for binarized or 8-bit pixels (probabilities of a discrete x). Every likelihood is
per value: each channel of each pixel has its own parameters (D = C·H·W values per image).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.models.discretized import DiscretizedLogistic

BINARY = frozenset({"dynamic", "static"})
GREY = frozenset({"grey"})
EIGHT_BIT = frozenset({"8bit"})


class Likelihood(nn.Module, ABC):
    """p_θ(x|z) for decoder output ``params`` of shape (..., B, D·params_per_pixel).

    ``forward`` returns a distribution with batch shape (..., B) and event shape (D,). Arguments
    are not validated: a NaN in ``params`` must become a NaN loss, not a ValueError.
    """

    pixels: ClassVar[frozenset[str]]  # the pixel modes this is a valid density for
    params_per_pixel: ClassVar[int] = 1  # decoder outputs per pixel
    smooth: ClassVar[bool] = False  # a density twice differentiable in x (the Fisher objective)

    def __init__(self, num_pixels: int) -> None:
        super().__init__()
        self.num_pixels = num_pixels

    @abstractmethod
    def forward(self, params: torch.Tensor) -> dist.Distribution:
        """p_θ(x|z), one event of D pixels per datapoint."""

    def extra_repr(self) -> str:
        return f"num_pixels={self.num_pixels}"


class BernoulliLikelihood(Likelihood):
    """x_i ~ Bernoulli(σ(ℓ_i)) on binary pixels, ℓ the decoder's logits:
    log p(x_i) = x_i log σ(ℓ_i) + (1 − x_i) log σ(−ℓ_i)."""

    description = "Bernoulli per pixel: binarized images (dynamic, static)"

    pixels = BINARY

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=params, validate_args=False).to_event(1)  # (..., B | D)


class ContinuousBernoulliLikelihood(Likelihood):
    """x_i ~ CB(λ_i) on [0, 1] (Loaiza-Ganem & Cunningham 2019), λ = σ(ℓ), ℓ the logits.

    p(x|λ) = C(λ) λ^x (1 − λ)^(1−x), with C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ) for λ ≠ ½ and
    C(½) = 2 (log C ≈ log 2 + (1 − 2λ)²/3 near ½, where torch switches to that series).
    A proper density on grey levels; on binary pixels it is still a density (on {0, 1} ⊂ [0, 1]).
    """

    description = "continuous Bernoulli on [0, 1]: grey or binary pixels"

    pixels = GREY | BINARY
    smooth = True

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=params, validate_args=False).to_event(1)


class GaussianLikelihood(Likelihood):
    """x_i ~ N(μ_i, σ²) on grey levels, μ the decoder's output, σ = ``SCALE`` fixed:
    log p(x_i) = −½ log 2πσ² − (x_i − μ_i)² / 2σ².

    σ = 0.1 because the reconstruction term is a squared error weighted by 1/2σ²: pixels span 1,
    and a reconstruction that is good up to ~0.1 per pixel should be ~one σ off; σ = 1 would make
    the reconstruction nearly free next to the KL (posterior collapse, blurry samples), σ ≪ 0.1
    turns the VAE into a plain autoencoder. μ is left free (no sigmoid): the density lives on ℝ
    either way, and a sigmoid would only saturate its gradient at the many pixels that are exactly
    0 or 1.
    """

    description = "Normal with σ = 0.1 fixed: squared error on grey pixels"

    pixels = GREY
    smooth = True
    SCALE: ClassVar[float] = 0.1

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return dist.Normal(params, self.SCALE, validate_args=False).to_event(1)


class LearnedGaussianLikelihood(Likelihood):
    """x_i ~ N(μ_i, σ_i²), μ the decoder's output (free, as ``gaussian``), σ a learned (D,) vector.

    σ_i = ``MIN_SCALE`` + softplus(ρ_i), ρ = ``raw_scale`` a parameter of the model (global per
    pixel, not a decoder output). σ starts at ``INIT_SCALE`` = 0.1, the fixed ``gaussian``'s scale.
    The floor 10⁻³ keeps the density bounded, log p(x_i) ≤ −½ log 2π·10⁻⁶ ≈ 6.0 nats: a pixel that
    is constant in the data (a border always 0) would otherwise drive σ_i → 0 and the ELBO → ∞.
    """

    description = "Normal with a learned σ per pixel: grey pixels"

    pixels = GREY
    smooth = True
    MIN_SCALE: ClassVar[float] = 1e-3
    INIT_SCALE: ClassVar[float] = 0.1

    def __init__(self, num_pixels: int) -> None:
        super().__init__(num_pixels)
        raw = math.log(math.expm1(self.INIT_SCALE - self.MIN_SCALE))  # softplus⁻¹
        self.raw_scale = nn.Parameter(torch.full((num_pixels,), raw))  # (D,)

    @property
    def scale(self) -> torch.Tensor:
        """σ, shape (D,), ≥ ``MIN_SCALE``."""
        return self.MIN_SCALE + F.softplus(self.raw_scale)

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return dist.Normal(params, self.scale, validate_args=False).to_event(1)


class LaplaceLikelihood(Likelihood):
    """x_i ~ Laplace(μ_i, b) on grey levels, μ the decoder's output (free), b = ``SCALE`` fixed:
    log p(x_i) = −log 2b − abs(x_i − μ_i) / b.

    b = 0.1/√2, so that its standard deviation √2·b equals the ``gaussian``'s σ = 0.1: the two
    differ only in the shape of the noise (an L1 instead of a squared reconstruction error).
    """

    description = "Laplace with the std of `gaussian`: absolute error on grey pixels"

    pixels = GREY
    SCALE: ClassVar[float] = 0.1 / math.sqrt(2.0)

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return dist.Laplace(params, self.SCALE, validate_args=False).to_event(1)


class DiscretizedLogisticLikelihood(Likelihood):
    """8-bit values x ∈ {0, 1/255, …, 1}: x_i ~ DiscretizedLogistic(μ_i, s_i), one (μ, s) per
    channel of each pixel (Kingma et al. 2016; Salimans et al. 2017 without the mixture).

    params = cat(μ, ρ) (``params_per_pixel`` = 2), s = ``MIN_SCALE`` + softplus(ρ); μ is free.
    A probability, not a density: log p(x) ≤ 0, and −log p(x) / (D ln 2) is the bits per
    dimension of the literature. The floor keeps (x ± δ − μ)/s finite; at s = 10⁻⁴ a bin can
    hold all but ~10⁻⁸ of the mass.
    """

    description = "discretized logistic per channel value: 8-bit images (--pixels 8bit)"

    pixels = EIGHT_BIT
    params_per_pixel = 2
    MIN_SCALE: ClassVar[float] = 1e-4

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        loc, raw = params.chunk(2, dim=-1)  # (..., B, D) each
        scale = self.MIN_SCALE + F.softplus(raw)
        return DiscretizedLogistic(loc, scale, validate_args=False).to_event(1)


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": BernoulliLikelihood,
    "continuous-bernoulli": ContinuousBernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "gaussian-learned": LearnedGaussianLikelihood,
    "laplace": LaplaceLikelihood,
    "discretized-logistic": DiscretizedLogisticLikelihood,
}
"""Likelihoods by name (``--likelihood``): name ↦ the class of p_θ(x|z) given the decoder."""


def get_likelihood(name: str, pixels: str) -> type[Likelihood]:
    """The registered likelihood class ``name``, checked against the pixel mode it will see."""
    likelihood = lookup(LIKELIHOODS, name, "likelihood")
    if pixels not in likelihood.pixels:
        accepted = ", ".join(sorted(likelihood.pixels))
        fitting = ", ".join(sorted(n for n, c in LIKELIHOODS.items() if pixels in c.pixels))
        modes = " or ".join(sorted(likelihood.pixels))
        hint = f"use --pixels {modes} with it, or for --pixels {pixels} one of: {fitting}"
        raise PyroVAEError(
            f"likelihood {name!r} is not a valid density for --pixels {pixels} "
            f"(it accepts: {accepted}); {hint}"
        )
    return likelihood
