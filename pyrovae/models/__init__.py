"""Generative models: priors, likelihoods, the VAE model function and the exact PPCA model."""

from pyrovae.models.likelihoods import LIKELIHOODS, Likelihood, get_likelihood
from pyrovae.models.prior import PRIORS, MixturePrior, StandardNormalPrior, VampPrior
from pyrovae.models.vae import VAE

__all__ = [
    "LIKELIHOODS",
    "PRIORS",
    "VAE",
    "Likelihood",
    "MixturePrior",
    "StandardNormalPrior",
    "VampPrior",
    "get_likelihood",
]
