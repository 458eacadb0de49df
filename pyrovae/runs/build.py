"""Assemble model and guide from a configuration, reading every part from its registry."""

from __future__ import annotations

from pyrovae.core.registry import lookup
from pyrovae.guides.families import GUIDES, DiagonalNormal
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.guides.layers import StochasticLayer
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import PRIORS
from pyrovae.models.vae import VAE
from pyrovae.nets import MLP, NETS
from pyrovae.runs.config import TrainConfig


def build_model_and_guide(
    config: TrainConfig, num_pixels: int, num_classes: int = 10
) -> tuple[VAE, AmortizedGuide]:
    """p(z) p_θ(x|z) and q_φ(z|x) for ``num_pixels``-dimensional data, as ``config`` describes.

    With ``config.conditional`` the encoder sees [x, onehot(y)] and the decoder [z, onehot(y)]
    for ``num_classes`` labels; the prior stays p(z).

    With several latent sizes d1, …, dL (bottom first) both get L stochastic layers (Burda et
    al. 2015): the encoder and decoder above connect x and z1 as for one layer; between z_{l−1}
    and z_l an MLP over ``config.layer_hidden`` gives the guide's q(z_l|z_{l−1}) (the
    ``config.guide`` family) and one over those sizes reversed the model's diagonal-Normal
    p(z_{l−1}|z_l); the prior is over z_L.
    """
    dims = config.latent_dims
    family_cls = lookup(GUIDES, config.guide, "guide")
    likelihood = get_likelihood(config.likelihood, config.pixels)(num_pixels)
    family = family_cls(dims[0])
    encoder_cls, decoder_cls = lookup(NETS, config.net, "network")
    labels = num_classes if config.conditional else 0
    encoder = encoder_cls(num_pixels + labels, config.hidden, family.num_params, config.activation)
    decoder = decoder_cls(
        dims[0] + labels,
        config.hidden[::-1],
        num_pixels * likelihood.params_per_pixel,
        config.activation,
    )
    hidden, act = config.layer_hidden, config.activation
    up, down = [], []  # q(z_l|z_{l−1}) and p(z_{l−1}|z_l), l = 2…L
    for below, above in zip(dims[:-1], dims[1:], strict=True):
        q = family_cls(above)
        up.append(StochasticLayer(MLP(below, hidden, q.num_params, act), q))
        p = DiagonalNormal(below)
        down.append(StochasticLayer(MLP(above, hidden[::-1], p.num_params, act), p))
    guide = AmortizedGuide(encoder, family, num_classes=labels, layers=up)
    prior = lookup(PRIORS, config.prior, "prior")(dims[-1], guide=guide, num_pixels=num_pixels)
    return VAE(prior, decoder, likelihood, num_classes=labels, layers=down), guide
