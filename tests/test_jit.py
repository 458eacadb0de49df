"""The traced fast path (JitELBO) gives the plain path's loss and gradients, for every estimator
and every part, after parameter updates, across batch shapes and β; training with it is the same
run."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES

from pyrovae import TrainConfig, build_model_and_guide, fit, train_run
from pyrovae.core.runtime import seeded, set_seed
from pyrovae.data import load_data
from pyrovae.data.base import PIXEL_MODES
from pyrovae.guides.families import GUIDES
from pyrovae.inference.beta import LatentScale
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.jit import JitELBO
from pyrovae.inference.train import make_optimizer
from pyrovae.models.likelihoods import LIKELIHOODS
from pyrovae.models.prior import PRIORS
from pyrovae.nets import NETS
from pyrovae.runs.folder import read_config

D = 784
# float32 sums of ~10⁴ terms, evaluated in a different order by the recorded graph
RTOL = 1e-5


def _parts(device="cpu", **changes):
    config = TrainConfig(hidden=(16,), latent_dim=3, **changes)
    set_seed(0)
    model, guide = build_model_and_guide(config, D)
    return model.to(device), guide.to(device)


def _batch(n=6, pixels="dynamic", device="cpu"):
    """Pixels as the data module gives them: binarized, grey levels, or on the 8-bit grid."""
    mode = PIXEL_MODES[pixels]
    with seeded(1):
        x = torch.rand(n, D, device=device)
        if mode.binary:
            return torch.bernoulli(x)
        return x if mode.levels is None else (x * mode.levels).round() / mode.levels


def _loss_and_grads(estimator, model, guide, x, seed):
    params = list(model.parameters()) + list(guide.parameters())
    for p in params:
        p.grad = None
    with seeded(seed):
        loss = estimator.differentiable_loss(model, guide, x)
        loss.backward()
        after = torch.rand(())  # where the global generator stands afterwards
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    return loss.detach(), grads, after


def _assert_same(plain, fast):
    (loss_a, grads_a, after_a), (loss_b, grads_b, after_b) = plain, fast
    torch.testing.assert_close(loss_b, loss_a, rtol=RTOL, atol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=RTOL, atol=1e-5 * (a.abs().max().item() + 1e-12))
    assert after_a == after_b  # the same random draws, no more (recording's are discarded)


def _cases():
    for name in ESTIMATORS:
        for k in (1, 3):
            if name == "score-function-loo" and k == 1:
                continue  # the leave-one-out baseline needs K ≥ 2
            yield name, k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,k", list(_cases()))
def test_every_estimator_gives_the_plain_loss_and_gradients(device, name, k):
    model, guide = _parts(device)
    x = _batch(device=device)
    plain, fast = make_estimator(name, k), JitELBO(make_estimator(name, k))
    optimizer = make_optimizer((model, guide), 1e-2)
    for seed in (3, 4):  # the recording step, then a replay after the parameters moved
        _assert_same(
            _loss_and_grads(plain, model, guide, x, seed),
            _loss_and_grads(fast, model, guide, x, seed),
        )
        optimizer.step()
    assert fast.num_traces == (1 if fast.traceable else 0)


def _one_of_each():
    """Every likelihood, guide, prior and net at least once (the others at their defaults)."""
    for likelihood in LIKELIHOODS:
        yield {"likelihood": likelihood}
    for guide in GUIDES:
        yield {"guide": guide, "beta": 0.0 if guide == "delta" else 1.0}
    for prior in PRIORS:
        yield {"prior": prior}
    for net in NETS:
        yield {"net": net}


@pytest.mark.parametrize(
    "changes", list(_one_of_each()), ids=lambda c: "-".join(map(str, c.values()))
)
def test_every_part_gives_the_plain_loss_and_gradients(changes):
    accepted = LIKELIHOODS[changes.get("likelihood", "bernoulli")].pixels
    pixels = "dynamic" if "dynamic" in accepted else min(accepted)  # grey, or 8bit
    model, guide = _parts(pixels=pixels, **changes)
    x = _batch(pixels=pixels)
    beta = changes.get("beta", 1.0)
    plain, fast = make_estimator("elbo", 2), JitELBO(make_estimator("elbo", 2))
    with LatentScale(beta):
        _assert_same(
            _loss_and_grads(plain, model, guide, x, 5), _loss_and_grads(fast, model, guide, x, 5)
        )


def test_a_graph_per_shape_and_per_beta():
    model, guide = _parts()
    fast = JitELBO(make_estimator("analytic-kl"))
    for n in (6, 6, 4, 6):
        fast.differentiable_loss(model, guide, _batch(n))
    assert fast.num_traces == 2  # batches of 6 and of 4
    plain = make_estimator("analytic-kl")
    x = _batch(6)
    for beta in (0.5, 2.0):
        with LatentScale(beta):
            _assert_same(
                _loss_and_grads(plain, model, guide, x, 7),
                _loss_and_grads(fast, model, guide, x, 7),
            )
    assert fast.num_traces == 4
    model.eval()  # train/eval mode is part of the key too
    fast.differentiable_loss(model, guide, x)
    assert fast.num_traces == 5


def test_evaluation_loss_is_the_plain_one():
    model, guide = _parts()
    x = _batch()
    fast = JitELBO(make_estimator("iwae", 4))
    with seeded(2):
        a = make_estimator("iwae", 4).loss(model, guide, x)
    with seeded(2):
        b = fast.loss(model, guide, x)
    assert a == b and fast.num_traces == 0


@pytest.mark.parametrize("kl_warmup", [0, 7])
def test_training_with_jit_is_the_same_run(idx_dir, kl_warmup):
    data = load_data("mnist", "dynamic", data_dir=str(idx_dir), download=False)
    histories, weights = [], []
    for jit in (False, True):
        model, guide = _parts(dataset="mnist")
        kwargs = {"epochs": 2, "batch_size": 64, "seed": 1, "beta": 0.5, "kl_warmup": kl_warmup}
        # 2 epochs of 5 steps, the last one a partial batch: two recorded graphs
        history = fit(model, guide, data, "elbo", jit=jit, progress=False, **kwargs)
        histories.append(history)
        weights.append([p.detach().clone() for p in guide.parameters()])
    for a, b in zip(*histories, strict=True):
        for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "beta"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_a_run_with_no_jit_is_the_same_run(tmp_path, idx_dir):
    small = {"dataset": "mnist", "hidden": (16,), "latent_dim": 3, "epochs": 1, "device": "cpu"}
    runs = {}
    for no_jit in (False, True):
        config = TrainConfig(**small, no_jit=no_jit)
        path, history = train_run(
            config, tmp_path / str(no_jit), str(idx_dir), download=False, progress=False
        )
        assert read_config(path).no_jit is no_jit  # recorded, so --resume keeps it
        runs[no_jit] = history[-1]
    for key in ("train_elbo", "test_elbo"):
        assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-5)
