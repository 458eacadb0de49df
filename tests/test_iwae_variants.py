"""MIWAE, CIWAE and PIWAE (Rainforth et al. 2018): their identities with ELBO and IWAE on the
same noise, PIWAE's split gradient, hand-computed bounds, and the parameter specs."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import DEVICES

from pyrovae import TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.estimators import parse_estimator
from pyrovae.inference.particles import draw_particles


def _vae(device="cpu", latent_dim=4, dtype=torch.float64):
    """A small VAE, in float64 so that identities hold to 1e-9 whatever the order of sums."""
    set_seed(0)
    config = TrainConfig(hidden=(32,), latent_dim=latent_dim)
    model, guide = build_model_and_guide(config, 784)
    x = torch.bernoulli(torch.rand(16, 784)).to(device, dtype)
    return model.to(device, dtype), guide.to(device, dtype), x


def _loss_and_grads(name, k, model, guide, x, seed=11):
    """−bound and the gradients (θ of the model, φ of the guide) of one seeded draw."""
    for p in [*model.parameters(), *guide.parameters()]:
        p.grad = None
    set_seed(seed)
    loss = make_estimator(name, k).loss_and_grads(model, guide, x)
    grads = lambda m: [p.grad.clone() for p in m.parameters()]  # noqa: E731
    return loss, grads(model), grads(guide)


def _assert_all_close(a, b):
    for ga, gb in zip(a, b, strict=True):
        torch.testing.assert_close(ga, gb, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "a,ka,b,kb",
    [
        ("miwae:1", 5, "iwae", 5),  # MIWAE(1, K) = IWAE_K
        ("miwae:4", 1, "elbo", 4),  # MIWAE(M, 1) = the ELBO of M samples
        ("ciwae:1", 5, "elbo", 5),  # CIWAE(1) = ELBO
        ("ciwae:0", 5, "iwae", 5),  # CIWAE(0) = IWAE
        ("piwae:1", 5, "iwae", 5),  # PIWAE(1, K): both parts are IWAE_K
    ],
)
def test_identities_under_the_same_noise(device, a, ka, b, kb):
    """The special cases are the bounds they reduce to, in value and in every gradient."""
    model, guide, x = _vae(device)
    loss_a, *grads_a = _loss_and_grads(a, ka, model, guide, x)
    loss_b, *grads_b = _loss_and_grads(b, kb, model, guide, x)
    assert loss_a == pytest.approx(loss_b, rel=1e-12)
    for ga, gb in zip(grads_a, grads_b, strict=True):
        _assert_all_close(ga, gb)


@pytest.mark.parametrize("latent_dim", [4, (4, 3)], ids=["one-layer", "two-layer"])
def test_piwae_splits_the_gradient_between_iwae_mk_and_miwae(latent_dim):
    """PIWAE(M, K): θ's gradient is IWAE(MK)'s, φ's is MIWAE(M, K)'s, on the same M·K
    particles; its loss is −L_MK. With two stochastic layers, z1's path through z2 counts once."""
    model, guide, x = _vae(latent_dim=latent_dim)
    loss, model_grads, guide_grads = _loss_and_grads("piwae:3", 4, model, guide, x)
    iwae_loss, iwae_model, iwae_guide = _loss_and_grads("iwae", 12, model, guide, x)
    _, miwae_model, miwae_guide = _loss_and_grads("miwae:3", 4, model, guide, x)
    assert loss == pytest.approx(iwae_loss, rel=1e-12)
    _assert_all_close(model_grads, iwae_model)
    _assert_all_close(guide_grads, miwae_guide)
    # and the two weightings differ here, so the test could tell them apart
    for one, other in ((iwae_guide, miwae_guide), (iwae_model, miwae_model)):
        assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(one, other, strict=True))


def test_piwae_survives_weights_that_underflow():
    """A group whose best particle is far below the others' has underflowing L_MK weights;
    its φ-gradient (MIWAE's weights, not small) must stay finite and equal MIWAE's. In float32,
    where a weight below e^−104 is 0."""
    model, guide, x = _vae(dtype=torch.float32)
    with torch.no_grad():  # a wide encoder: log-weights spread over hundreds of nats
        guide.encoder.net[-1].bias[4:] += 4.0
    _, _, piwae_guide = _loss_and_grads("piwae:4", 2, model, guide, x)
    _, _, miwae_guide = _loss_and_grads("miwae:4", 2, model, guide, x)
    set_seed(11)
    p = draw_particles(model, guide, (x,), {}, 8)
    assert (torch.softmax(p.log_w.detach(), 0) == 0).any()  # some weights underflow to 0
    for a, b in zip(piwae_guide, miwae_guide, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def test_bounds_equal_a_hand_computation_from_the_log_weights():
    """MIWAE, CIWAE and PIWAE's values from the same particles' log w (M·K, B), by loops."""
    model, guide, x = _vae()
    m, k, beta = 3, 4, 0.3
    set_seed(5)
    log_w = draw_particles(model, guide, (x,), {}, m * k).log_w.detach().double()

    def lme(v):  # log (1/n) Σ exp v, written out
        top = max(v)
        return top + math.log(sum(math.exp(u - top) for u in v) / len(v))

    columns = log_w.T.tolist()  # one list of M·K log-weights per datapoint
    miwae = sum(sum(lme(c[g * k : (g + 1) * k]) for g in range(m)) / m for c in columns)
    iwae = sum(lme(c) for c in columns)
    ciwae = sum(beta * sum(c) / len(c) + (1 - beta) * lme(c) for c in columns)
    for spec, per, expected in [
        ("miwae:3", k, miwae),
        ("piwae:3", k, iwae),
        ("ciwae:0.3", m * k, ciwae),
    ]:
        set_seed(5)
        assert -make_estimator(spec, per).loss(model, guide, x) == pytest.approx(expected, 1e-5)


def test_miwae_lies_between_the_elbo_and_iwae():
    """Jensen, datapoint by datapoint on the same particles: ELBO ≤ MIWAE(M, K) ≤ IWAE(MK),
    and CIWAE(β) is the straight line between ELBO and IWAE."""
    model, guide, x = _vae()
    set_seed(3)
    with torch.no_grad():
        log_w = draw_particles(model, guide, (x,), {}, 12).log_w
    from pyrovae.inference.iwae_variants import grouped_bound

    elbo, iwae = log_w.mean(0), grouped_bound(log_w, 1)
    for groups in (2, 3, 4, 6):
        miwae = grouped_bound(log_w, groups)
        assert (elbo <= miwae + 1e-4).all() and (miwae <= iwae + 1e-4).all()
    assert torch.allclose(grouped_bound(log_w, 12), elbo, atol=1e-4)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("miwae:0", "must be an integer ≥ 1"),
        ("piwae:two", "must be an integer ≥ 1"),
        ("miwae:2.5", "must be an integer ≥ 1"),
        ("ciwae:1.5", "β must be a number in [0, 1]"),
        ("ciwae:nan", "β must be a number in [0, 1]"),
        ("iwae:3", "takes no parameter"),
        ("miwea:3", "unknown estimator 'miwea'"),
    ],
)
def test_bad_specs_are_one_line_errors(spec, message):
    with pytest.raises(PyroVAEError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_estimator(spec, 4)
    with pytest.raises(PyroVAEError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig(estimator=spec, num_particles=4)


def test_specs_and_defaults():
    """Bare names are the paper's settings; the parameter follows a colon."""
    assert parse_estimator("miwae")[1] == {}
    assert make_estimator("miwae", 8).num_particles == 64  # MIWAE(8, 8): 64 draws
    assert make_estimator("piwae:2", 8).num_particles == 16
    assert make_estimator("ciwae", 64).beta == 0.5
    assert make_estimator("ciwae:0.25", 64).num_particles == 64
    assert make_estimator("miwae:4", 16).objective == "MIWAE(4,16)"


MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"
SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "tighter_bounds.py"


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is absent")
def test_the_benchmark_end_to_end_at_a_tiny_budget(tmp_path, capsys):
    """benchmarks/tighter_bounds.py trains, evaluates and diagnoses each row, and at the IWAE
    run's network PIWAE's SNR is MIWAE's for the encoder and IWAE's for the decoder (same seed
    of the diagnostic draws: the split gradient, seen through ``diagnose``; to 1e-4, float32
    sums in another order, the identity itself being tested to 1e-9 in float64 above)."""
    spec = importlib.util.spec_from_file_location("tighter_bounds", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "rows.json"
    argv = ["--rows", "iwae", "miwae", "piwae", "--epochs", "1", "--train-subset", "100"]
    argv += ["--num-samples", "5", "--test-subset", "10", "--snr-samples", "3"]
    argv += ["--data-dir", str(MNIST), "--root", str(tmp_path), "--json", str(out)]
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert "PIWAE(8,8) below IWAE in −log p(x)" in printed
    result = json.loads(out.read_text())
    assert [r["row"] for r in result["rows"]] == ["iwae", "miwae", "piwae"]
    at = result["at_iwae"]
    assert at["piwae"]["encoder"] == pytest.approx(at["miwae"]["encoder"], rel=1e-4)
    assert at["piwae"]["decoder"] == pytest.approx(at["iwae"]["decoder"], rel=1e-4)
    assert at["piwae"]["encoder"] != pytest.approx(at["iwae"]["encoder"], rel=1e-3)
    assert all(math.isfinite(r["nll"]) for r in result["rows"])
