"""Assemble model and guide from a configuration, reading every part from its registry."""

from __future__ import annotations

from collections.abc import Sequence

from pyrovae.core.registry import lookup
from pyrovae.data.base import square_shape
from pyrovae.guides.families import GUIDES
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import PRIORS
from pyrovae.models.vae import VAE
from pyrovae.nets import NETS
from pyrovae.runs.config import TrainConfig


def build_model_and_guide(
    config: TrainConfig,
    num_pixels: int,
    num_classes: int = 10,
    image_shape: Sequence[int] | None = None,
) -> tuple[VAE, AmortizedGuide]:
    """p(z) p_θ(x|z) and q_φ(z|x) for ``num_pixels``-dimensional data, as ``config`` describes.

    ``image_shape`` (C, H, W), C·H·W = ``num_pixels`` (default (1, s, s) for D = s²), is what
    the networks are built for (the conv net needs it; the MLP flattens) and figures draw.

    With ``config.conditional`` the encoder sees [x, onehot(y)] and the decoder [z, onehot(y)]
    for ``num_classes`` labels; the prior stays p(z).
    """
    shape = tuple(image_shape) if image_shape is not None else square_shape(num_pixels)
    likelihood = get_likelihood(config.likelihood, config.pixels)(num_pixels)
    family = lookup(GUIDES, config.guide, "guide")(config.latent_dim)
    encoder_cls, decoder_cls = lookup(NETS, config.net, "network")
    labels = num_classes if config.conditional else 0
    encoder = encoder_cls(
        num_pixels + labels, config.hidden, family.num_params, config.activation, image_shape=shape
    )
    decoder = decoder_cls(
        config.latent_dim + labels,
        config.hidden[::-1],
        num_pixels * likelihood.params_per_pixel,
        config.activation,
        image_shape=shape,
    )
    guide = AmortizedGuide(encoder, family, num_classes=labels)
    prior = lookup(PRIORS, config.prior, "prior")(
        config.latent_dim, guide=guide, num_pixels=num_pixels
    )
    return VAE(prior, decoder, likelihood, num_classes=labels, image_shape=shape), guide
