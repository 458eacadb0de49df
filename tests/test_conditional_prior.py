"""The conditional prior p(z|c) and structured output prediction (image completion): closed
forms, exact conditional likelihoods, the masked likelihood, and the three conditional models."""

from __future__ import annotations

import math
import re

import numpy as np
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from conftest import any_likelihood
from torch import nn

from pyrovae import TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import seeded
from pyrovae.guides.families import MIN_SCALE, DiagonalNormal
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.inference.estimators import ESTIMATORS
from pyrovae.inference.kinds import applicable
from pyrovae.inference.marginal import log_marginal_likelihood
from pyrovae.inference.train import make_optimizer, svi_step
from pyrovae.models.condition import ObservedPixels, masked, observed_mask, quadrants
from pyrovae.models.likelihoods import BernoulliLikelihood
from pyrovae.models.prior import ConditionalNormalPrior, StandardNormalPrior
from pyrovae.models.vae import VAE

D, SIDE = 16, 4  # 4×4 images


def _binary(n: int, seed: int = 1) -> torch.Tensor:
    with seeded(seed):
        return torch.bernoulli(torch.rand(n, D))


def _parts(**changes):
    config = TrainConfig(hidden=(16,), latent_dim=3, **changes)
    set_seed(0)
    return build_model_and_guide(config, D, num_classes=4)


def _loss(name: str, model, guide, *args, k: int = 1, seed: int = 3) -> torch.Tensor:
    with seeded(seed):
        return make_estimator(name, k).differentiable_loss(model, guide, *args)


# ---------------------------------------------------------------- the conditional prior


def _constant_standard_normal(prior: ConditionalNormalPrior) -> None:
    """Make p(z|c) ignore c: the last layer's weights zero, its bias μ = 0 and ρ with
    softplus(ρ) + 10⁻⁴ = 1, so p(z|c) = N(0, I) for every c."""
    last = prior.net.net[-1]
    d = prior.family.latent_dim
    with torch.no_grad():
        last.weight.zero_()
        last.bias[:d] = 0.0
        last.bias[d:] = math.log(math.expm1(1.0 - MIN_SCALE))


@pytest.mark.parametrize("changes", [{"conditional": True}, {"condition_on": "quadrants:2"}])
def test_a_prior_that_ignores_c_gives_the_unconditional_model(changes):
    model, guide = _parts(prior="conditional", **changes)
    x, y = _binary(8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    args = (x, y) if "conditional" in changes else (x,)
    plain = VAE(StandardNormalPrior(3), model.decoder, model.likelihood, condition=model.condition)
    # a prior net that reads c: the two models differ (the comparison below can fail)
    assert not torch.allclose(
        _loss("elbo", model, guide, *args), _loss("elbo", plain, guide, *args)
    )
    _constant_standard_normal(model.prior)
    for name in ("elbo", "analytic-kl"):
        torch.testing.assert_close(
            _loss(name, model, guide, *args), _loss(name, plain, guide, *args), rtol=0, atol=1e-5
        )


def test_the_prior_is_a_diagonal_normal_of_the_context():
    set_seed(0)
    prior = ConditionalNormalPrior(3, context_dim=5, hidden=(7,))
    c = torch.randn(4, 5)
    p = prior(c)
    assert p.batch_shape == (4,) and p.event_shape == (3,)
    raw = prior.net(c)
    torch.testing.assert_close(p.base_dist.loc, raw[:, :3])
    torch.testing.assert_close(p.base_dist.scale, F.softplus(raw[:, 3:]) + MIN_SCALE)
    with pytest.raises(PyroVAEError, match="needs a condition"):
        ConditionalNormalPrior(3)


def _diagonal_kl(mu1, s1, mu2, s2) -> torch.Tensor:
    """KL(N(μ1, σ1²) ‖ N(μ2, σ2²)) summed over dimensions, REFERENCE.md's form."""
    return (torch.log(s2 / s1) + (s1**2 + (mu1 - mu2) ** 2) / (2 * s2**2) - 0.5).sum(-1)


def test_analytic_kl_is_the_closed_form_torchs_value_and_the_monte_carlo_mean():
    model, guide = _parts(prior="conditional", conditional=True)
    x, y = _binary(6), torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():
        q = guide.posterior(x, y).base_dist
        p = model.prior(model.context(x, y)).base_dist
        closed = _diagonal_kl(q.loc, q.scale, p.loc, p.scale)  # (B,)
        torch.testing.assert_close(closed, torch.distributions.kl_divergence(q, p).sum(-1))
        # analytic-kl − elbo over the same z: the MC KL minus the closed form, per datapoint
        analytic = -_loss("analytic-kl", model, guide, x, y)
        recon = analytic + closed.sum()
        # MC: log q(z) − log p(z) over N draws; tolerance 4 s.e. of the mean, s.e. = sd/√N
        n = 20000
        with seeded(5):
            z = q.rsample((n,))  # (N, B, d)
        log_ratio = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (N, B)
        mean, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
        assert torch.all((mean - closed).abs() < 4 * se), (mean, closed, se)
        # the estimator's reconstruction term is the ELBO's: elbo = recon − KL on one z
        assert torch.isfinite(recon)


# ---------------------------------------------------------------- masks and the likelihood


def test_quadrants_follow_pyros_order_and_split_odd_sides():
    m = quadrants("1", (1, 28, 28))[0]
    assert m[14:, :14].all() and m.sum() == 14 * 14  # bottom-left
    m = quadrants("2", (1, 28, 28))[0]
    assert m[:, :14].all() and m.sum() == 28 * 14  # the left half
    m = quadrants("3", (1, 28, 28))[0]
    assert not m[14:, 14:].any() and m.sum() == 28 * 28 - 14 * 14  # all but the bottom-right
    odd = quadrants("1", (3, 5, 7))  # rows split at 2, columns at 3, every channel alike
    assert odd.shape == (3, 5, 7) and odd[:, 2:, :3].all() and odd.sum() == 3 * 3 * 3
    for bad in ("0", "4", "x"):
        with pytest.raises(PyroVAEError, match="1, 2 or 3"):
            quadrants(bad, (1, 4, 4))


def test_mask_files_are_read_and_checked(tmp_path):
    good = tmp_path / "m.npy"
    array = np.zeros((4, 4), dtype=bool)
    array[0] = True
    np.save(good, array)
    mask = observed_mask(f"mask:{good}", (2, 4, 4))
    assert mask.shape == (2, 4, 4) and mask[:, 0].all() and mask.sum() == 8
    np.save(tmp_path / "ints.npy", array.astype(np.int64))
    np.save(tmp_path / "shape.npy", np.zeros((3, 3), dtype=bool))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    cases = {
        "missing.npy": "does not exist",
        "ints.npy": "booleans",
        "shape.npy": "shape",
        "junk.npy": "not a readable",
    }
    for name, message in cases.items():
        with pytest.raises(PyroVAEError, match=message):
            observed_mask(f"mask:{tmp_path / name}", (2, 4, 4))
    for spec, message in (("quadrants", "KIND:ARGUMENT"), ("half:1", "unknown mask kind")):
        with pytest.raises(PyroVAEError, match=message):
            observed_mask(spec, (1, 4, 4))
    with pytest.raises(PyroVAEError, match="some pixels"):
        ObservedPixels(torch.ones(D, dtype=torch.bool))


def test_the_masked_likelihood_ignores_observed_pixels():
    observed = quadrants("2", (1, SIDE, SIDE)).reshape(-1)
    x = _binary(5)
    params = torch.randn(5, D, requires_grad=True)
    lp = masked(BernoulliLikelihood(D)(params), ~observed).log_prob(x)  # (B,)
    by_hand = -F.binary_cross_entropy_with_logits(params, x, reduction="none")[:, ~observed]
    torch.testing.assert_close(lp, by_hand.sum(-1))
    (grad,) = torch.autograd.grad(lp.sum(), params)
    assert torch.all(grad[:, observed] == 0) and torch.all(grad[:, ~observed] != 0)


def test_the_decoder_gets_no_gradient_for_observed_pixels():
    # through the whole model: the decoder's output row of an observed pixel feeds only the
    # likelihood of that pixel, so the loss's gradient there is exactly zero
    model, guide = _parts(prior="conditional", condition_on="quadrants:2")
    x = _binary(8)
    loss = _loss("elbo", model, guide, x)
    last = model.decoder.net[-1]
    grad_w, grad_b = torch.autograd.grad(loss, [last.weight, last.bias])
    observed = model.condition.observed
    assert torch.all(grad_w[observed] == 0) and torch.all(grad_b[observed] == 0)
    assert torch.all(grad_b[~observed] != 0)


# ---------------------------------------------------------------- exact p(x_miss | x_obs)


class _Linear(nn.Module):
    """A fixed affine map, the networks of the linear-Gaussian conditional model."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.weight.T + self.bias


class _GaussianPixels(nn.Module):
    """x_i ~ N(μ_i, σ²), σ fixed: the likelihood of the linear-Gaussian model."""

    params_per_pixel = 1
    SCALE = 0.5

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return dist.Normal(params, self.SCALE).to_event(1)


def test_importance_sampling_converges_to_the_exact_conditional_likelihood():
    """p(z|x_obs) = N(A x_obs + a, diag s²), p(x|z, x_obs) = N(B z + C x_obs + e, σ² I): then
    p(x_miss|x_obs) = N(B_m(A x_obs + a) + C_m x_obs + e_m, B_m diag(s²) B_mᵀ + σ² I), exactly.
    The guide is a deliberately poor q(z|x, x_obs); IS with K draws is a stochastic lower bound
    whose mean rises to the exact value as K grows."""
    torch.manual_seed(0)
    d, n = 2, 400
    observed = quadrants("1", (1, 2, 2)).reshape(-1)  # 1 observed pixel of 4, 3 predicted
    condition = ObservedPixels(observed)
    obs, miss = observed.nonzero().squeeze(-1), (~observed).nonzero().squeeze(-1)
    A, a, log_s = torch.randn(d, 1), torch.randn(d), torch.randn(d) * 0.3
    prior = ConditionalNormalPrior(d, context_dim=1, hidden=())
    rho = torch.log(torch.expm1(log_s.exp() - MIN_SCALE))  # softplus(ρ) + 10⁻⁴ = s
    prior.net.net[0] = _Linear(torch.cat([A, torch.zeros(d, 1)]), torch.cat([a, rho]))
    B, Cm, e = torch.randn(4, d), torch.randn(4, 1), torch.randn(4)
    decoder = _Linear(torch.cat([B, Cm], 1), e)  # [z, x_obs] ↦ μ
    model = VAE(prior, decoder, _GaussianPixels(), condition=condition).double()
    # [x, x_obs] ↦ raw: means off the posterior's, scales 2 (wider than it, so the weights have
    # a finite variance and IS is in its 1/K regime)
    wide = math.log(math.expm1(2.0 - MIN_SCALE))
    encoder = _Linear(torch.randn(2 * d, 4 + 1) * 0.2, torch.tensor([0.0] * d + [wide] * d))
    guide = AmortizedGuide(encoder, DiagonalNormal(d), condition=condition).double()
    x = torch.randn(n, 4, dtype=torch.float64)
    x_obs = x[:, obs]
    s2 = torch.diag(log_s.double().exp() ** 2)
    Bm = B.double()[miss]
    mean = (x_obs @ A.double().T + a.double()) @ Bm.T + x_obs @ Cm.double()[miss].T
    mean = mean + e.double()[miss]
    cov = Bm @ s2 @ Bm.T + _GaussianPixels.SCALE**2 * torch.eye(3, dtype=torch.float64)
    exact = dist.MultivariateNormal(mean, cov).log_prob(x[:, miss]).mean().item()
    estimates = {}
    for k in (1, 10, 3000):
        r = log_marginal_likelihood(model, guide, x, k, seed=7)
        estimates[k] = (r["log_px"], r["mc_stderr"])
    # a lower bound that tightens: each step up in K closes most of the remaining gap
    assert estimates[1][0] < estimates[10][0] < estimates[3000][0]
    assert exact - estimates[1][0] > 0.05  # the poor guide leaves a visible gap at K = 1
    # at K = 3000 the mean is within 4 Monte-Carlo standard errors (delta method, per mean)
    value, mc = estimates[3000]
    assert abs(value - exact) < 4 * mc + 1e-3, (value, exact, mc)


# ---------------------------------------------------------------- GSNN and baseline


def test_the_gsnn_guide_is_the_prior_and_its_bound_has_no_kl():
    model, guide = _parts(prior="conditional", condition_on="quadrants:1", conditional_model="gsnn")
    x = _binary(8)
    assert not list(guide.parameters())  # q = p(z|c): no parameters of its own
    with torch.no_grad():
        q, p = guide.posterior(x), model.prior(model.context(x))
    torch.testing.assert_close(q.base_dist.loc, p.base_dist.loc)
    torch.testing.assert_close(q.base_dist.scale, p.base_dist.scale)
    # analytic-kl's bound is E_p(z|c)[log p(x_miss|z, c)] on the same noise as elbo's
    torch.testing.assert_close(
        _loss("analytic-kl", model, guide, x), _loss("elbo", model, guide, x), rtol=0, atol=1e-4
    )
    # training reaches the prior network (through z ~ p(z|c)) and the decoder
    loss = _loss("elbo", model, guide, x)
    grads = torch.autograd.grad(loss, [model.prior.net.net[0].weight, *model.decoder.parameters()])
    assert all(g.abs().sum() > 0 for g in grads)


def test_the_baseline_bound_is_its_exact_likelihood_for_every_estimator():
    model, guide = _parts(condition_on="quadrants:3", conditional_model="baseline")
    x = _binary(8)
    with torch.no_grad():
        c = model.condition.context(x)
        lp = masked(model.likelihood(model.net(c)), model.condition.predicted).log_prob(x).sum()
        for name, k in (("elbo", 1), ("iwae", 5), ("analytic-kl", 1)):
            torch.testing.assert_close(_loss(name, model, guide, x, k=k), -lp)
        completed = model.complete(x, 3)
    assert completed.shape == (3, 8, D)
    observed = model.condition.observed
    torch.testing.assert_close(completed[:, :, observed], x[:, observed].expand(3, -1, -1))


def test_a_frozen_baseline_feeds_the_cvae_and_stays_unchanged():
    base, _ = _parts(condition_on="quadrants:1", conditional_model="baseline")
    config = TrainConfig(
        hidden=(16,),
        latent_dim=3,
        condition_on="quadrants:1",
        prior="conditional",
        baseline_input="unused-here",
    )
    set_seed(0)
    model, guide = build_model_and_guide(config, D)
    model.condition.baseline.load_state_dict(base.state_dict())
    x = _binary(8)
    c = model.condition.context(x)
    n_obs = int(model.condition.observed.sum())
    assert c.shape == (8, n_obs + D)
    torch.testing.assert_close(c[:, n_obs:], base.predict(x[:, model.condition.observed]))
    before = {k: v.clone() for k, v in model.condition.baseline.state_dict().items()}
    optimizer = make_optimizer((model, guide), 1e-2)
    for _ in range(3):
        svi_step(make_estimator("elbo", 1), model, guide, optimizer, x)
    for k, v in model.condition.baseline.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    # ... while the prior network, which reads ŷ, did move
    assert not torch.equal(model.prior.net.net[0].weight, _parts_prior_weight(config))


def _parts_prior_weight(config: TrainConfig) -> torch.Tensor:
    set_seed(0)
    return build_model_and_guide(config, D)[0].prior.net.net[0].weight


def test_completions_copy_the_observed_pixels_and_vary_with_z():
    model, _ = _parts(prior="conditional", condition_on="quadrants:2")
    x = _binary(4)
    with seeded(0):
        drawn = model.complete(x, 5)  # (5, 4, D)
    observed = model.condition.observed
    torch.testing.assert_close(drawn[:, :, observed], x[:, observed].expand(5, -1, -1))
    assert drawn[:, :, ~observed].std(0).mean() > 0  # different z, different completions


def test_samples_of_a_label_come_from_its_prior():
    model, _ = _parts(prior="conditional", conditional=True)
    _constant_standard_normal(model.prior)
    with torch.no_grad():
        last = model.prior.net.net[-1]
        last.bias[:3] = torch.tensor([50.0, -50.0, 50.0])  # p(z|y) far from N(0, I)
    with seeded(0):
        images = model.generate(6, torch.tensor(2))
    with seeded(0):
        z = torch.tensor([50.0, -50.0, 50.0]) + torch.randn(6, 3)
    torch.testing.assert_close(images, model.mean(z, torch.full((6,), 2)))


def test_conditional_settings_that_do_not_go_together_are_refused():
    refused = [
        ({"prior": "conditional"}, "--prior conditional without a condition"),
        ({"conditional": True, "condition_on": "quadrants:1"}, "one condition at a time"),
        ({"condition_on": "quadrants:1", "conditional_model": "gsnn"}, "needs --prior conditional"),
        ({"conditional_model": "gsnn"}, "gsnn without a condition"),
        ({"baseline_input": "run", "conditional": True}, "--baseline-input without --condition-on"),
        (
            {"condition_on": "quadrants:1", "conditional_model": "baseline", "baseline_input": "r"},
            "the baseline is what it feeds",
        ),
        ({"condition_on": "quadrants"}, "KIND:ARGUMENT"),
        ({"condition_on": "quadrants:1", "conditional_model": "x"}, "unknown conditional model"),
    ]
    for changes, message in refused:
        with pytest.raises(PyroVAEError, match=re.escape(message)):
            TrainConfig(**changes)


def test_a_label_conditional_step_compiles_and_matches_the_eager_one():
    # the one-hot of y is a scatter: F.one_hot's range check read a value back to Python and
    # sent every conditional step to the eager path
    from pyrovae.inference.compiled import CompiledELBO

    lines = []
    model, guide = _parts(prior="conditional", conditional=True)
    x, y = _binary(8), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    fast = CompiledELBO(make_estimator("analytic-kl", 1), log=lines.append)
    params = [*model.parameters(), *guide.parameters()]
    results = []
    for estimator in (make_estimator("analytic-kl", 1), fast):
        for p in params:
            p.grad = None
        with seeded(4):
            loss = estimator.loss_and_grads(model, guide, x, y)
        results.append((loss, [p.grad.clone() for p in params]))
    assert fast.num_graphs == 1 and not fast.stats.fallbacks, lines
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for eager, compiled in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", any_likelihood(applicable(ESTIMATORS, "continuous")))
def test_every_continuous_estimator_trains_the_completion_cvae(name):
    # K = 3: the leave-one-out and multi-sample estimators need K ≥ 2
    model, guide = _parts(
        prior="conditional", condition_on="quadrants:1", estimator=name, num_particles=3
    )
    x = _binary(8)
    estimator = make_estimator(name, 3)
    for p in [*model.parameters(), *guide.parameters()]:
        p.grad = None
    with seeded(2):
        loss = estimator.loss_and_grads(model, guide, x)
    assert math.isfinite(loss)
    # the bound is of log p(x_miss|x_obs) ≤ 0 for binary pixels, per the 12 predicted ones
    assert 0 < loss / 8 < 12 * math.log(2) * 10
    first = next(guide.encoder.parameters())
    prior_first = model.prior.net.net[0].weight
    assert first.grad.abs().sum() > 0 and prior_first.grad.abs().sum() > 0
