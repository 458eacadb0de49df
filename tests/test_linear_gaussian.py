"""Every estimator against the exact linear-Gaussian (probabilistic PCA) model.

float64 throughout. Statistical checks average R independent replicates and allow Z standard
errors of that average (estimated from the replicates' spread); all draws are seeded.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pyrovae import make_estimator, set_seed
from pyrovae.guides import AmortizedGuide, DiagonalNormal
from pyrovae.inference import draw_particles, log_marginal_likelihood, log_mean_exp
from pyrovae.models.linear_gaussian import ExactPosteriorGuide, LinearGaussian

D, d, N = 6, 2, 40
Z = 5.0


@pytest.fixture
def model():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D, d, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    return LinearGaussian(W, b, 0.8)


@pytest.fixture
def x(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z = torch.randn(N, d, generator=g, dtype=torch.float64)
        return z @ model.W.T + model.b + model.sigma * torch.randn(N, D, generator=g).double()


def diagonal_guide(model, scale_factor=1.0, shift=0.0) -> AmortizedGuide:
    """A linear amortized diagonal guide set near the exact posterior (mean shifted by
    ``shift``, standard deviations times ``scale_factor``)."""
    encoder = nn.Linear(D, 2 * d).double()
    with torch.no_grad():
        A, cov = model.posterior_map()  # posterior mean = A (x − b)
        std = cov.diagonal().sqrt() * scale_factor
        rho = torch.log(torch.expm1(std - 1e-4))  # softplus⁻¹, as DiagonalNormal adds 1e-4
        encoder.weight.copy_(torch.cat([A, torch.zeros(d, D, dtype=torch.float64)]))
        encoder.bias.copy_(torch.cat([-A @ model.b + shift, rho]))
    return AmortizedGuide(encoder, DiagonalNormal(d))


def guide_params(guide, x):
    raw = guide.encoder(x)
    loc, rho = raw.chunk(2, -1)
    return loc, torch.nn.functional.softplus(rho) + 1e-4


def test_log_marginal_matches_the_formula(model, x):
    C = model.W @ model.W.T + model.sigma**2 * torch.eye(D, dtype=torch.float64)
    r = x - model.b
    quad = (r @ torch.linalg.inv(C) * r).sum(-1)
    expected = -0.5 * (D * math.log(2 * math.pi) + torch.logdet(C) + quad)
    torch.testing.assert_close(model.log_marginal(x), expected.detach())


@pytest.mark.parametrize("name", ["elbo", "iwae", "iwae-dreg", "elbo-stl", "score-function"])
def test_exact_posterior_makes_every_estimator_exact(model, x, name):
    """log w = log p(x, z) − log p(z|x) = log p(x) for every z: zero variance."""
    guide = ExactPosteriorGuide(model)
    exact = -model.log_marginal(x).sum().item()
    losses = []
    for seed in range(3):
        set_seed(seed)
        losses.append(make_estimator(name, 5).loss(model, guide, x))
    assert losses == pytest.approx([exact] * 3, rel=1e-10)  # zero variance
    set_seed(0)
    log_w = draw_particles(model, guide, (x,), {}, 50).log_w
    assert log_w.std(0).max().item() < 1e-9


def test_analytic_kl_at_the_exact_posterior_is_unbiased_not_exact(model, x):
    """L^B = E_q log p(x|z) − KL: its Monte-Carlo reconstruction term still varies with z, so
    at the exact posterior it is log p(x) in expectation only."""
    guide = ExactPosteriorGuide(model)
    exact = model.log_marginal(x).sum().item()
    reps = []
    for seed in range(20):
        set_seed(seed)
        reps.append(-make_estimator("analytic-kl", 200).loss(model, guide, x))
    reps = torch.tensor(reps, dtype=torch.float64)
    assert reps.std().item() > 1e-6
    assert abs(reps.mean().item() - exact) < Z * reps.std().item() / math.sqrt(len(reps))


def test_ml_fit_is_a_stationary_point_and_makes_the_posterior_diagonal(model, x):
    data = x.detach()
    ml = LinearGaussian.fit_ml(data, d)
    grads = torch.autograd.grad(ml.log_marginal(data).sum(), [ml.W, ml.b, ml.log_sigma])
    for g in grads:
        assert g.abs().max().item() < 1e-8 * len(data)
    # perturbing the ML parameters only lowers the likelihood
    for param in (ml.W, ml.b, ml.log_sigma):
        with torch.no_grad():
            best = ml.log_marginal(data).sum()
            param += 0.01
            assert ml.log_marginal(data).sum() < best
            param -= 0.01
    # at the optimum M = WᵀW + σ²I is diagonal, so a diagonal guide attains log p(x)
    M = ml.W.T @ ml.W
    assert (M - torch.diag(M.diagonal())).abs().max().item() < 1e-8
    post = ml.posterior(data)
    elbo = ml.elbo(data, post.loc, post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt())
    torch.testing.assert_close(elbo, ml.log_marginal(data))


def _replicated_bound(model, guide, x, k, reps, seed=0):
    """R independent draws of Σ_b L_K(x_b): mean and its standard error."""
    set_seed(seed)
    log_w = draw_particles(model, guide, (x,), {}, k * reps).log_w.detach()  # (R·K, B)
    per_rep = log_mean_exp(log_w.reshape(reps, k, -1), dim=1).sum(-1)  # (R,)
    return per_rep.mean().item(), per_rep.std().item() / math.sqrt(reps)


def test_bounds_are_ordered_and_approach_log_px(model, x):
    guide = diagonal_guide(model, scale_factor=1.6, shift=0.4)  # a mediocre guide: big gaps
    log_px = model.log_marginal(x).sum().item()
    closed_elbo = model.elbo(x, *guide_params(guide, x)).sum().item()
    bounds = {
        k: _replicated_bound(model, guide, x, k, reps)
        for k, reps in ((1, 4000), (5, 1000), (50, 200), (5000, 4))
    }
    means = {k: m for k, (m, _) in bounds.items()}
    se = {k: s for k, (_, s) in bounds.items()}
    # E[L_1] is the ELBO: the closed form agrees within sampling error
    assert abs(means[1] - closed_elbo) < Z * se[1]
    # ELBO < L_5 < L_50 < log p(x), each gap many standard errors wide
    assert means[5] - means[1] > Z * math.hypot(se[1], se[5])
    assert means[50] - means[5] > Z * math.hypot(se[5], se[50])
    assert log_px - means[50] > Z * se[50]
    # L_K → log p(x): the gap shrinks roughly like 1/K (here: by ≥ 10× from K=50 to K=5000)
    assert -Z * se[5000] < log_px - means[5000] < (log_px - means[50]) / 10


def test_analytic_kl_loss_is_the_closed_form_elbo(model, x):
    guide = diagonal_guide(model, scale_factor=1.3, shift=0.2)
    closed = model.elbo(x, *guide_params(guide, x)).sum().item()
    reps = []
    for seed in range(20):
        set_seed(seed)
        reps.append(-make_estimator("analytic-kl", 500).loss(model, guide, x))
    reps = torch.tensor(reps, dtype=torch.float64)
    assert abs(reps.mean().item() - closed) < Z * reps.std().item() / math.sqrt(len(reps))


def test_evaluator_matches_the_closed_form(model, x):
    guide = diagonal_guide(model, scale_factor=1.2, shift=0.1)
    exact = model.log_marginal(x)
    out = log_marginal_likelihood(model, guide, x, num_samples=5000, batch_size=16, chunk_size=700)
    assert abs(out["log_px"] - exact.mean().item()) < out["stderr"]
    assert abs(out["log_px"] - exact.mean().item()) < Z * out["mc_stderr"] + 1e-6
    # per datapoint too: the delta-method errors are honest (|error| < Z·se for every point)
    per_se = torch.sqrt(1 / torch.tensor(out["ess"]) - 1 / 5000)
    assert (out["per_datapoint"] - exact).abs().max().item() < Z * per_se.item() * 3
    assert out["mc_stderr"] > 0 and 1 < out["ess"] <= 5000


def test_evaluator_chunking_does_not_change_the_estimate(model, x):
    guide = diagonal_guide(model, scale_factor=1.2)
    a = log_marginal_likelihood(model, guide, x, 300, batch_size=40, chunk_size=300)
    b = log_marginal_likelihood(model, guide, x, 300, batch_size=7, chunk_size=64)
    assert abs(a["log_px"] - b["log_px"]) < Z * math.hypot(a["mc_stderr"], b["mc_stderr"])
