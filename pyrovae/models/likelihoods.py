"""Likelihoods p_θ(x|z): the decoder's output ↦ a distribution over a datapoint's D pixels.

Each declares the pixel modes it is a valid density for: a Bernoulli on grey levels is not
a likelihood (its normalizer is wrong), so that pairing is refused rather than trained.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import pyro.distributions as dist
import torch

from pyrovae.errors import PyroVAEError
from pyrovae.registry import lookup


@dataclass(frozen=True)
class Likelihood(ABC):
    """A likelihood family: ``make(params)`` with ``params`` of shape (..., D·params_per_pixel)."""

    name: str
    pixels: frozenset[str]
    params_per_pixel: int = 1

    @abstractmethod
    def __call__(self, params: torch.Tensor) -> dist.Distribution:
        """p_θ(x|z) for decoder output ``params``, one event of D pixels per datapoint."""


class BernoulliLikelihood(Likelihood):
    """x_i ~ Bernoulli(σ(ℓ_i)) on binary pixels; ℓ the decoder's logits."""

    def __call__(self, params: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=params, validate_args=False).to_event(1)


class ContinuousBernoulliLikelihood(Likelihood):
    """x_i ~ CB(λ_i) on grey levels in [0, 1] (Loaiza-Ganem & Cunningham 2019), λ = σ(ℓ)."""

    def __call__(self, params: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=params, validate_args=False).to_event(1)


BINARY = frozenset({"dynamic", "static"})
GREY = frozenset({"grey"})

LIKELIHOODS: dict[str, Likelihood] = {
    "bernoulli": BernoulliLikelihood("bernoulli", BINARY),
    "continuous-bernoulli": ContinuousBernoulliLikelihood("continuous-bernoulli", GREY | BINARY),
}


def get_likelihood(name: str, pixels: str) -> Likelihood:
    """The registered likelihood ``name``, checked against the pixel mode it will see."""
    likelihood = lookup(LIKELIHOODS, name, "likelihood")
    if pixels not in likelihood.pixels:
        accepted = ", ".join(sorted(likelihood.pixels))
        raise PyroVAEError(
            f"likelihood {name!r} is not a valid density for --pixels {pixels} "
            f"(it accepts: {accepted}); binarize the data or pick a likelihood for grey levels"
        )
    return likelihood
