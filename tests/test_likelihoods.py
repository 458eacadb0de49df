"""Likelihoods: every registry entry's shapes, each log-density against its closed form computed
by hand, the continuous Bernoulli's normalizer, the pixel-mode check, the learned scale.

Closed forms are evaluated in float64 with ``math``; both sides are sums of a few O(10) terms, so
rounding differs by ~1e-15 and a tolerance of 1e-12 still catches any wrong term or constant.
"""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.data.images import PIXEL_MODES
from pyrovae.inference.evaluate import bits_per_dim
from pyrovae.models.likelihoods import (
    LIKELIHOODS,
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    DiscretizedLogisticLikelihood,
    GaussianLikelihood,
    LaplaceLikelihood,
    LearnedGaussianLikelihood,
    Likelihood,
    get_likelihood,
)

D = 6  # pixels in the shape tests
ATOL = 1e-12  # float64 closed forms, see the module docstring

PAIRS = [(name, mode) for name, cls in LIKELIHOODS.items() for mode in sorted(cls.pixels)]
ALL_PAIRS = [(name, mode) for name in LIKELIHOODS for mode in PIXEL_MODES]

# B = 2 datapoints, 3 pixels: decoder outputs (logits or locations) and data in each pixel mode
PARAMS = [[-2.0, 0.0, 3.5], [0.7, -0.3, 8.0]]
BINARY_X = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
GREY_X = [[0.0, 0.25, 1.0], [0.9, 0.5, 0.1]]


def data_for(mode: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Pixels as the data module produces them in ``mode``; grey ones include exact 0 and 1."""
    if PIXEL_MODES[mode].binary:
        return torch.bernoulli(torch.full(shape, 0.5), generator=gen)
    x = torch.rand(shape, generator=gen)
    x.view(-1)[:2] = torch.tensor([0.0, 1.0])
    levels = PIXEL_MODES[mode].levels
    return x if levels is None else (x * levels).round() / levels


def by_hand(log_density, params, x) -> list[float]:
    """Σ_i log p(x_i | params_i) per datapoint, one pixel at a time in Python floats."""
    return [
        math.fsum(map(log_density, row_p, row_x)) for row_p, row_x in zip(params, x, strict=True)
    ]


def log_prob(likelihood: Likelihood, params, x) -> list[float]:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    return likelihood(t(params)).log_prob(t(x)).tolist()


def log_sigmoid(v: float) -> float:
    return -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))


# ---- every registry entry -------------------------------------------------------------------


def test_registry_entries_are_likelihoods():
    for name, cls in LIKELIHOODS.items():
        assert issubclass(cls, Likelihood), name
        assert cls.pixels and cls.pixels <= set(PIXEL_MODES), name  # a typo ("gray") fails here
        assert cls.params_per_pixel >= 1, name


@pytest.mark.parametrize(("name", "pixels"), PAIRS, ids=[f"{n}-{p}" for n, p in PAIRS])
def test_shapes_and_finite(name, pixels):
    """Decoder output (K, B, D·P) with K particles ↦ event (D,), log p(x) of shape (K, B)."""
    gen = torch.Generator().manual_seed(0)
    likelihood = get_likelihood(name, pixels)(num_pixels=D)
    params = torch.randn(2, 3, D * likelihood.params_per_pixel, generator=gen)  # (K, B, D·P)
    x = data_for(pixels, (3, D), gen)  # (B, D), broadcast over the particles
    p = likelihood(params)
    assert p.event_shape == (D,)
    assert p.batch_shape == (2, 3)
    lp = p.log_prob(x)
    assert lp.shape == (2, 3)
    assert torch.isfinite(lp).all()


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_nan_params_give_nan_not_an_error(name):
    """Arguments are not validated, so a diverged decoder shows up as a NaN loss."""
    likelihood = LIKELIHOODS[name](num_pixels=3)
    params = torch.full((2, 3 * likelihood.params_per_pixel), float("nan"))
    assert torch.isnan(likelihood(params).log_prob(torch.full((2, 3), 0.5))).all()


# ---- closed forms ---------------------------------------------------------------------------


def test_bernoulli_closed_form():
    """log p(x) = x log σ(ℓ) + (1 − x) log σ(−ℓ)."""

    def log_density(ell, x):
        return x * log_sigmoid(ell) + (1 - x) * log_sigmoid(-ell)

    expected = by_hand(log_density, PARAMS, BINARY_X)
    assert log_prob(BernoulliLikelihood(3), PARAMS, BINARY_X) == pytest.approx(expected, abs=ATOL)


def cb_log_normalizer(lam: float) -> float:
    """log C(λ), C(λ) = 2 artanh(1 − 2λ) / (1 − 2λ), C(½) = 2."""
    u = 1 - 2 * lam
    return math.log(2.0) if u == 0 else math.log(2 * math.atanh(u) / u)


@pytest.mark.parametrize("x", [BINARY_X, GREY_X], ids=["binary", "grey"])
def test_continuous_bernoulli_closed_form(x):
    """log p(x) = log C(λ) + x log λ + (1 − x) log(1 − λ), λ = σ(ℓ)."""

    def log_density(ell, x):
        lam = 1 / (1 + math.exp(-ell))
        return cb_log_normalizer(lam) + x * log_sigmoid(ell) + (1 - x) * log_sigmoid(-ell)

    expected = by_hand(log_density, PARAMS, x)
    got = log_prob(ContinuousBernoulliLikelihood(3), PARAMS, x)
    assert got == pytest.approx(expected, abs=ATOL)


def gaussian(scale: float):
    """log N(x | μ, σ²) = −½ log 2πσ² − (x − μ)² / 2σ²."""
    return lambda mu, x: -0.5 * math.log(2 * math.pi * scale**2) - (x - mu) ** 2 / (2 * scale**2)


def test_gaussian_closed_form():
    assert GaussianLikelihood.SCALE == 0.1
    expected = by_hand(gaussian(0.1), PARAMS, GREY_X)
    assert log_prob(GaussianLikelihood(3), PARAMS, GREY_X) == pytest.approx(expected, abs=ATOL)


def test_laplace_closed_form():
    """log p(x) = −log 2b − |x − μ| / b, with b = 0.1/√2 (standard deviation √2·b = 0.1)."""
    b = 0.1 / math.sqrt(2)
    assert b == pytest.approx(LaplaceLikelihood.SCALE, rel=1e-15)
    expected = by_hand(lambda mu, x: -math.log(2 * b) - abs(x - mu) / b, PARAMS, GREY_X)
    assert log_prob(LaplaceLikelihood(3), PARAMS, GREY_X) == pytest.approx(expected, abs=ATOL)


def test_learned_gaussian_closed_form():
    """σ_i = 10⁻³ + softplus(ρ_i), starting at 0.1; then the Gaussian density with that σ_i."""
    likelihood = LearnedGaussianLikelihood(3).double()
    assert likelihood.scale.tolist() == pytest.approx([0.1] * 3, rel=1e-7)  # ρ made in float32
    raw = [0.0, -1.0, 2.0]
    with torch.no_grad():
        likelihood.raw_scale.copy_(torch.tensor(raw, dtype=torch.float64))
    scales = [1e-3 + math.log1p(math.exp(r)) for r in raw]
    assert likelihood.scale.tolist() == pytest.approx(scales, abs=1e-15)
    expected = [
        math.fsum(gaussian(s)(mu, x) for s, mu, x in zip(scales, row_p, row_x, strict=True))
        for row_p, row_x in zip(PARAMS, GREY_X, strict=True)
    ]
    assert log_prob(likelihood, PARAMS, GREY_X) == pytest.approx(expected, abs=ATOL)


# ---- the continuous Bernoulli's normalizer --------------------------------------------------

NEAR_HALF = [0.5, 0.5 + 1e-4, 0.5 - 1e-4, 0.499, 0.501]
AWAY = [0.05, 0.3, 0.9]


def cb_log_density(lam: float, x: torch.Tensor) -> torch.Tensor:
    """log p(x|λ) from the likelihood, for a (N,) tensor of points x (one pixel each)."""
    ell = torch.logit(torch.tensor(lam, dtype=torch.float64))
    return ContinuousBernoulliLikelihood(1)(ell.expand(len(x), 1)).log_prob(x[:, None])


@pytest.mark.parametrize("lam", NEAR_HALF + AWAY)
def test_continuous_bernoulli_integrates_to_one(lam):
    """Trapezoid rule, 20001 points: its error is (h²/12)|f'(1) − f'(0)| + O(h⁴), and here
    f' = f·log(λ/(1−λ)), so the tolerance is that bound (≤ 2e-9 for these λ) plus rounding."""
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    f = cb_log_density(lam, x).exp()
    h = 1 / 20000
    bound = h**2 / 12 * abs(math.log(lam / (1 - lam)) * (f[-1] - f[0]).item())
    assert torch.trapezoid(f, x).item() == pytest.approx(1.0, abs=2 * bound + 1e-12)


@pytest.mark.parametrize("lam", NEAR_HALF + AWAY)
def test_continuous_bernoulli_normalizer_closed_form(lam):
    """log C(λ) = log p(0|λ) − log(1 − λ) = log p(1|λ) − log λ equals the closed form."""
    lp = cb_log_density(lam, torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    expected = cb_log_normalizer(lam)
    assert lp[0] - math.log1p(-lam) == pytest.approx(expected, abs=ATOL)
    assert lp[1] - math.log(lam) == pytest.approx(expected, abs=ATOL)


@pytest.mark.parametrize("lam", NEAR_HALF)
def test_continuous_bernoulli_normalizer_near_half(lam):
    """With u = 1 − 2λ, C = 2 artanh(u)/u = 2 + (2/3)u² + (2/5)u⁴ + …, so near ½ the normalizer
    must be 2 plus the quadratic term, up to the remainder ≤ (2/5)u⁴/(1 − u²) and the rounding of
    C ≈ 2 (a few ulps, 4e-16 each)."""
    u = 1 - 2 * lam
    c = math.exp(cb_log_density(lam, torch.tensor([0.0], dtype=torch.float64)).item()) / (1 - lam)
    remainder = 2 * u**4 / (5 * (1 - u**2))
    assert c == pytest.approx(2 + 2 * u**2 / 3, abs=remainder + 1e-14)
    if u != 0:  # and the quadratic term itself is resolved: c − 2 is (2/3)u², not 0
        assert (c - 2) / (2 * u**2 / 3) == pytest.approx(1.0, abs=1e-5)


# ---- pixel modes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "pixels"), ALL_PAIRS, ids=[f"{n}-{p}" for n, p in ALL_PAIRS])
def test_get_likelihood_checks_pixel_mode(name, pixels):
    cls = LIKELIHOODS[name]
    if pixels in cls.pixels:
        assert get_likelihood(name, pixels) is cls
    else:
        with pytest.raises(PyroVAEError, match="not a valid density") as info:
            get_likelihood(name, pixels)
        message = str(info.value)
        assert "\n" not in message
        assert f"it accepts: {', '.join(sorted(cls.pixels))}" in message


def test_get_likelihood_errors():
    with pytest.raises(PyroVAEError, match="'bernoulli' is not a valid density for --pixels grey"):
        get_likelihood("bernoulli", "grey")
    with pytest.raises(PyroVAEError, match="'gaussian' is not a valid density for --pixels dyn"):
        get_likelihood("gaussian", "dynamic")
    with pytest.raises(PyroVAEError, match="unknown likelihood 'poisson'; choose one of: bern"):
        get_likelihood("poisson", "grey")


# ---- the learned scale ----------------------------------------------------------------------


def test_learned_scale_is_a_trained_parameter():
    """ρ is in .parameters() and the state dict, and gets ∂/∂ρ log N(x|μ, σ²) =
    (−1/σ + (x − μ)²/σ³) · σ'(ρ), with σ'(ρ) = sigmoid(ρ), summed over the datapoints."""
    likelihood = LearnedGaussianLikelihood(3).double()
    assert [p is likelihood.raw_scale for p in likelihood.parameters()] == [True]
    assert set(likelihood.state_dict()) == {"raw_scale"}
    raw = [0.3, -2.0, 1.0]
    with torch.no_grad():
        likelihood.raw_scale.copy_(torch.tensor(raw, dtype=torch.float64))
    params, x = torch.tensor(PARAMS, dtype=torch.float64), torch.tensor(GREY_X, dtype=torch.float64)
    likelihood(params).log_prob(x).sum().backward()
    expected = []
    for i, r in enumerate(raw):
        s = 1e-3 + math.log1p(math.exp(r))
        sig = 1 / (1 + math.exp(-r))
        expected.append(
            sum(
                (-1 / s + (xb[i] - pb[i]) ** 2 / s**3) * sig
                for pb, xb in zip(PARAMS, GREY_X, strict=True)
            )
        )
    assert likelihood.raw_scale.grad.tolist() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("raw", [-50.0, -1e4])
def test_learned_scale_is_floored(raw):
    """σ ≥ 10⁻³ however negative ρ gets, so log p(x_i) ≤ −½ log 2π·10⁻⁶ at x = μ: finite."""
    likelihood = LearnedGaussianLikelihood(D)
    with torch.no_grad():
        likelihood.raw_scale.fill_(raw)
    assert (likelihood.scale >= LearnedGaussianLikelihood.MIN_SCALE).all()
    mu = torch.zeros(2, D)
    lp = likelihood(mu).log_prob(mu)
    ceiling = -0.5 * math.log(2 * math.pi * 1e-6) * D
    assert torch.isfinite(lp).all()
    assert lp.tolist() == pytest.approx([ceiling] * 2, rel=1e-5)  # float32


# ---- the discretized logistic ---------------------------------------------------------------


def sigmoid(v: float) -> float:
    return math.exp(log_sigmoid(v))


def discretized_logistic_by_hand(k: int, mu: float, s: float) -> float:
    """P(k) for the value k ∈ {0 … 255}, in the reference's convention: x = k scaled to
    [−1, 1], bin width 2/255, location μ' = 2μ − 1 and scale s' = 2s on that scale; the edge
    bins take the tails (Salimans et al. 2017)."""
    x, m, sc = 2 * k / 255 - 1, 2 * mu - 1, 2 * s
    upper, lower = sigmoid((x + 1 / 255 - m) / sc), sigmoid((x - 1 / 255 - m) / sc)
    if k == 0:
        return upper
    if k == 255:
        return 1 - lower
    return upper - lower


# (μ, s) in [0, 1] units: interior, at the edges, beyond them, narrow and wide
DL_PARAMS = [(0.5, 0.05), (0.0, 0.01), (1.0, 0.2), (-0.3, 0.1), (1.4, 0.02), (0.37, 0.003)]


def _dl(mu: float, s: float) -> torch.distributions.Distribution:
    """The likelihood's distribution for one value with location μ and scale s: raw ρ is set
    so that s = 10⁻⁴ + softplus(ρ)."""
    raw = math.log(math.expm1(s - DiscretizedLogisticLikelihood.MIN_SCALE))
    params = torch.tensor([[mu, raw]], dtype=torch.float64)
    return DiscretizedLogisticLikelihood(1)(params)


@pytest.mark.parametrize(("mu", "s"), DL_PARAMS)
def test_discretized_logistic_closed_form_and_total_mass(mu, s):
    """log P(k) of all 256 levels against the closed form, and Σ_k P(k) = 1."""
    p = _dl(mu, s)
    levels = torch.arange(256, dtype=torch.float64) / 255
    got = p.log_prob(levels[:, None, None]).squeeze(-1).squeeze(-1)  # (256,)
    expected = [discretized_logistic_by_hand(k, mu, s) for k in range(256)]
    for k in (0, 1, 127, 254, 255):  # edge bins and interior ones, in log space
        if expected[k] > 1e-300:
            assert got[k].item() == pytest.approx(math.log(expected[k]), abs=1e-9, rel=1e-9)
    torch.testing.assert_close(
        got.exp(), torch.tensor(expected, dtype=torch.float64), rtol=1e-9, atol=1e-12
    )
    assert math.fsum(got.exp().tolist()) == pytest.approx(1.0, abs=1e-12)


def test_discretized_logistic_far_tails_stay_finite():
    """A level 10⁴ scales from μ: P is e⁻¹⁰⁰⁰⁰-small, its log still exact (no log 0)."""
    p = _dl(0.0, 1e-4 + 1e-12)
    lp = p.log_prob(torch.tensor([[1.0]], dtype=torch.float64)).item()  # the top edge bin
    # log(1 − σ(b)) = −softplus(b), b = (1 − δ − μ)/s ≈ 9980
    b = (1 - 0.5 / 255) / (1e-4 + 1e-12)
    assert lp == pytest.approx(-b, rel=1e-9)
    interior = p.log_prob(torch.tensor([[0.5]], dtype=torch.float64)).item()
    assert math.isfinite(interior) and interior < -4000


@pytest.mark.parametrize(("mu", "s"), DL_PARAMS[:3])
def test_discretized_logistic_mean_and_samples(mu, s):
    """mean = Σ_k (k/255) P(k); 20 000 draws: the frequency of each level expected ≥ 20 times
    within 5 standard errors of P(k), the rarer levels' total likewise, every draw a level."""
    p = _dl(mu, s)
    probs = torch.tensor(
        [discretized_logistic_by_hand(k, mu, s) for k in range(256)], dtype=torch.float64
    )
    levels = torch.arange(256, dtype=torch.float64) / 255
    assert p.mean.item() == pytest.approx(float((levels * probs).sum()), abs=1e-9)
    torch.manual_seed(0)
    draws = p.sample((20000,)).flatten()
    k = (draws * 255).round()
    assert torch.equal(k, draws * 255) and k.min() >= 0 and k.max() <= 255
    freq = torch.bincount(k.long(), minlength=256).double() / 20000
    common = probs * 20000 >= 20
    groups = [(freq[common], probs[common]), (freq[~common].sum(), probs[~common].sum())]
    for f, q in groups:
        se = (q * (1 - q) / 20000).sqrt()
        assert ((f - q).abs() <= 5 * se + 1e-12).all()


def test_discretized_logistic_takes_two_params_per_value():
    """params = cat(μ, ρ) over D values: each value has its own (μ, s)."""
    likelihood = DiscretizedLogisticLikelihood(3)
    mu, raw, k = [0.1, 0.5, 0.9], [0.0, -2.0, 1.0], [0, 128, 230]
    params = torch.tensor([mu + raw], dtype=torch.float64)  # (1, 2·3)
    x = torch.tensor([k], dtype=torch.float64) / 255
    scales = [1e-4 + math.log1p(math.exp(r)) for r in raw]
    expected = math.fsum(
        math.log(discretized_logistic_by_hand(*args)) for args in zip(k, mu, scales, strict=True)
    )
    assert likelihood(params).log_prob(x).item() == pytest.approx(expected, abs=1e-9)


def test_bits_per_dim():
    """−log p / (D ln 2): log p = −D ln 2 is one bit per value; 8-bit uniform is 8 bits."""
    assert bits_per_dim(-3072 * math.log(2), 3072) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_dim(-784 * math.log(256), 784) == pytest.approx(8.0, rel=1e-15)
    assert bits_per_dim(10.0, 5) == pytest.approx(-10 / (5 * math.log(2)), rel=1e-15)
