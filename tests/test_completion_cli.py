"""Structured output prediction and the conditional prior from the command line: train the
baseline, then the CVAE and GSNN fed by it; evaluate, sample, refusals in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyrovae.cli import main

TINY = ["--hidden", "16", "--latent-dim", "3", "--epochs", "1", "--no-progress", "--no-download"]
TINY += ["--train-subset", "60", "--batch-size", "20", "--dataset", "mnist"]


def _train(run, idx_dir, *args: str) -> int:
    return main(["train", *TINY, "--data-dir", str(idx_dir), "--run-dir", str(run), *args])


def _evaluate(run, idx_dir, *args: str) -> int:
    argv = ["evaluate", str(run), "--num-samples", "4", "--test-subset", "10", "--no-progress"]
    return main([*argv, "--data-dir", str(idx_dir), *args])


def _one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pyrovae: error:") and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def baseline(tmp_path, idx_dir):
    run = tmp_path / "base"
    assert (
        _train(run, idx_dir, "--condition-on", "quadrants:1", "--conditional-model", "baseline")
        == 0
    )
    return run


def test_baseline_feeds_a_cvae_and_a_gsnn_each_evaluated_on_the_missing_pixels(
    tmp_path, idx_dir, baseline, capsys
):
    assert _evaluate(baseline, idx_dir) == 0
    out = capsys.readouterr().out
    assert "log p(x_miss|x_obs)" in out and "KL(" not in out and "active units" not in out
    entry = json.loads((baseline / "evaluation.json").read_text())["evaluations"][-1]
    # the baseline has no latent: its bound and its importance-sampled value are one number
    assert entry["log_px"] == pytest.approx(entry["test_elbo"], abs=1e-4)
    # bits per dimension over the 3 quadrants predicted: 784 − 14·14 = 588 values
    assert entry["log_px_bpd"] == pytest.approx(-entry["log_px"] / (588 * np.log(2)), rel=1e-6)
    for model in ("cvae", "gsnn"):
        run = tmp_path / model
        flags = ["--condition-on", "quadrants:1", "--conditional-model", model]
        code = _train(
            run, idx_dir, *flags, "--prior", "conditional", "--baseline-input", str(baseline)
        )
        assert code == 0
        assert (run / "figures" / "completions.png").is_file()
        assert _evaluate(run, idx_dir) == 0
        out = capsys.readouterr().out
        assert "log p(x_miss|x_obs)" in out
        if model == "gsnn":  # q = p(z|x_obs): its KL term is zero
            assert "KL(p(z|x_obs) || p(z|x_obs)) 0.000" in out
        else:
            assert "KL(q(z|x) || p(z|x_obs))" in out
        code = main(["sample", str(run), "--num", "4"])
        _one_line_error(capsys, code, "completes images", "completions.png")


def test_what_a_baseline_run_cannot_do_is_refused_in_one_line(baseline, idx_dir, capsys):
    code = _evaluate(baseline, idx_dir, "--method", "ais", "--ais-steps", "2", "--chains", "2")
    _one_line_error(capsys, code, "no latent to anneal")
    args = ["--estimators", "elbo", "--num-particles", "1", "--samples", "2", "--no-progress"]
    code = main(["diagnose", str(baseline), *args, "--data-dir", str(idx_dir)])
    _one_line_error(capsys, code, "no latent variable")
    code = main(["gaps", str(baseline), "--data-dir", str(idx_dir), "--test-subset", "2"])
    _one_line_error(capsys, code, "needs a latent variable")


def test_a_baseline_input_that_does_not_fit_is_refused_before_training(
    tmp_path, idx_dir, baseline, capsys
):
    cases = [
        (["--condition-on", "quadrants:2"], str(baseline), "condition_on"),
        (["--condition-on", "quadrants:1", "--hidden", "8"], str(baseline), "hidden"),
        (["--condition-on", "quadrants:1"], str(tmp_path / "nowhere"), "nowhere"),
    ]
    for flags, source, word in cases:
        run = tmp_path / "refused"
        code = _train(run, idx_dir, *flags, "--prior", "conditional", "--baseline-input", source)
        _one_line_error(capsys, code, word)
        assert not run.exists()
    cvae = tmp_path / "cvae"
    assert _train(cvae, idx_dir, "--condition-on", "quadrants:1") == 0
    capsys.readouterr()
    code = _train(
        tmp_path / "r2", idx_dir, "--condition-on", "quadrants:1", "--baseline-input", str(cvae)
    )
    _one_line_error(capsys, code, "needs a --conditional-model baseline run")


def test_a_mask_file_of_the_wrong_shape_is_one_line(tmp_path, idx_dir, capsys):
    mask = tmp_path / "mask.npy"
    np.save(mask, np.ones((5, 5), dtype=bool))
    run = tmp_path / "run"
    code = _train(run, idx_dir, "--condition-on", f"mask:{mask}")
    _one_line_error(capsys, code, "mask file", "(28, 28)")
    assert not run.exists()


def test_own_odd_sized_colour_images_are_completed_through_a_mask_file(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 3, 5, 7), dtype=np.uint8)  # (N, C, H, W)
    np.save(tmp_path / "x.npy", images)
    mask = np.zeros((5, 7), dtype=bool)
    mask[:, :3] = True  # the left 3 columns of every channel observed
    np.save(tmp_path / "mask.npy", mask)
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(tmp_path / "x.npy"), "--test-fraction", "0.25"]
    argv += ["--pixels", "grey", "--likelihood", "gaussian", "--hidden", "8", "--latent-dim", "2"]
    argv += ["--epochs", "1", "--no-progress", "--run-dir", str(run), "--prior", "conditional"]
    assert main([*argv, "--condition-on", f"mask:{tmp_path / 'mask.npy'}"]) == 0
    assert (run / "figures" / "completions.png").is_file()
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["condition_on"].startswith("mask:") and config["prior"] == "conditional"


def test_a_label_cvae_with_a_conditional_prior_samples_and_names_its_figures(
    tmp_path, idx_dir, capsys
):
    run = tmp_path / "lab"
    assert (
        _train(
            run, idx_dir, "--conditional", "--prior", "conditional", "--estimator", "analytic-kl"
        )
        == 0
    )
    assert main(["sample", str(run), "--label", "2", "--num", "4"]) == 0
    assert (run / "samples-label-2.png").is_file()
    capsys.readouterr()
    assert _evaluate(run, idx_dir) == 0
    out = capsys.readouterr().out
    assert "log p(x|y)" in out and "KL(q(z|x,y) || p(z|y))" in out
