"""Assemble model and guide from a configuration, reading every part from its registry."""

from __future__ import annotations

from pyrovae.core.registry import lookup
from pyrovae.guides.families import GUIDES
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import PRIORS
from pyrovae.models.vae import VAE
from pyrovae.nets import NETS
from pyrovae.runs.config import TrainConfig


def build_model_and_guide(
    config: TrainConfig, num_pixels: int, num_classes: int = 10
) -> tuple[VAE, AmortizedGuide]:
    """p(z) p_θ(x|z) and q_φ(z|x) for ``num_pixels``-dimensional data, as ``config`` describes.

    With ``config.conditional`` the encoder sees [x, onehot(y)] and the decoder [z, onehot(y)]
    for ``num_classes`` labels; the prior stays p(z).
    """
    likelihood = get_likelihood(config.likelihood, config.pixels)(num_pixels)
    family = lookup(GUIDES, config.guide, "guide")(config.latent_dim)
    encoder_cls, decoder_cls = lookup(NETS, config.net, "network")
    labels = num_classes if config.conditional else 0
    encoder = encoder_cls(num_pixels + labels, config.hidden, family.num_params, config.activation)
    decoder = decoder_cls(
        config.latent_dim + labels,
        config.hidden[::-1],
        num_pixels * likelihood.params_per_pixel,
        config.activation,
    )
    guide = AmortizedGuide(encoder, family, num_classes=labels)
    prior = lookup(PRIORS, config.prior, "prior")(
        config.latent_dim, guide=guide, num_pixels=num_pixels
    )
    return VAE(prior, decoder, likelihood, num_classes=labels), guide
