"""Priors (normal, mixture, VampPrior) against hand-written densities; the 28×28 conv nets."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

from pyrovae.core.errors import PyroVAEError, ShapeError
from pyrovae.core.runtime import set_seed
from pyrovae.guides import families
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.models.prior import PRIORS, MixturePrior, StandardNormalPrior, VampPrior
from pyrovae.nets import MLP, NETS, ConvDecoder, ConvEncoder
from pyrovae.nets.conv import conv_sides

D = 784  # pixels
LATENT = 3


def diagonal_normal(latent_dim: int):
    """The diagonal-normal guide family, as a module class ``DiagonalNormal(d)`` or an instance."""
    family = families.DiagonalNormal
    if isinstance(family, type) and issubclass(family, nn.Module):
        return family(latent_dim)
    return family()


def tiny_guide(latent_dim: int = LATENT) -> AmortizedGuide:
    return AmortizedGuide(MLP(D, (16,), 2 * latent_dim), diagonal_normal(latent_dim))


# priors over continuous codes; the discrete ones are tested in test_discrete_codes.py
# p(z) over a continuous code; the conditional prior p(z|c) is tested in test_conditional_prior.py
CONTINUOUS = sorted(
    name
    for name, prior in PRIORS.items()
    if prior.code == "continuous" and not getattr(prior, "conditional", False)
)


def make_prior(name: str, latent_dim: int = LATENT, **kwargs):
    guide = tiny_guide(latent_dim)
    return PRIORS[name](latent_dim, guide=guide, num_pixels=D, **kwargs), guide


# ---------------------------------------------------------------- every registered prior


@pytest.mark.parametrize("name", CONTINUOUS)
def test_prior_shapes_and_finite_log_prob(name):
    set_seed(0)
    prior, _ = make_prior(name)
    p = prior()
    assert p.batch_shape == () and p.event_shape == (LATENT,)
    assert p.sample().shape == (LATENT,)
    z = p.sample((7,))
    assert z.shape == (7, LATENT)
    lp = p.log_prob(z)
    assert lp.shape == (7,) and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", CONTINUOUS)
def test_prior_broadcasts_over_particle_and_data_plates(name):
    # The model samples z inside plate "data" (and a particle plate when vectorized): the
    # prior's batch shape () must expand to (K, B) with one log-density per (particle, datapoint).
    set_seed(0)
    prior, _ = make_prior(name)

    def model():
        with pyro.plate("particles", 4, dim=-2), pyro.plate("data", 5, dim=-1):
            return pyro.sample("z", prior())

    trace = poutine.trace(model).get_trace()
    site = trace.nodes["z"]
    assert site["value"].shape == (4, 5, LATENT)
    lp = site["fn"].log_prob(site["value"])
    assert lp.shape == (4, 5)
    # Expansion changes nothing but the shape: each entry is the unexpanded prior's density.
    torch.testing.assert_close(lp, prior().log_prob(site["value"]), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_learned_priors_get_gradients_and_normal_has_no_parameters(name):
    set_seed(0)
    prior, _ = make_prior(name)
    params = list(prior.parameters())
    assert prior.learned == bool(params)
    if not prior.learned:
        assert name == "normal"
        return
    z = torch.randn(11, LATENT)
    prior().log_prob(z).sum().backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0


def test_normal_prior_is_the_standard_normal():
    z = torch.randn(6, LATENT, dtype=torch.float64)
    expected = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    lp = StandardNormalPrior(LATENT).double()().log_prob(z)
    torch.testing.assert_close(lp, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [MixturePrior, VampPrior])
def test_learned_priors_are_reproducible_from_the_seed(cls):
    def build():
        set_seed(3)
        return cls(LATENT, guide=tiny_guide(), num_pixels=D).state_dict()

    a, b = build(), build()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key])


# ---------------------------------------------------------------- mixture of Gaussians


def mixture_log_prob_by_hand(logits, means, scales, z):
    """log Σ_c π_c N(z; μ_c, diag σ_c²) with a log-sum-exp over c."""
    log_pi = logits - torch.logsumexp(logits, 0)  # (C,)
    diff = (z[:, None, :] - means) / scales  # (n, C, d)
    log_n = (-0.5 * diff**2 - scales.log() - 0.5 * math.log(2 * math.pi)).sum(-1)  # (n, C)
    return torch.logsumexp(log_pi + log_n, dim=1)  # (n,)


def random_mixture(num_components: int = 4) -> MixturePrior:
    set_seed(1)
    prior = MixturePrior(LATENT, num_components=num_components).double()
    with torch.no_grad():  # move away from the uniform-weight, unit-scale start
        prior.logits.normal_()
        prior.rho.normal_()
    return prior


def test_mixture_log_prob_matches_the_formula():
    prior = random_mixture()
    assert prior.logits.shape == (4,) and prior.means.shape == (4, LATENT)
    assert (prior.scales >= MixturePrior.MIN_SCALE).all()
    z = 2 * torch.randn(50, LATENT, dtype=torch.float64)
    expected = mixture_log_prob_by_hand(prior.logits, prior.means, prior.scales, z)
    torch.testing.assert_close(prior().log_prob(z), expected, rtol=1e-10, atol=0)


def test_mixture_with_one_dominant_component_is_that_gaussian():
    prior = random_mixture()
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([100.0, 0.0, 0.0, 0.0]))
    # z near component 0: the others add π_c N_c / (π_0 N_0) ≲ e⁻¹⁰⁰ × (a moderate density
    # ratio), far below double precision's 1e-16.
    z = prior.means[0] + 0.3 * prior.scales[0] * torch.randn(20, LATENT, dtype=torch.float64)
    gaussian = torch.distributions.Independent(
        torch.distributions.Normal(prior.means[0], prior.scales[0]), 1
    )
    torch.testing.assert_close(prior().log_prob(z), gaussian.log_prob(z), rtol=1e-10, atol=0)


def test_mixture_starts_uniform_with_unit_scales():
    set_seed(0)
    prior = MixturePrior(LATENT)
    assert prior.logits.shape == (MixturePrior.NUM_COMPONENTS,)
    torch.testing.assert_close(prior.scales, torch.ones_like(prior.scales), rtol=1e-6, atol=0)
    assert torch.equal(prior.logits, torch.zeros_like(prior.logits))


# ---------------------------------------------------------------- VampPrior


def small_vamp(num_components: int = 5) -> tuple[VampPrior, AmortizedGuide]:
    set_seed(2)
    guide = tiny_guide().double()
    prior = VampPrior(LATENT, guide=guide, num_pixels=D, num_components=num_components).double()
    return prior, guide


def test_vamp_log_prob_is_the_mean_of_the_guide_at_the_pseudo_inputs():
    prior, guide = small_vamp()
    u = prior.pseudo_inputs  # (C, D)
    assert u.shape == (5, D) and (u > 0).all() and (u < 1).all()
    z = torch.randn(30, LATENT, dtype=torch.float64)
    per_component = torch.stack(
        [guide.posterior(u[c : c + 1]).log_prob(z) for c in range(5)], dim=1
    )  # (n, C), each component q(z|u_c) built on its own
    expected = torch.logsumexp(per_component, dim=1) - math.log(5)
    torch.testing.assert_close(prior().log_prob(z), expected, rtol=1e-10, atol=0)


def test_vamp_owns_only_the_pseudo_inputs_but_its_gradient_reaches_the_encoder():
    prior, guide = small_vamp()
    assert [name for name, _ in prior.named_parameters()] == ["rho"]
    encoder_ids = {id(p) for p in guide.parameters()}
    assert encoder_ids and not encoder_ids & {id(p) for p in prior.parameters()}
    assert not any(k.startswith("_guide") for k in prior.state_dict())
    # A container holding the prior (as the model does) must not see the encoder either.
    holder = nn.ModuleDict({"prior": prior})
    assert not encoder_ids & {id(p) for p in holder.parameters()}

    z = torch.randn(8, LATENT, dtype=torch.float64)
    prior().log_prob(z).sum().backward()
    assert prior.rho.grad is not None and prior.rho.grad.abs().sum() > 0
    for p in guide.parameters():  # shared: log p(z) depends on φ through q_φ(z|u)
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs", [{}, {"guide": "guide"}, {"num_pixels": D}])
def test_vamp_without_guide_or_pixels_is_a_one_line_error(kwargs):
    if kwargs.get("guide") == "guide":
        kwargs = {"guide": tiny_guide()}
    with pytest.raises(PyroVAEError) as info:
        VampPrior(LATENT, **kwargs)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- conv nets


def test_nets_registry_pairs_encoder_and_decoder():
    assert NETS["mlp"] == (MLP, MLP)
    assert NETS["conv"] == (ConvEncoder, ConvDecoder)


@pytest.mark.parametrize("in_dim", [D, D + 10])
def test_conv_encoder_shapes_with_leading_dims(in_dim):
    torch.manual_seed(0)
    enc = ConvEncoder(in_dim, (32,), 2 * LATENT, "relu")
    x = torch.rand(3, 4, in_dim)  # (K, B, in_dim)
    out = enc(x)
    assert out.shape == (3, 4, 2 * LATENT)
    # Leading dims are only flattened: each row is what the encoder gives that row alone.
    torch.testing.assert_close(out[1, 2], enc(x[1, 2]), rtol=1e-5, atol=1e-6)
    assert enc(x[0]).shape == (4, 2 * LATENT)


@pytest.mark.parametrize("out_dim", [D, 2 * D])
def test_conv_decoder_shapes_with_leading_dims(out_dim):
    torch.manual_seed(0)
    dec = ConvDecoder(LATENT, (32,), out_dim, "relu")
    z = torch.randn(3, 4, LATENT)
    out = dec(z)
    assert out.shape == (3, 4, out_dim) and torch.isfinite(out).all()
    torch.testing.assert_close(out[2, 1], dec(z[2, 1]), rtol=1e-5, atol=1e-6)
    flat = out.reshape(12, out_dim)
    assert (flat[1:] - flat[0]).abs().amax(dim=1).min() > 0  # every input gives its own output


def test_conv_encoder_uses_the_extra_features():
    torch.manual_seed(0)
    enc = ConvEncoder(D + 10, (32,), 2 * LATENT, "relu")
    x = torch.rand(4, D + 10)
    x_other = x.clone()
    x_other[:, D:] = torch.roll(x[:, D:], 1, dims=1)  # same image, different extras
    assert (enc(x) - enc(x_other)).abs().amax(dim=1).min() > 1e-4


@pytest.mark.parametrize("cls,in_dim,out_dim", [(ConvEncoder, D + 10, 6), (ConvDecoder, 5, 2 * D)])
def test_conv_nets_gradients_reach_every_parameter(cls, in_dim, out_dim):
    torch.manual_seed(0)
    net = cls(in_dim, (32, 16), out_dim, "softplus")
    x = torch.rand(2, 3, in_dim)
    net(x).pow(2).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_conv_encoder_reads_images_row_major():
    # Identity readout (out = the 64×7×7 conv features): shifting the image 4 columns right
    # (two stride-2 convs) must shift the interior feature map by exactly one column, a check
    # that fails if the flat input were read as columns (a transposed image).
    torch.manual_seed(0)
    enc = ConvEncoder(D, (), 64 * 49, "relu")
    with torch.no_grad():
        enc.head[0].weight.copy_(torch.eye(64 * 49))
        enc.head[0].bias.zero_()
    image = torch.rand(28, 28)
    shifted = torch.zeros(28, 28)
    shifted[:, 4:] = image[:, :24]
    features = enc(torch.stack([image, shifted]).flatten(1)).reshape(2, 64, 7, 7)
    # Feature (r, c) sees input rows/cols 4c−3 … 4c+6: inside the image, no padding, for 1 ≤ c ≤ 5.
    torch.testing.assert_close(features[1, :, 1:6, 2:6], features[0, :, 1:6, 1:5])
    assert not torch.allclose(features[1, :, 1:6, 1:5], features[0, :, 1:6, 1:5])


def test_conv_decoder_output_is_channel_major_row_major_pixels():
    # A decoder whose 64×7×7 map is one unit at (channel 0, row 1, col 5), upsampled by kernels
    # with a single tap at (1, 1): ConvT(4, stride 2, pad 1) sends input i to output 2i − 1 + k,
    # so k = 1 gives 2i; twice, 4i. Parameter channel c of pixel (4, 20) must be output
    # entry c·784 + 28·4 + 20, and nothing else may be nonzero.
    dec = ConvDecoder(LATENT, (), 2 * D, "relu")
    with torch.no_grad():
        for p in dec.parameters():
            p.zero_()
        dec.head[0][0].bias[0 * 49 + 1 * 7 + 5] = 1.0
        dec.deconv[0].weight[0, 0, 1, 1] = 1.0  # (in, out, kh, kw)
        dec.deconv[2].weight[0, 0, 1, 1] = 2.0  # parameter channel 0
        dec.deconv[2].weight[0, 1, 1, 1] = 3.0  # parameter channel 1
    out = dec(torch.randn(2, LATENT))  # (2, 1568), the same for every z
    expected = torch.zeros(2, 2 * D)
    expected[:, 28 * 4 + 20] = 2.0
    expected[:, D + 28 * 4 + 20] = 3.0
    assert torch.equal(out, expected)
    # Channel 0 viewed as an image (inverse of images.flatten(1)): the tap at row 4, column 20.
    assert out[0, :D].reshape(28, 28)[4, 20] == 2.0


@pytest.mark.parametrize(
    "build",
    [lambda: ConvEncoder(700, (8,), 4, "relu"), lambda: ConvDecoder(4, (8,), 700, "relu")],
    ids=["encoder-too-few-pixels", "decoder-not-a-multiple-of-784"],
)
def test_conv_nets_refuse_non_28x28_sizes(build):
    with pytest.raises(PyroVAEError) as info:
        build()
    assert "\n" not in str(info.value)


ODD_SHAPES = [(3, 21, 17), (1, 5, 7), (3, 32, 32), (1, 28, 28)]


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv_sizes_are_computed_for_any_shape(shape):
    """⌊s/2⌋ per convolution (21 → 10 → 5, 17 → 8 → 4); the decoder's output padding brings
    odd sides back, so it makes exactly (P·C, H, W) for P = 2 parameters per value."""
    c, h, w = shape
    d = c * h * w
    assert conv_sides(21) == [21, 10, 5] and conv_sides(17) == [17, 8, 4]
    torch.manual_seed(0)
    enc = ConvEncoder(d + 3, (16,), 6, "relu", image_shape=shape)
    dec = ConvDecoder(LATENT, (16,), 2 * d, "relu", image_shape=shape)
    assert enc.head[0].in_features == 64 * conv_sides(h)[-1] * conv_sides(w)[-1] + 3
    assert enc(torch.rand(2, 4, d + 3)).shape == (2, 4, 6)
    z = torch.randn(4, LATENT)
    h2 = dec.head(z).reshape(4, *dec.feature_shape)
    full = dec.deconv(h2)
    assert full.shape == (4, 2 * c, h, w)  # not one pixel short on an odd side
    assert torch.equal(dec(z), full.reshape(4, 2 * d))


def test_conv_decoder_layout_on_an_odd_colour_shape():
    """A single unit at (row 1, col 0) of the 64×h×w map, single-tap kernels at (1, 1): it lands
    at output (4, 0) of parameter channel k = p·C + c, i.e. entry p·D + c·H·W + W·4 + 0."""
    shape = (3, 9, 7)
    d = 3 * 9 * 7
    dec = ConvDecoder(LATENT, (), 2 * d, "relu", image_shape=shape)
    _, fh, fw = dec.feature_shape
    assert (fh, fw) == (2, 1)
    with torch.no_grad():
        for p in dec.parameters():
            p.zero_()
        dec.head[0][0].bias[0 * fh * fw + 1 * fw + 0] = 1.0  # channel 0, row 1, col 0
        dec.deconv[0].weight[0, 0, 1, 1] = 1.0
        dec.deconv[2].weight[0, 4, 1, 1] = 5.0  # output channel 4 = parameter 1, colour 1
    out = dec(torch.randn(1, LATENT))[0]
    expected = torch.zeros(2 * d)
    expected[1 * d + 1 * 63 + 7 * 4 + 0] = 5.0
    assert torch.equal(out, expected)


@pytest.mark.parametrize("shape", [(3, 3, 8), (1, 1, 50)])
def test_conv_nets_refuse_images_too_small(shape):
    d = shape[0] * shape[1] * shape[2]
    for build in (
        lambda: ConvEncoder(d, (8,), 4, image_shape=shape),
        lambda: ConvDecoder(4, (8,), d, image_shape=shape),
    ):
        with pytest.raises(ShapeError, match="at least 4×4 pixels") as info:
            build()
        assert "\n" not in str(info.value) and "--net mlp" in str(info.value)
