"""Identities between estimators, unbiasedness of their gradients, DReG's variance and SNR."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import DEVICES, any_likelihood
from test_linear_gaussian import D, N, Z, diagonal_guide

from pyrovae import ESTIMATORS, TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.core.errors import PyroVAEError
from pyrovae.inference import active_units, gradient_statistics, log_marginal_likelihood
from pyrovae.inference.kinds import applicable
from pyrovae.models.linear_gaussian import LinearGaussian

# estimators for continuous codes (the discrete ones: test_discrete_codes.py)
CONTINUOUS = any_likelihood(applicable(ESTIMATORS, "continuous"))


def _vae(device="cpu", seed=0, estimator="elbo"):
    set_seed(seed)
    config = TrainConfig(hidden=(32,), latent_dim=4, estimator=estimator, num_particles=3)
    model, guide = build_model_and_guide(config, 784)  # nvil's guide holds its baseline net
    x = torch.bernoulli(torch.rand(16, 784)).to(device)
    return model.to(device), guide.to(device), x


def _loss_and_grads(name, k, model, guide, x, seed=11):
    params = [*model.parameters(), *guide.parameters()]
    for p in params:
        p.grad = None
    set_seed(seed)
    loss = make_estimator(name, k).loss_and_grads(model, guide, x)
    return loss, [p.grad.clone() for p in params]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "a,b,k",
    [
        ("iwae", "elbo", 1),
        ("iwae-dreg", "elbo-stl", 1),
        ("elbo-stl", "elbo", 5),
        ("iwae-dreg", "iwae", 5),
        ("score-function", "elbo", 3),
    ],
)
def test_identities_under_the_same_seed(device, a, b, k):
    """IWAE with K=1 is Trace_ELBO (loss and gradient); DReG with K=1 is STL; STL, DReG and the
    score function change only the gradient, not the value."""
    model, guide, x = _vae(device)
    loss_a, grads_a = _loss_and_grads(a, k, model, guide, x)
    loss_b, grads_b = _loss_and_grads(b, k, model, guide, x)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    if k == 1:
        for ga, gb in zip(grads_a, grads_b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_every_estimator_keeps_pyros_contract(name):
    """``loss``, ``differentiable_loss`` (also via ELBOModule) and ``loss_and_grads`` agree."""
    model, guide, x = _vae(estimator=name)
    est = make_estimator(name, 3)
    set_seed(5)
    value = est.loss(model, guide, x)
    set_seed(5)
    diff = est.differentiable_loss(model, guide, x)
    set_seed(5)
    module_loss = est(model, guide)(x)
    assert diff.item() == pytest.approx(value, rel=1e-6)
    assert module_loss.item() == pytest.approx(value, rel=1e-6)
    module_loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in guide.parameters())


def test_bad_estimator_arguments():
    with pytest.raises(PyroVAEError, match="at least 1"):
        make_estimator("iwae", 0)
    with pytest.raises(PyroVAEError, match="at least 2"):
        make_estimator("score-function-loo", 1)
    with pytest.raises(PyroVAEError, match="unknown estimator"):
        make_estimator("reinforce", 5)


# ---- unbiasedness on the linear-Gaussian model ----------------------------------------------


@pytest.fixture
def linear():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(D, 2, generator=g, dtype=torch.float64)
    model = LinearGaussian(W, torch.randn(D, generator=g, dtype=torch.float64), 0.9)
    with torch.no_grad():
        z = torch.randn(N // 4, 2, generator=g, dtype=torch.float64)
        x = z @ model.W.T + model.b + 0.9 * torch.randn(N // 4, D, generator=g).double()
    guide = diagonal_guide(model, scale_factor=1.4, shift=0.3)  # not the optimum: gradients ≠ 0
    return model, guide, x


def _params(model, guide):
    return [*model.parameters(), *guide.parameters()]


def _replicate_grads(name, k, model, guide, x, reps):
    """(R, P): R independent gradient estimates of the loss, each with K particles."""
    params = _params(model, guide)
    est = make_estimator(name, k)
    out = []
    for r in range(reps):
        for p in params:
            p.grad = None
        set_seed(1000 + r)
        est.loss_and_grads(model, guide, x)
        out.append(torch.cat([p.grad.flatten() for p in params]))
    return torch.stack(out)


def _exact_elbo_grad(model, guide, x):
    loc, rho = guide.encoder(x).chunk(2, -1)
    elbo = model.elbo(x, loc, torch.nn.functional.softplus(rho) + 1e-4).sum()
    return torch.cat([g.flatten() for g in torch.autograd.grad(-elbo, _params(model, guide))])


@pytest.mark.parametrize(
    "name,k,reps",
    [
        ("elbo", 50, 40),
        ("elbo-stl", 50, 40),
        ("analytic-kl", 50, 40),
        ("score-function", 400, 60),
        ("score-function-loo", 400, 60),
    ],
)
def test_elbo_gradients_are_unbiased(linear, name, k, reps):
    model, guide, x = linear
    exact = _exact_elbo_grad(model, guide, x)
    g = _replicate_grads(name, k, model, guide, x, reps)
    se = g.std(0) / math.sqrt(reps)
    assert ((g.mean(0) - exact).abs() <= Z * se + 1e-9).all()


def test_the_unbiasedness_check_has_power(linear):
    """IWAE_5's gradient is not the ELBO's: the same check must reject it."""
    model, guide, x = linear
    g = _replicate_grads("iwae", 5, model, guide, x, 40)
    se = g.std(0) / math.sqrt(40)
    assert ((g.mean(0) - _exact_elbo_grad(model, guide, x)).abs() > Z * se).any()


def test_iwae_and_dreg_agree_in_mean(linear):
    model, guide, x = linear
    a = _replicate_grads("iwae", 5, model, guide, x, 200)
    b = _replicate_grads("iwae-dreg", 5, model, guide, x, 200)
    se = torch.sqrt(a.var(0) / 200 + b.var(0) / 200)
    assert ((a.mean(0) - b.mean(0)).abs() <= Z * se + 1e-9).all()


def _stats(name, k, model, guide, x, m=200):
    set_seed(0)
    return gradient_statistics(model, guide, x, make_estimator(name, k), num_samples=m)


def test_dreg_has_lower_encoder_variance_than_iwae_at_k50(linear):
    model, guide, x = linear
    iwae = _stats("iwae", 50, model, guide, x)["encoder"]["variance_mean"]
    dreg = _stats("iwae-dreg", 50, model, guide, x)["encoder"]["variance_mean"]
    assert dreg < iwae / 2


def test_encoder_snr_falls_with_k_for_iwae_but_not_for_dreg(linear):
    """Rainforth et al. 2018: IWAE's encoder SNR is O(1/√K); DReG's does not decay that way."""
    model, guide, x = linear
    snr = {
        (name, k): _stats(name, k, model, guide, x)["encoder"]["snr"]
        for name in ("iwae", "iwae-dreg")
        for k in (1, 10, 100)
    }
    assert snr["iwae", 1] > snr["iwae", 10] > snr["iwae", 100]
    iwae_drop = snr["iwae", 100] / snr["iwae", 1]
    dreg_drop = snr["iwae-dreg", 100] / snr["iwae-dreg", 1]
    assert dreg_drop > 3 * iwae_drop


@pytest.mark.parametrize("device", DEVICES)
def test_every_estimator_and_the_evaluator_run_on_the_device(device):
    for name in CONTINUOUS:
        model, guide, x = _vae(device, estimator=name)
        loss, grads = _loss_and_grads(name, 3, model, guide, x)
        assert math.isfinite(loss) and all(g.device.type == device for g in grads)
    out = log_marginal_likelihood(model, guide, x, num_samples=64, batch_size=5, chunk_size=16)
    assert out["per_datapoint"].device.type == device
    assert out["log_px"] > -loss / x.shape[0] - Z * out["stderr"]  # L_64 ≥ the ELBO, on average
    assert 0 <= active_units(guide, x) <= 4
