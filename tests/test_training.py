"""fit(): the loss falls, NaN stops training without touching anything, resume is exact."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES

from pyrovae import TrainConfig, build_model_and_guide, fit, load_run, resume_run, train_run
from pyrovae.core.errors import TrainingDiverged
from pyrovae.data import load_data
from pyrovae.inference import estimators
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import CHECKPOINT, METRICS, read_config, read_metrics

SMALL = {"hidden": (64,), "latent_dim": 8, "dataset": "mnist", "train_subset": 300}


def _data(idx_dir, pixels="dynamic"):
    return load_data("mnist", pixels, data_dir=str(idx_dir), download=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("estimator", ["elbo", "analytic-kl"])
def test_loss_falls_over_a_few_hundred_steps(idx_dir, estimator, device):
    data = _data(idx_dir).to(device)  # 300 images of 4 noisy prototypes, resident on device
    model, guide = build_model_and_guide(TrainConfig(**SMALL), data.num_pixels)
    model.to(device)
    guide.to(device)
    history = fit(
        model, guide, data, estimator, epochs=20, batch_size=20, lr=3e-3, progress=False
    )  # 15 steps an epoch: 300 steps
    first, last = history[0], history[-1]
    # each epoch's mean is over 300 images: its noise is well under a nat; the gain is ~100 nats
    assert last["train_elbo"] > first["train_elbo"] + 50
    assert last["test_elbo"] > first["test_elbo"] + 50
    assert abs(last["test_elbo"] - (last["test_recon"] - last["test_kl"])) < 1e-3


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_nan_loss_stops_before_the_update(idx_dir):
    data = _data(idx_dir, "grey")
    data.train_x[5] = float("nan")
    config = TrainConfig(**{**SMALL, "pixels": "grey", "likelihood": "continuous-bernoulli"})
    model, guide = build_model_and_guide(config, data.num_pixels)
    before = [p.detach().clone() for p in guide.parameters()]
    with pytest.raises(TrainingDiverged, match="epoch 1, step"):
        fit(model, guide, data, "elbo", epochs=1, batch_size=300, progress=False)
    for p, q in zip(guide.parameters(), before, strict=True):
        assert torch.equal(p, q)


def _run(tmp_path, idx_dir, epochs, name="run"):
    config = TrainConfig(**{**SMALL, "epochs": epochs, "device": "cpu"})
    return train_run(config, tmp_path / name, str(idx_dir), download=False, progress=False)


def test_resume_gives_the_same_run_as_training_straight_through(tmp_path, idx_dir):
    _, straight = _run(tmp_path, idx_dir, 2, "straight")
    path, first = _run(tmp_path, idx_dir, 1, "resumed")
    assert [r["epoch"] for r in first] == [1]
    _, resumed = resume_run(path, epochs=2, data_dir=str(idx_dir), download=False, progress=False)
    assert [r["epoch"] for r in resumed] == [1, 2]
    for key in ("train_elbo", "test_elbo"):
        assert resumed[1][key] == pytest.approx(straight[1][key], rel=1e-6)
    assert [r["epoch"] for r in read_metrics(path)] == [1, 2]


@pytest.mark.filterwarnings("ignore:Encountered NaN")
def test_diverged_resume_keeps_the_checkpoint(tmp_path, idx_dir, monkeypatch):
    path, _ = _run(tmp_path, idx_dir, 1)
    ckpt, metrics = (path / CHECKPOINT).read_bytes(), (path / METRICS).read_bytes()

    class NaNELBO:
        def __init__(self, **kwargs):
            pass

        def loss_and_grads(self, model, guide, x):
            return float("nan")

    monkeypatch.setitem(estimators.ESTIMATORS, "elbo", NaNELBO)
    with pytest.raises(TrainingDiverged):
        resume_run(path, epochs=2, data_dir=str(idx_dir), download=False, progress=False)
    assert (path / CHECKPOINT).read_bytes() == ckpt
    assert (path / METRICS).read_bytes() == metrics


def test_load_run_rebuilds_the_checkpoint(tmp_path, idx_dir):
    path, history = _run(tmp_path, idx_dir, 1)
    run = load_run(path, data_dir=str(idx_dir), download=False)
    state = load_checkpoint(path, "cpu")
    assert run.epoch == 1 and run.config == read_config(path) and run.path == path
    for module, key in ((run.model, "model"), (run.guide, "guide")):
        for name, value in module.state_dict().items():
            assert torch.equal(value, state[key][name]), name
    assert run.data.test_x.shape[0] > 0
