"""Generative models: priors, decoders, likelihoods and the VAE model function."""

from pyrovae.models.decoders import DECODERS
from pyrovae.models.likelihoods import LIKELIHOODS, Likelihood, get_likelihood
from pyrovae.models.prior import PRIORS, MixturePrior, StandardNormalPrior, VampPrior
from pyrovae.models.vae import VAE

__all__ = [
    "DECODERS",
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "Likelihood",
    "MixturePrior",
    "StandardNormalPrior",
    "VampPrior",
    "get_likelihood",
]
