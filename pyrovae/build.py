"""Assemble model and guide from a configuration, reading every part from its registry."""

from __future__ import annotations

from pyrovae.config import TrainConfig
from pyrovae.guides.encoders import ENCODERS
from pyrovae.guides.families import GUIDES
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.models.decoders import DECODERS
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import PRIORS
from pyrovae.models.vae import VAE
from pyrovae.registry import lookup


def build_model_and_guide(config: TrainConfig, num_pixels: int) -> tuple[VAE, AmortizedGuide]:
    """p(z) p_θ(x|z) and q_φ(z|x) for ``num_pixels``-dimensional data, as ``config`` describes."""
    likelihood = get_likelihood(config.likelihood, config.pixels)
    family = lookup(GUIDES, config.guide, "guide")
    prior = lookup(PRIORS, config.prior, "prior")(config.latent_dim)
    decoder = DECODERS["mlp"](
        config.latent_dim,
        config.hidden[::-1],
        num_pixels * likelihood.params_per_pixel,
        config.activation,
    )
    encoder = ENCODERS["mlp"](
        num_pixels, config.hidden, family.num_params(config.latent_dim), config.activation
    )
    return VAE(prior, decoder, likelihood), AmortizedGuide(encoder, family)
