"""``pyrovae evaluate`` (log p(x), active units, --test-subset) and ``pyrovae diagnose``."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_dataset

from pyrovae.cli import main
from pyrovae.data.images import load_data
from pyrovae.inference.evaluate import evaluate_elbo
from pyrovae.inference.marginal import active_units
from pyrovae.runs.build import build_model_and_guide
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import DIAGNOSTICS, EVALUATION, read_config, read_diagnostics

LATENT_DIM = 4
NUM_TEST = 100  # conftest.write_dataset's test split

# Four large Adam steps: the encoder has moved off the prior (every unit active, KL of a few
# nats) but is far from the true posterior, so log p(x) − ELBO = KL(q ‖ p(z|x)) is several nats.
TRAIN = [
    "train",
    "--dataset",
    "mnist",
    "--hidden",
    "32",
    "--latent-dim",
    str(LATENT_DIM),
    "--batch-size",
    "50",
    "--lr",
    "1e-2",
    "--epochs",
    "1",
    "--train-subset",
    "200",
    "--device",
    "cpu",
    "--no-progress",
    "--no-download",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(IDX folder, run folder) trained once for the module, with its own empty cache."""
    root = tmp_path_factory.mktemp("trained")
    idx, path = root / "idx", root / "run"
    write_dataset(idx)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        mp.delenv("PYROVAE_DATA", raising=False)
        assert main([*TRAIN, "--data-dir", str(idx), "--run-dir", str(path)]) == 0
    return idx, path


@pytest.fixture
def idx_dir(trained):
    return trained[0]


@pytest.fixture
def run(trained, tmp_path, capsys):
    """A fresh copy of the trained run, so each test sees only what it wrote."""
    capsys.readouterr()
    return Path(shutil.copytree(trained[1], tmp_path / "run"))


def _data_flags(idx_dir):
    return ["--data-dir", str(idx_dir), "--no-download"]


def _evaluate(run, idx_dir, capsys, *extra):
    code = main(["evaluate", str(run), *_data_flags(idx_dir), "--no-progress", *extra])
    assert code == 0
    out = capsys.readouterr().out
    # strict JSON: a NaN or infinity in evaluation.json would be an error here
    stored = json.loads((run / EVALUATION).read_text(), parse_constant=_no_constants)
    return out, stored["evaluations"][-1]  # the latest evaluation comes last


def _no_constants(name):
    raise AssertionError(f"evaluation.json holds {name}")


def _restore(run, idx_dir):
    """The run's model and guide and its test images, rebuilt from public pieces."""
    config = read_config(run)
    data = load_data(config.dataset, config.pixels, "cpu", str(idx_dir), download=False)
    model, guide = build_model_and_guide(config, data.num_pixels)
    state = load_checkpoint(run)
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    return model, guide, data.test_x


LOG_PX_KEYS = {"log_px", "log_px_stderr", "log_px_mc_stderr", "ess", "num_samples"}


def test_evaluate_log_px_is_above_the_elbo(run, idx_dir, capsys):
    out, k50 = _evaluate(run, idx_dir, capsys, "--num-samples", "50")
    assert LOG_PX_KEYS | {"test_elbo", "test_recon", "test_kl", "active_units"} <= set(k50)
    assert k50["num_test"] == NUM_TEST and k50["num_samples"] == 50
    assert 1 <= k50["ess"] <= 50 and k50["log_px_mc_stderr"] > 0
    assert 0 <= k50["active_units"] <= LATENT_DIM == k50["latent_dim"]
    assert f"{k50['log_px']:.3f} ± {k50['log_px_stderr']:.3f} (K=50, MC error" in out
    assert f"active units         {k50['active_units']} / {LATENT_DIM}" in out

    _, k1 = _evaluate(run, idx_dir, capsys, "--num-samples", "1")
    # with K = 1 the estimate is a single-sample ELBO: one weight, no Monte-Carlo spread
    assert k1["ess"] == 1 and k1["log_px_mc_stderr"] == 0
    # ... of the same quantity as test_elbo, with independent noise. The spread of single-sample
    # estimates over images (between images + Monte Carlo) is ≥ their Monte-Carlo spread, so
    # k1's stderr bounds the MC error of either mean, and √2·stderr that of their difference.
    assert abs(k1["log_px"] - k1["test_elbo"]) < 4 * math.sqrt(2) * k1["log_px_stderr"]

    # E[L_50] ≥ E[L_1] = ELBO. The difference of the two estimates has MC error at most
    # σ = √(stderr_1² + mc_50²) (as above). For this barely trained model L_50 − ELBO is ≈ 7
    # nats, 3σ ≈ 4: a log p(x) that were only an ELBO would fail.
    sigma = math.hypot(k1["log_px_stderr"], k50["log_px_mc_stderr"])
    assert k50["log_px"] - k50["test_elbo"] > 3 * sigma
    # the same test ELBO whatever K (its own fixed seed)
    assert k1["test_elbo"] == k50["test_elbo"]


def test_test_subset_evaluates_the_first_images(run, idx_dir, capsys):
    _, figures = _evaluate(run, idx_dir, capsys, "--test-subset", "20", "--num-samples", "0")
    assert figures["num_test"] == 20
    # K = 0 skips log p(x); K is recorded, as part of the evaluation's setting
    assert figures["num_samples"] == 0 and not (LOG_PX_KEYS - {"num_samples"}) & set(figures)
    model, guide, test_x = _restore(run, idx_dir)
    expected = evaluate_elbo(model, guide, test_x[:20])
    assert figures["test_elbo"] == pytest.approx(expected["elbo"], rel=1e-6)
    assert figures["test_kl"] == pytest.approx(expected["kl"], rel=1e-6)
    assert figures["active_units"] == active_units(guide, test_x[:20])


def test_one_test_image_has_no_spread(run, idx_dir, capsys):
    out, figures = _evaluate(run, idx_dir, capsys, "--test-subset", "1", "--num-samples", "10")
    assert figures["num_test"] == 1
    assert figures["log_px_stderr"] is None and figures["active_units"] is None
    assert math.isfinite(figures["log_px"]) and "± n/a (K=10" in out


BAD_EVALUATE = {
    "negative K": (["--num-samples", "-1"], "--num-samples must be at least 0, got -1"),
    "empty subset": (["--test-subset", "0"], "--test-subset must be at least 1, got 0"),
    "subset too big": (["--test-subset", "101"], "between 1 and 100 (the test images), got 101"),
}


@pytest.mark.parametrize("args,message", BAD_EVALUATE.values(), ids=BAD_EVALUATE.keys())
def test_bad_evaluate_input(run, idx_dir, capsys, args, message):
    assert main(["evaluate", str(run), *_data_flags(idx_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error: ") and message in err and err.count("\n") == 1
    assert not (run / EVALUATION).exists()


def _diagnose(run, idx_dir, *args):
    return main(["diagnose", str(run), *_data_flags(idx_dir), *args])


def test_diagnose_compares_gradient_variances(run, idx_dir, capsys):
    grid = ["--estimators", "elbo", "score-function", "--num-particles", "1", "2"]
    assert _diagnose(run, idx_dir, *grid, "--samples", "10", "--batch-size", "16") == 0
    out = capsys.readouterr().out
    rows = read_diagnostics(run)
    assert [(r["estimator"], r["num_particles"]) for r in rows] == [
        ("elbo", 1),
        ("elbo", 2),
        ("score-function", 1),
        ("score-function", 2),
    ]
    for r in rows:
        assert r["samples"] == 10 and r["batch_size"] == 16
        for group in ("encoder", "decoder"):
            figures = r[group]
            assert all(math.isfinite(v) and v > 0 for v in figures.values()), r
        assert f"{r['encoder']['variance_mean']:.3e}" in out
    elbo, sf = {r["num_particles"]: r for r in rows[:2]}, {r["num_particles"]: r for r in rows[2:]}
    # the score function's encoder gradient is far noisier (≈ 10⁵× here)
    assert sf[1]["encoder"]["variance_mean"] > 10 * elbo[1]["encoder"]["variance_mean"]
    for k in (1, 2):
        # seed 0 per row: both draw the same z, and only the encoder's gradient differs
        for key, value in elbo[k]["decoder"].items():
            assert sf[k]["decoder"][key] == pytest.approx(value, rel=1e-5)
    # K = 2 halves the variance. Per component, the ratio of two variance estimates from M = 10
    # draws is ~ 2 · F(9, 9) (below 1 with probability ≈ 0.16); the mean over ~10⁴ components
    # is far tighter.
    assert elbo[2]["encoder"]["variance_mean"] < elbo[1]["encoder"]["variance_mean"]

    # each row is seeded on its own: a smaller grid gives the same row, which replaces the
    # earlier row of the same setting and keeps the others
    one = ["--estimators", "elbo", "--num-particles", "1", "--samples", "10", "--batch-size", "16"]
    assert _diagnose(run, idx_dir, *one) == 0
    assert read_diagnostics(run) == [*rows[1:], rows[0]]


BAD_DIAGNOSE = {
    "unknown estimator": (["--estimators", "magic"], "unknown estimator 'magic'"),
    "loo with K=1": (["--estimators", "score-function-loo"], "needs --num-particles of at least 2"),
    "no particles": (["--num-particles", "0"], "--num-particles must be at least 1, got 0"),
    "one sample": (["--samples", "1"], "--samples must be at least 2, got 1"),
    "empty batch": (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    "batch too big": (["--batch-size", "101"], "between 1 and 100 (the test images), got 101"),
}


@pytest.mark.parametrize("args,message", BAD_DIAGNOSE.values(), ids=BAD_DIAGNOSE.keys())
def test_bad_diagnose_input(run, idx_dir, capsys, args, message):
    # argparse keeps the last of a repeated option: the bad value replaces the good default
    good = ["--estimators", "elbo", "--num-particles", "1", "--samples", "2"]
    assert _diagnose(run, idx_dir, *good, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error: ") and message in err and err.count("\n") == 1
    assert not (run / DIAGNOSTICS).exists()


def test_diagnose_takes_the_defaults_for_what_is_not_given(run, idx_dir, capsys):
    """Estimators or K alone: the other comes from diagnose's defaults (the run is elbo, K = 1:
    K = 1 and 10; the run's own estimator first)."""
    few = ["--samples", "3", "--batch-size", "8", "--no-progress"]
    assert _diagnose(run, idx_dir, "--estimators", "elbo", *few) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert ["elbo", "1"] in rows and ["elbo", "10"] in rows
    assert _diagnose(run, idx_dir, "--num-particles", "5", *few) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert ["elbo", "5"] in rows and ["iwae", "5"] in rows and ["elbo", "1"] not in rows


def test_console_diagnose_error_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pyrovae", "diagnose", str(tmp_path)]
        + ["--estimators", "score-function-loo", "--num-particles", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        "pyrovae: error: the leave-one-out baseline needs --num-particles of at least 2\n"
    )


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_evaluate_and_diagnose(run, idx_dir, capsys):
    _, figures = _evaluate(run, idx_dir, capsys, "--device", "cuda", "--num-samples", "20")
    assert math.isfinite(figures["log_px"])
    grid = ["--estimators", "elbo", "--num-particles", "1", "--samples", "5"]
    assert _diagnose(run, idx_dir, "--device", "cuda", *grid) == 0
