"""Short seeded training runs of every estimator on the real Fashion-MNIST (CPU).

Skipped when Debian's dataset-fashion-mnist is not installed (.ci/run installs it).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import any_likelihood
from test_compiled import built_for

from pyrovae import (
    ESTIMATORS,
    TrainConfig,
    build_model_and_guide,
    fit,
    load_data,
    make_estimator,
    set_seed,
)
from pyrovae.core.runtime import seeded
from pyrovae.inference import evaluate_elbo, log_marginal_likelihood
from pyrovae.inference.kinds import applicable

# estimators for continuous codes (the discrete ones: test_discrete_codes.py)
CONTINUOUS = any_likelihood(applicable(ESTIMATORS, "continuous"))

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
SMALL = TrainConfig(hidden=(200,), latent_dim=20)


@pytest.fixture(scope="module")
def fmnist():
    return load_data("fashion-mnist", "dynamic", train_subset=10000, download=False)


@pytest.fixture(scope="module")
def fmnist_2000():
    """Read once for every estimator's run (fit only reads its data)."""
    return load_data("fashion-mnist", "dynamic", train_subset=2000, download=False)


def _own_bound(name, k, model, guide, x):
    with seeded(99):
        return -make_estimator(name, k).loss(model, guide, x) / x.shape[0]


@pytest.mark.parametrize("name", CONTINUOUS)
def test_each_estimator_trains_without_nan_and_improves(fmnist_2000, name):
    data = fmnist_2000
    set_seed(0)
    model, guide = build_model_and_guide(SMALL.replace(**built_for(name)), data.num_pixels)
    x_test = data.test_x[:500]
    before = evaluate_elbo(model, guide, x_test)["elbo"], _own_bound(name, 3, model, guide, x_test)
    history = fit(
        model, guide, data, name, num_particles=3, epochs=2, batch_size=100, progress=False
    )
    after = evaluate_elbo(model, guide, x_test)["elbo"], _own_bound(name, 3, model, guide, x_test)
    assert all(math.isfinite(r[key]) for r in history for key in ("train_elbo", "test_elbo"))
    # from ~−545 nats per image at initialization; 40 steps take every estimator past −400
    assert after[0] > before[0] + 100 and after[1] > before[1] + 100


def test_iwae_beats_elbo_on_the_test_iwae_bound(fmnist):
    """Seeded: 4 epochs on 10k images each; L_50 on the same 1000 test images, paired.

    Recorded 2026-11-21: elbo −263.17, iwae(K=5) −259.89 nats per image (L_50).
    """
    bounds = {}
    for name, k in (("elbo", 1), ("iwae", 5)):
        set_seed(0)
        model, guide = build_model_and_guide(SMALL, fmnist.num_pixels)
        fit(model, guide, fmnist, name, num_particles=k, epochs=4, batch_size=100, progress=False)
        bounds[name] = log_marginal_likelihood(model, guide, fmnist.test_x[:1000], 50)
    diff = bounds["iwae"]["per_datapoint"] - bounds["elbo"]["per_datapoint"]
    paired_se = diff.std().item() / math.sqrt(len(diff))
    mc = math.hypot(bounds["iwae"]["mc_stderr"], bounds["elbo"]["mc_stderr"])
    assert diff.mean().item() > 5 * math.hypot(paired_se, mc)
    assert torch.isfinite(diff).all()


def test_flow_guide_beats_the_diagonal_guide(fmnist):
    """Seeded: 4 epochs on 10k images each, `elbo`; single-sample ELBOs of the same 2000 test
    images, paired. Recorded 2026-11-21 (all 10k test images, `fit`'s test ELBO): normal
    −270.14, flow −264.18 nats per image."""
    per_image = {}
    for guide_name in ("normal", "flow"):
        set_seed(0)
        config = TrainConfig(hidden=(200,), latent_dim=20, guide=guide_name)
        model, guide = build_model_and_guide(config, fmnist.num_pixels)
        fit(model, guide, fmnist, "elbo", epochs=4, batch_size=100, progress=False)
        out = log_marginal_likelihood(model, guide, fmnist.test_x[:2000], num_samples=1)
        per_image[guide_name] = out["per_datapoint"]  # K = 1: the ELBO's estimate per image
    diff = per_image["flow"] - per_image["normal"]
    assert diff.mean().item() > 5 * diff.std().item() / math.sqrt(len(diff))
