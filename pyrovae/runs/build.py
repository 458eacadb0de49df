"""Assemble model and guide from a configuration, reading every part from its registry."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.infer import ELBO

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.memory import available_bytes, format_bytes
from pyrovae.core.registry import lookup
from pyrovae.core.runtime import get_rng_state, set_rng_state
from pyrovae.data.base import TrainingData, square_shape
from pyrovae.guides.families import GUIDES, DiagonalNormal
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.guides.layers import StochasticLayer
from pyrovae.inference.estimators import estimator_entry, make_estimator
from pyrovae.inference.nvil import NVILBaseline
from pyrovae.inference.semi_supervised import SemiSupervisedELBO, paper_alpha
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import PRIORS
from pyrovae.models.semi_supervised import M2, M2Guide
from pyrovae.models.vae import VAE
from pyrovae.nets import MLP, NETS
from pyrovae.runs.conditional import CONDITIONAL_MODELS, make_condition
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
    for ``num_classes`` labels; with ``config.condition_on`` they see the observed pixels x_obs
    instead and the likelihood covers the others (:mod:`~pyrovae.runs.conditional`, which also
    builds ``config.conditional_model``'s GSNN and baseline). ``--prior conditional`` makes the
    prior p(z|c) of that context; any other prior stays p(z).

    With several latent sizes d1, …, dL (bottom first) both get L stochastic layers (Burda et
    al. 2015): the encoder and decoder above connect x and z1 as for one layer; between z_{l−1}
    and z_l an MLP over ``config.layer_hidden`` gives the guide's q(z_l|z_{l−1}) (the
    ``config.guide`` family) and one over those sizes reversed the model's diagonal-Normal
    p(z_{l−1}|z_l); the prior is over z_L.

    An estimator whose class sets ``needs_baseline_net`` (``nvil``) gets its baseline network
    b_ψ(x) in the guide (``guide.baseline``): trained by the same optimizer, saved with the guide.
    """
    shape = tuple(image_shape) if image_shape is not None else square_shape(num_pixels)
    if config.semi_supervised:
        return build_m2(config, num_pixels, num_classes, shape)
    condition = make_condition(config, num_pixels, num_classes, shape)
    entry = lookup(CONDITIONAL_MODELS, config.conditional_model, "conditional model")
    return entry.build(config, num_pixels, shape, condition, build_vae)


def build_vae(
    config: TrainConfig, num_pixels: int, shape: tuple[int, int, int], condition=None
) -> tuple[VAE, AmortizedGuide]:
    """The VAE of :func:`build_model_and_guide`, conditioned on ``condition``'s context c
    (:mod:`~pyrovae.models.condition`) when there is one: the encoder reads [x, c], the decoder
    [z, c], a conditional prior c."""
    dims = config.latent_dims
    family_cls = lookup(GUIDES, config.guide, "guide")
    likelihood = get_likelihood(config.likelihood, config.pixels)(num_pixels)
    family = family_cls(dims[0], categories=config.categories)
    encoder_cls, decoder_cls = lookup(NETS, config.net, "network")
    extra = condition.size if condition is not None else 0  # n_c, the context's length
    encoder = encoder_cls(
        num_pixels + extra, config.hidden, family.num_params, config.activation, image_shape=shape
    )
    decoder = decoder_cls(
        family.code_dim + extra,  # a discrete code's value: G·C one-hot or n binary units
        config.hidden[::-1],
        num_pixels * likelihood.params_per_pixel,
        config.activation,
        image_shape=shape,
    )
    hidden, act = config.layer_hidden, config.activation
    up, down = [], []  # q(z_l|z_{l−1}) and p(z_{l−1}|z_l), l = 2…L
    for below, above in zip(dims[:-1], dims[1:], strict=True):
        q = family_cls(above)
        up.append(StochasticLayer(MLP(below, hidden, q.num_params, act), q))
        p = DiagonalNormal(below)
        down.append(StochasticLayer(MLP(above, hidden[::-1], p.num_params, act), p))
    # an estimator that trains a network of its own alongside φ declares it (NVIL's baseline)
    estimator = estimator_entry(config.estimator)
    baseline = NVILBaseline(num_pixels) if getattr(estimator, "needs_baseline_net", False) else None
    guide = AmortizedGuide(encoder, family, layers=up, baseline=baseline, condition=condition)
    prior = lookup(PRIORS, config.prior, "prior")(
        dims[-1],
        guide=guide,
        num_pixels=num_pixels,
        context_dim=extra,
        hidden=config.hidden,
        activation=act,
    )
    model = VAE(prior, decoder, likelihood, image_shape=shape, layers=down, condition=condition)
    return model, guide


def build_m2(
    config: TrainConfig, num_pixels: int, num_classes: int, shape: tuple[int, int, int]
) -> tuple[M2, M2Guide]:
    """M2 (Kingma et al. 2014) for ``num_classes`` classes from the same parts as the VAE: the
    classifier q(y|x) is an MLP over ``config.hidden`` (D → C), the encoder of q(z|x, y) one
    over [x, onehot(y)] into the ``config.guide`` family, the decoder one over [z, onehot(y)]
    (sizes reversed) into ``config.likelihood``; p(z) is the ``config.prior``."""
    d, act = config.latent_dim, config.activation
    family = lookup(GUIDES, config.guide, "guide")(d)
    likelihood = get_likelihood(config.likelihood, config.pixels)(num_pixels)
    classifier = MLP(num_pixels, config.hidden, num_classes, act)
    encoder = MLP(num_pixels + num_classes, config.hidden, family.num_params, act)
    decoder = MLP(
        d + num_classes, config.hidden[::-1], num_pixels * likelihood.params_per_pixel, act
    )
    guide = M2Guide(classifier, encoder, family, num_classes)
    prior = lookup(PRIORS, config.prior, "prior")(d, guide=guide, num_pixels=num_pixels)
    return M2(prior, decoder, likelihood, num_classes, image_shape=shape), guide


def build_estimator(config: TrainConfig, data: TrainingData) -> ELBO | str:
    """The objective a run trains: M2's J^α for ``config.semi_supervised`` (α: ``config.alpha``,
    or the paper's 0.1·N with N all training images), the Fisher objective with Hutchinson's
    Laplacian for ``config.hutchinson_probes``, else the ``config.estimator`` name."""
    if config.hutchinson_probes is not None:
        return make_estimator(
            config.estimator, config.num_particles, probes=config.hutchinson_probes
        )
    if not config.semi_supervised:
        return config.estimator
    n_l, n_u = data.num_labelled, data.num_train
    alpha = config.alpha if config.alpha is not None else paper_alpha(n_l + n_u)
    return SemiSupervisedELBO(alpha, n_l, n_u, config.num_particles)


# Bytes per parameter while training: the float32 value, its gradient and Adam's two moments.
BYTES_PER_PARAMETER = 16
# Bytes per activation of one datapoint and particle: its value, its gradient and a temporary.
BYTES_PER_ACTIVATION = 12


def estimate_memory(
    config: TrainConfig,
    num_pixels: int,
    num_classes: int = 10,
    image_shape: Sequence[int] | None = None,
) -> int:
    """Bytes one training step needs, roughly: parameters (with gradients and Adam's state)
    plus the activations of a batch of K particles through encoder and decoder.

    The model is built on PyTorch's ``meta`` device, which allocates nothing, so a size that
    would never fit is told in milliseconds. A family that cannot be built there (the flow's
    MADE networks read a value while they are made) is counted as the ``normal`` guide, which
    has the same encoder: its own layers, O(d²), are left out of the estimate.
    """
    state = get_rng_state()  # initialization draws nothing on meta; restored to be sure
    try:
        with torch.device("meta"):
            try:
                model, guide = build_model_and_guide(config, num_pixels, num_classes, image_shape)
            except RuntimeError:
                model, guide = build_model_and_guide(
                    config.replace(guide="normal"), num_pixels, num_classes, image_shape
                )
    finally:
        set_rng_state(state)
    params = {id(p): p.numel() for m in (model, guide) for p in m.parameters()}
    widths = sum(config.hidden) * 2 + num_pixels * (2 + model.likelihood.params_per_pixel)
    family = getattr(guide, "family", None)  # None: a model without latents (a baseline)
    if family is not None:
        widths += family.num_params + 3 * (family.code_dim + sum(config.latent_dims[1:]))
        widths += 2 * sum(config.layer_hidden) * (len(config.latent_dims) - 1)
    rows = config.batch_size * config.num_particles
    return BYTES_PER_PARAMETER * sum(params.values()) + BYTES_PER_ACTIVATION * rows * widths


def check_fits(
    config: TrainConfig,
    num_pixels: int,
    num_classes: int,
    device: torch.device,
    image_shape: Sequence[int] | None = None,
) -> None:
    """A one-line error when :func:`estimate_memory` exceeds the device's free memory."""
    need = estimate_memory(config, num_pixels, num_classes, image_shape)
    free = available_bytes(device)
    if free is not None and need > free:
        raise PyroVAEError(
            f"this model needs about {format_bytes(need)} to train (--hidden "
            f"{' '.join(map(str, config.hidden))}, --latent-dim "
            f"{' '.join(map(str, config.latent_dims))}, "
            f"--batch-size {config.batch_size}, --num-particles {config.num_particles}), more "
            f"than the {format_bytes(free)} free on {device}; choose smaller sizes"
        )
