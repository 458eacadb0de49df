"""Conditional runs: what a run conditions on (a label, or observed pixels), the three models of
structured output prediction (Sohn, Lee & Yan 2015) and the baseline that feeds one.

``--conditional-model`` picks how a conditional run is built (``CONDITIONAL_MODELS``):

- ``cvae``: p(z|c) p_θ(x|z, c) with a recognition network q_φ(z|x, c): the conditional VAE.
- ``gsnn``: the same model trained with q = p(z|c) (the Gaussian stochastic neural network):
  its bound is E_{p(z|c)}[log p_θ(x|z, c)], the KL term is zero.
- ``baseline``: no latent: a deterministic network c ↦ the likelihood's parameters.

With ``--baseline-input RUN`` the baseline run's network, frozen, predicts ŷ from x_obs and ŷ
joins the context that the prior, recognition and generation networks read (the paper feeds it
to the first two; here it is part of c, so the decoder reads it too).

Each builder takes (config, num_pixels, shape, condition, build_vae) and returns (model, guide);
``build_vae`` is :func:`~pyrovae.runs.build.build_vae` (passed in: that module imports this one).
Settings are typed ``Any`` like :mod:`~pyrovae.runs.combinations`'s: config imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from pyrovae.core.labels import LabelCondition
from pyrovae.guides.guide import AmortizedGuide, PriorEncoder
from pyrovae.models.baseline import DeterministicBaseline, NoLatents
from pyrovae.models.condition import ObservedPixels, observed_mask
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.nets.dense import MLP


def build_cvae(config: Any, num_pixels: int, shape, condition, build_vae: Callable):
    """p(z|c) (or p(z)) p_θ(x|z, c) and the recognition network q_φ(z|x, c)."""
    return build_vae(config, num_pixels, shape, condition)


def build_gsnn(config: Any, num_pixels: int, shape, condition, build_vae: Callable):
    """The CVAE's model with its guide replaced by the prior: q(z|x, c) = p(z|c)."""
    model, _ = build_vae(config, num_pixels, shape, condition)
    prior = model.prior
    guide = AmortizedGuide(PriorEncoder(prior, num_pixels), prior.family, condition=condition)
    return model, guide


def build_baseline(config: Any, num_pixels: int, shape, condition, build_vae: Callable = None):
    """The deterministic baseline p_θ(x|c) = likelihood(MLP(c)) and an empty guide."""
    likelihood = get_likelihood(config.likelihood, config.pixels)(num_pixels)
    net = MLP(
        condition.size, config.hidden, num_pixels * likelihood.params_per_pixel, config.activation
    )
    return DeterministicBaseline(net, likelihood, condition, shape), NoLatents()


class ConditionalModel:
    """A registry entry: its builder and its one-line description."""

    def __init__(self, build: Callable, description: str) -> None:
        self.build = build
        self.description = description


CONDITIONAL_MODELS: dict[str, ConditionalModel] = {
    "cvae": ConditionalModel(build_cvae, "recognition network q(z|x, c): the conditional VAE"),
    "gsnn": ConditionalModel(build_gsnn, "trained with q = p(z|c) (--prior conditional): GSNN"),
    "baseline": ConditionalModel(build_baseline, "no latent: a network from c to p(x|c)"),
}


def make_condition(
    config: Any, num_pixels: int, num_classes: int, shape: Sequence[int]
) -> nn.Module | None:
    """The run's condition: the label's (``--conditional``), observed pixels
    (``--condition-on``, with the frozen baseline of ``--baseline-input``), or None."""
    if config.conditional:
        return LabelCondition(num_classes)
    if config.condition_on is None:
        return None
    observed = observed_mask(config.condition_on, shape).reshape(-1)
    baseline = None
    if config.baseline_input is not None:
        baseline, _ = build_baseline(config, num_pixels, shape, ObservedPixels(observed))
    return ObservedPixels(observed, baseline)
