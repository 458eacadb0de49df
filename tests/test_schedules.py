"""Learning-rate schedules and Adam settings: the rates each step gets, Adam's update with the
given β and ε, the burda2015 preset, and a resume across a stage boundary that equals a run
straight through."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae import TrainConfig, resume_run, train_run
from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.schedules import LR_SCHEDULES, burda_epochs, burda_stage
from pyrovae.inference.train import make_optimizer
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.config import PRESETS, preset_config
from pyrovae.runs.folder import read_config, read_metrics


def test_burda_stages_last_three_to_the_i_epochs():
    stages = [burda_stage(e) for e in range(40)]
    # stage i covers 3^i epochs: 1 of stage 0, 3 of stage 1, 9 of stage 2, 27 of stage 3
    assert stages == [0] + [1] * 3 + [2] * 9 + [3] * 27
    assert [burda_epochs(n) for n in range(9)] == [0, 1, 4, 13, 40, 121, 364, 1093, 3280]
    assert burda_stage(burda_epochs(8) - 1) == 7  # the paper's last pass is at lr 1e-3·10^-1


@pytest.mark.parametrize("epoch,stage", [(0, 0), (3, 1), (4, 2), (120, 4), (121, 5)])
def test_burda_factor_is_ten_to_minus_i_over_seven(epoch, stage):
    assert LR_SCHEDULES["burda"](epoch, 7, 100, 3280) == 10 ** (-stage / 7)


def test_cosine_runs_from_one_to_zero_over_the_run():
    f = LR_SCHEDULES["cosine"]
    assert f(0, 0, 10, 4) == 1.0
    assert f(2, 0, 10, 4) == pytest.approx(0.5)  # halfway: t = 20 of T = 40
    assert f(3, 9, 10, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert LR_SCHEDULES["constant"](3, 9, 10, 4) == 1.0


def test_adam_takes_the_given_betas_and_eps():
    """After one step from zero moments, m̂ = g and v̂ = g², so Δp = −lr·g / (|g| + ε) whatever the
    betas; the second step tells the betas apart: m = β₁(1−β₁)g + (1−β₁)g', bias-corrected."""
    g1, g2 = torch.tensor([0.3, -2.0]), torch.tensor([1.0, 0.5])
    lr, (b1, b2), eps = 0.1, (0.5, 0.75), 0.2
    p = torch.nn.Parameter(torch.zeros(2))
    opt = make_optimizer([torch.nn.ParameterList([p])], lr, (b1, b2), eps)
    p.grad = g1.clone()
    opt.step()
    torch.testing.assert_close(p.detach(), -lr * g1 / (g1.abs() + eps))
    before = p.detach().clone()
    p.grad = g2.clone()
    opt.step()
    m = (b1 * (1 - b1) * g1 + (1 - b1) * g2) / (1 - b1**2)
    v = (b2 * (1 - b2) * g1**2 + (1 - b2) * g2**2) / (1 - b2**2)
    torch.testing.assert_close(p.detach(), before - lr * m / (v.sqrt() + eps))


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"adam_betas": (0.9,)}, "--adam-betas needs two numbers"),
        ({"adam_betas": (0.9, 1.0)}, "--adam-betas needs two numbers"),
        ({"adam_eps": 0.0}, "--adam-eps must be a positive number"),
        ({"lr_schedule": "step"}, "unknown learning-rate schedule 'step'"),
    ],
)
def test_bad_optimizer_settings_are_one_line_errors(changes, message):
    with pytest.raises(PyroVAEError, match=message):
        TrainConfig(**changes)


def test_the_burda2015_preset_is_the_papers_protocol():
    config = preset_config("burda2015")
    assert (config.dataset, config.pixels, config.hidden, config.latent_dim) == (
        "mnist",
        "dynamic",
        (200, 200),
        50,
    )
    assert (config.activation, config.batch_size, config.lr) == ("tanh", 20, 1e-3)
    assert (config.adam_betas, config.adam_eps, config.lr_schedule) == ((0.9, 0.999), 1e-4, "burda")
    assert config.epochs == 3280
    assert preset_config("burda2015", epochs=121, estimator="iwae").epochs == 121
    with pytest.raises(PyroVAEError, match="unknown preset"):
        preset_config("burda2016")
    assert set(PRESETS) == {"burda2015", "burda2015-two-layers"}
    two = preset_config("burda2015-two-layers")
    assert (two.latent_dims, two.upper_hidden, two.hidden) == ((100, 50), (100, 100), (200, 200))
    assert two.replace(latent_dim=50, upper_hidden=()) == config  # the rest: one layer's


SMALL = {"dataset": "mnist", "hidden": (16,), "latent_dim": 3, "batch_size": 100, "device": "cpu"}


def _train(tmp_path, idx_dir, name, **changes):
    config = TrainConfig(**{**SMALL, **changes})
    return train_run(
        config, tmp_path / name, str(idx_dir), download=False, progress=False, figures=False
    )


@pytest.mark.parametrize("schedule", ["burda", "cosine"])
def test_each_step_gets_the_scheduled_rate(tmp_path, idx_dir, schedule):
    """300 images in batches of 100: the rate recorded at each epoch's last step."""
    _, history = _train(tmp_path, idx_dir, "run", epochs=5, lr=0.01, lr_schedule=schedule)
    f = LR_SCHEDULES[schedule]
    assert [r["lr"] for r in history] == pytest.approx([0.01 * f(e, 2, 3, 5) for e in range(5)])


@pytest.mark.parametrize("no_compile", [False, True])
def test_resume_across_a_stage_boundary_equals_a_run_straight_through(
    tmp_path, idx_dir, no_compile
):
    """Stage 0 is epoch 1 and stage 1 epochs 2–4: stop after epochs 1 and 3, resume to 5.
    Everything but the wall time is equal, train_elbo of the fast path included."""
    settings = {"lr": 0.01, "lr_schedule": "burda", "adam_eps": 1e-4, "no_compile": no_compile}
    straight, history = _train(tmp_path, idx_dir, "straight", epochs=5, **settings)
    resumed, _ = _train(tmp_path, idx_dir, "resumed", epochs=1, **settings)
    for epochs in (3, 5):
        resume_run(resumed, epochs=epochs, data_dir=str(idx_dir), download=False, progress=False)

    def timeless(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert timeless(read_metrics(resumed)) == timeless(history)
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    for key in ("model", "guide"):
        for name, tensor in a[key].items():
            assert torch.equal(b[key][name], tensor), name
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    for i, state in a["optimizer"]["state"].items():
        for name, tensor in state.items():
            assert torch.equal(b["optimizer"]["state"][i][name], tensor)


def test_cli_preset_with_overrides_is_recorded(tmp_path, idx_dir, capsys):
    run = tmp_path / "run"
    argv = ["train", "--preset", "burda2015", "--data-dir", str(idx_dir), "--run-dir", str(run)]
    argv += ["--epochs", "1", "--hidden", "8", "--batch-size", "100", "--no-progress"]
    assert main([*argv, "--no-download", "--no-figures", "--device", "cpu"]) == 0
    config = read_config(run)
    assert (config.adam_eps, config.lr_schedule, config.activation) == (1e-4, "burda", "tanh")
    assert (config.hidden, config.batch_size, config.epochs) == ((8,), 100, 1)
    assert main(["train", "--resume", str(run), "--preset", "burda2015", "--epochs", "2"]) == 2
    assert "--preset" in capsys.readouterr().err
