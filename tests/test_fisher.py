"""The Fisher auto-encoder's objective: its value against the closed form on the linear-Gaussian
model, its minimizer recovering the generating model, the Hessian traces (exact and
Hutchinson's, unbiased), the refusals, and a run from the command line through evaluate and
diagnose."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import FISHER_MODEL
from test_linear_gaussian import D, d, diagonal_guide
from torch import nn

from pyrovae import TrainConfig, make_estimator, set_seed
from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.guides import AmortizedGuide, DiagonalNormal
from pyrovae.inference import fisher
from pyrovae.inference.trace import exact_trace, hutchinson_trace
from pyrovae.models.linear_gaussian import LinearGaussian
from pyrovae.runs.folder import CONFIG, DIAGNOSTICS, EVALUATION, METRICS

Z = 4.0  # standard errors allowed in the seeded statistical checks


def _ppca(seed=0, sigma=0.8):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    return LinearGaussian(W, b, sigma)


def closed_form(model, guide, x):
    """E_q(z|x) J per datapoint, by hand, for q = N(Ax + c, diag s²) with s independent of x
    (``diagonal_guide``): each term is a quadratic in z, E‖Pz + r‖² = ‖Pm + r‖² + tr(P S Pᵀ)."""
    W, b, s2 = model.W, model.b, model.sigma**2
    A = guide.encoder.weight[:d]  # ∂m/∂x
    raw = guide.encoder(x)
    m = raw[:, :d]
    s = torch.nn.functional.softplus(raw[:, d:]) + 1e-4  # DiagonalNormal's scale
    var = s**2
    eye = torch.eye(d, dtype=x.dtype)
    # ∇_z log q − ∇_z log p(x, z) = P z + r, P = I − diag(1/s²) + WᵀW/σ² (per datapoint)
    P = eye + W.T @ W / s2 - torch.diag_embed(1 / var)
    r = m / var - (x - b) @ W / s2
    mean = (P @ m[..., None])[..., 0] + r
    z_score = 0.5 * (mean.pow(2).sum(-1) + (P.pow(2) * var[:, None, :]).sum((-1, -2)))
    resid = x - m @ W.T - b  # ∇_x log p(x|z) = −(x − Wz − b)/σ²
    x_score = 0.5 * (resid.pow(2).sum(-1) + (W.pow(2) * var[:, None, :]).sum((-1, -2))) / s2**2
    laplacian = torch.full_like(z_score, -D / s2)
    # ∇_x log q(z|x) at fixed z = Aᵀ (z − m)/s²: E ½‖·‖² = ½ Σ_jk A_jk² / s_j²
    stability = 0.5 * (A.pow(2) / var[:, :, None]).sum((-1, -2))
    return {"z_score": z_score, "x_score": x_score, "laplacian": laplacian, "stability": stability}


@pytest.mark.parametrize("probes", [None, 3])
def test_each_term_equals_its_closed_form_on_the_linear_gaussian_model(probes):
    """The Monte-Carlo mean of each of J's terms over K draws of z is within Z standard errors
    (from the draws' own spread) of its expectation by hand, datapoint by datapoint, at a guide
    away from the posterior (shifted, scales ×1.5). Hutchinson's probes give the same Laplacian:
    the likelihood factorizes over pixels, so the Hessian is diagonal and v ᵀH v = tr H."""
    model = _ppca()
    guide = diagonal_guide(model, scale_factor=1.5, shift=0.3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, D, generator=g, dtype=torch.float64) + model.b.detach()
    k = 4000
    set_seed(2)
    terms = make_estimator("fisher", k, probes=probes).terms(model, guide, x)
    with torch.no_grad():
        expected = closed_form(model, guide, x)
    for name, values in terms.items():
        values = values.detach().reshape(k, -1)  # row k·B + b: draw k of datapoint b
        se = values.std(0) / math.sqrt(k)
        gap = (values.mean(0) - expected[name]).abs()
        assert (gap <= Z * se + 1e-9).all(), (name, gap, se)


def test_the_loss_is_the_sum_of_terms_and_reaches_both_networks():
    """loss = Σ_b (1/K) Σ_k J; its gradient reaches the model's W, b, σ and the encoder."""
    model = _ppca()
    guide = diagonal_guide(model, shift=0.3)
    x = torch.randn(4, D, dtype=torch.float64)
    est = make_estimator("fisher", 3)
    set_seed(0)
    terms = est.terms(model, guide, x)
    set_seed(0)
    loss = est.loss_and_grads(model, guide, x)
    assert loss == pytest.approx(sum(terms.values()).sum().item() / 3, rel=1e-12)
    for p in [*model.parameters(), *guide.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_its_minimizer_recovers_the_generating_model():
    """Trained by Adam (minibatches of 500, 1500 steps) on 20 000 draws of a PPCA (D = 6,
    d = 2, eigenvalues of C = W Wᵀ + σ² I from 0.25 to 1.7) from a random start, the Fisher
    objective's minimizer has the data's covariance C and mean b: within 2·Z standard errors of
    the sample covariance's entries, √((C_ii C_jj + C_ij²)/N), which the score-matching estimate
    cannot beat (twice: it is less efficient than maximum likelihood, and SGD adds noise).
    Measured: 2.9 s.e. at most. (Directions of large variance have small scores, so they
    converge slowly: at eigenvalues up to 6, 6000 steps still left 8 s.e.)"""
    truth = _ppca(seed=3, sigma=0.5)
    with torch.no_grad():
        truth.W.mul_(0.5)
    n = 20_000
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        x = z @ truth.W.T + truth.b + truth.sigma * torch.randn(n, D, generator=g).double()
        cov = truth.W @ truth.W.T + truth.sigma**2 * torch.eye(D, dtype=torch.float64)
    set_seed(5)
    model = LinearGaussian(
        torch.randn(D, d, dtype=torch.float64), torch.zeros(D, dtype=torch.float64), 1.0
    )
    guide = AmortizedGuide(nn.Linear(D, 2 * d).double(), DiagonalNormal(d))
    steps, batch = 1500, 500
    optimizer = torch.optim.Adam([*model.parameters(), *guide.parameters()], lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    est = make_estimator("fisher", 1)
    for _ in range(steps):
        xb = x[torch.randint(0, n, (batch,))]
        optimizer.zero_grad()
        (est.differentiable_loss(model, guide, xb) / batch).backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():
        learned = model.W @ model.W.T + model.sigma**2 * torch.eye(D, dtype=torch.float64)
        diag = cov.diagonal()
        se = ((diag[:, None] * diag[None, :] + cov**2) / n).sqrt()
        assert ((learned - cov).abs() <= 2 * Z * se).all(), (learned - cov) / se
        assert ((model.b - truth.b).abs() <= 2 * Z * (diag / n).sqrt()).all()
        # and the check has power: the starting model was far outside it
        assert model.sigma.item() == pytest.approx(0.5, abs=0.01)


def _quartic(x, W, A):
    """A function with a full Hessian per row: Σ tanh(xW)² + ½ xᵀAx."""
    return (torch.tanh(x @ W) ** 2).sum() + 0.5 * ((x @ A) * x).sum()


def test_exact_trace_equals_the_hessians_and_hutchinson_is_unbiased():
    """The exact trace equals tr of torch's Hessian, row by row; Hutchinson's mean over N
    Rademacher probes is within Z standard errors of it, the standard error being the
    estimator's own, √(2 Σ_{i≠j} H_ij² / N)."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = torch.randn(5, 5, generator=g, dtype=torch.float64)
    A = A + A.T
    x = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(_quartic(x, W, A), x, create_graph=True)
    hessians = [
        torch.autograd.functional.hessian(lambda r: _quartic(r[None], W, A), row)
        for row in x.detach()
    ]
    exact = exact_trace(grad, x)
    torch.testing.assert_close(exact, torch.stack([h.trace() for h in hessians]))
    probes = 20_000
    estimate = hutchinson_trace(grad, x, probes, generator=torch.Generator().manual_seed(1))
    for h, e, t in zip(hessians, estimate, exact, strict=True):
        off = h - torch.diag(h.diagonal())
        se = math.sqrt(2 * off.pow(2).sum().item() / probes)
        assert abs(e.item() - t.item()) <= Z * se
    # the check has power: a mean off by 3 % of the trace would be outside it
    assert Z * se < 0.03 * abs(t.item())


def test_the_general_exact_trace_agrees_with_the_diagonal_shortcut(monkeypatch):
    """For a likelihood that factorizes over pixels the Laplacian is one backward pass; the
    D Hessian-vector products (what a non-factorizing likelihood gets) give the same."""
    model = _ppca()
    guide = diagonal_guide(model)
    x = torch.randn(4, D, dtype=torch.float64)
    set_seed(0)
    short = make_estimator("fisher", 2).terms(model, guide, x)["laplacian"]
    monkeypatch.setattr(fisher, "factorizes", lambda fn: False)
    set_seed(0)
    full = make_estimator("fisher", 2).terms(model, guide, x)["laplacian"]
    torch.testing.assert_close(short, full)
    torch.testing.assert_close(short, torch.full_like(short, -D / model.sigma.item() ** 2))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({}, "--likelihood bernoulli"),
        ({"likelihood": "laplace", "pixels": "grey"}, "--likelihood laplace"),
        ({"likelihood": "continuous-bernoulli"}, "--pixels dynamic"),
        ({**FISHER_MODEL, "autoencoder": True}, "--autoencoder"),
        ({**FISHER_MODEL, "beta": 0.5}, "--beta"),
        ({**FISHER_MODEL, "condition_on": "quadrants:1"}, "--condition-on"),
    ],
)
def test_what_it_cannot_train_is_refused(changes, message):
    with pytest.raises(PyroVAEError, match=f"--estimator fisher cannot run with {message}"):
        TrainConfig(estimator="fisher", **changes)


def test_hutchinson_probes_belong_to_fisher():
    with pytest.raises(PyroVAEError, match="--hutchinson-probes is for --estimator fisher"):
        TrainConfig(estimator="elbo", hutchinson_probes=2)
    with pytest.raises(PyroVAEError, match="at least 1"):
        TrainConfig(estimator="fisher", hutchinson_probes=0, **FISHER_MODEL)


def test_a_discrete_observed_site_is_refused_at_the_first_step():
    """Through the Python API, where no config checks the likelihood: one line, not a crash."""
    from pyrovae import build_model_and_guide

    model, guide = build_model_and_guide(TrainConfig(hidden=(8,), latent_dim=2), 16)
    x = torch.bernoulli(torch.full((3, 16), 0.5))
    with pytest.raises(PyroVAEError, match="needs a density in x"):
        make_estimator("fisher").loss(model, guide, x)


def test_a_fisher_run_trains_evaluates_and_diagnoses_from_the_cli(tmp_path, idx_dir, capsys):
    """train (compiled) → evaluate (log p(x) by IS) → diagnose, on grey pixels."""
    run = tmp_path / "run"
    common = ["--data-dir", str(idx_dir)]
    code = main(
        [
            "train",
            *common,
            "--run-dir",
            str(run),
            "--dataset",
            "mnist",
            "--train-subset",
            "200",
            "--hidden",
            "16",
            "--latent-dim",
            "2",
            "--batch-size",
            "50",
            "--epochs",
            "2",
            "--estimator",
            "fisher",
            "--hutchinson-probes",
            "1",
            "--likelihood",
            "gaussian-learned",
            "--pixels",
            "grey",
            "--no-figures",
            "--no-progress",
        ]
    )
    assert code == 0
    config = json.loads((run / CONFIG).read_text())["config"]
    assert config["estimator"] == "fisher" and config["hutchinson_probes"] == 1
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert len(records) == 2 and all(math.isfinite(r["test_elbo"]) for r in records)
    assert main(["evaluate", str(run), *common, "--num-samples", "5"]) == 0
    assert "log p(x)" in capsys.readouterr().out
    assert math.isfinite(json.loads((run / EVALUATION).read_text())["evaluations"][-1]["log_px"])
    code = main(
        ["diagnose", str(run), *common, "--estimators", "elbo", "fisher", "--num-particles", "1"]
        + ["--samples", "3", "--batch-size", "8", "--no-progress"]
    )
    assert code == 0
    rows = json.loads((run / DIAGNOSTICS).read_text())["rows"]
    assert {r["estimator"] for r in rows} == {"elbo", "fisher"}
