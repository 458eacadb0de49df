"""The seed's example: d/dφ E_{x~N(φ,1)}[x²] = 2φ by the score function and by reparameterization.

Exact variances (REFERENCE.md): score φ⁴ + 14φ² + 15, with baseline b = φ² + 1: 8φ² + 10,
reparameterized 4. Tolerances come from the sampling error: the mean of n estimates has
standard error σ/√n and the sample variance s² has standard error √((μ₄ − σ⁴)/n), with μ₄ the
estimator's central fourth moment, computed here exactly by Gauss–Hermite quadrature.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyrovae.inference.score_function import gaussian_mean_gradients

N = 200_000
Z = 5.0  # standard errors allowed: a false failure has probability < 1e-6 per check


def _square(x):
    return x**2


def _estimator(method: str, phi: float, baseline: float):
    """The single-sample estimator as a function of ε ~ N(0, 1)."""
    if method == "reparam":
        return lambda e: 2 * (phi + e)
    return lambda e: ((phi + e) ** 2 - baseline) * e


def _central_moments(g, mean):
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)  # exact for degree < 80
    weights = weights / math.sqrt(2 * math.pi)
    c = g(nodes) - mean
    return float((weights * c**2).sum()), float((weights * c**4).sum())


CASES = [
    ("score", 0.0, lambda phi: phi**4 + 14 * phi**2 + 15),
    ("reparam", 0.0, lambda phi: 4.0),
    ("score", "phi^2+1", lambda phi: 8 * phi**2 + 10),
]


@pytest.mark.parametrize("phi", [-1.5, 0.0, 1.0, 2.0])
@pytest.mark.parametrize("method,baseline,variance", CASES, ids=["score", "reparam", "baseline"])
def test_mean_and_variance_match_the_exact_formulas(phi, method, baseline, variance):
    b = phi**2 + 1 if baseline == "phi^2+1" else baseline
    exact_var = variance(phi)
    var_q, mu4 = _central_moments(_estimator(method, phi, b), 2 * phi)
    assert var_q == pytest.approx(exact_var, rel=1e-10)  # the formula itself
    g = gaussian_mean_gradients(_square, phi, N, method, b, torch.Generator().manual_seed(7))
    assert abs(g.mean().item() - 2 * phi) < Z * math.sqrt(exact_var / N)
    assert abs(g.var().item() - exact_var) < Z * math.sqrt((mu4 - exact_var**2) / N)


def test_averaging_k_samples_divides_the_variance_by_k():
    k, phi = 10, 1.0
    g = gaussian_mean_gradients(_square, phi, N, "score", 0.0, torch.Generator().manual_seed(3))
    averaged = g.reshape(-1, k).mean(1)  # N/k estimators, each the mean of k samples
    exact = (phi**4 + 14 * phi**2 + 15) / k
    # s² of n' = N/k roughly Gaussian means: standard error ≈ exact·√(2/n')
    assert abs(averaged.var().item() - exact) < Z * exact * math.sqrt(2 / (N / k))


def test_score_function_is_the_noisier_estimator():
    gen = torch.Generator().manual_seed(1)
    score = gaussian_mean_gradients(_square, 1.0, 20_000, "score", generator=gen).var()
    reparam = gaussian_mean_gradients(_square, 1.0, 20_000, "reparam", generator=gen).var()
    assert score > 5 * reparam  # exact ratio 30 / 4
