"""benchmarks/fisher_ae.py: the test-time corruptions against their definitions, and the whole
comparison end to end on tiny IDX data written by the test (the plumbing, not MNIST's numbers):
its four rows, the noisy training copy, the reconstructions, and a second call reading the runs."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset

from pyrovae.runs.folder import read_evaluations
from pyrovae.runs.load import load_run

ROOT = Path(__file__).resolve().parent.parent
Z = 4.0  # standard errors allowed in the seeded statistical checks


def _script():
    spec = importlib.util.spec_from_file_location("fisher_ae", ROOT / "benchmarks" / "fisher_ae.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape, s, side", [((1, 28, 28), 0.25, (7, 7)), ((3, 8, 12), 0.5, (4, 6))])
def test_the_square_zeroes_exactly_the_top_left_corner(shape, s, side):
    x = torch.rand(5, math.prod(shape)) + 0.5  # no pixel is 0 before
    out = _script().square(x, s, shape, torch.Generator())
    images = out.reshape(5, *shape)
    expected = torch.ones(shape, dtype=torch.bool)
    expected[:, : side[0], : side[1]] = False  # ⌊s·H⌋ × ⌊s·W⌋ in every channel
    assert torch.equal(images != 0, expected.expand_as(images))
    assert torch.equal(out[(out != 0)], x[(out != 0)])  # the rest untouched
    assert torch.equal(x, x.clamp(min=0.5))  # the input is not modified in place


@pytest.mark.parametrize("s", [0.25, 0.5])
def test_dropout_zeroes_a_share_s_of_the_pixels_and_keeps_the_rest(s):
    n = 200 * 784
    x = torch.rand(200, 784) + 0.5
    out = _script().dropout(x, s, (1, 28, 28), torch.Generator().manual_seed(0))
    rate = (out == 0).float().mean().item()
    # the zeroed count is Binomial(n, s): the rate's std is √(s(1 − s)/n) (≈ 0.0011 here)
    assert abs(rate - s) < Z * math.sqrt(s * (1 - s) / n)
    kept = out != 0
    assert torch.equal(out[kept], x[kept])  # not rescaled


@pytest.mark.parametrize("s", [0.25, 0.5])
def test_noise_adds_a_gaussian_of_std_s_unclipped(s):
    n = 200 * 784
    x = torch.full((200, 784), 0.5)
    module = _script()
    e = module.noise(x, s, (1, 28, 28), torch.Generator().manual_seed(0)) - x
    # the sample mean's std is s/√n; the sample std's is s/√(2n) for a Gaussian
    assert abs(e.mean().item()) < Z * s / math.sqrt(n)
    assert abs(e.std().item() - s) < Z * s / math.sqrt(2 * n)
    assert e.min() < -0.5 and e.max() > 0.5  # past [0, 1]: not clipped
    again = module.noise(x, s, (1, 28, 28), torch.Generator().manual_seed(0)) - x
    assert torch.equal(e, again)  # seeded: every run gets the same corrupted inputs


@pytest.mark.slow
def test_four_rows_the_noisy_copy_and_a_second_call_reads_the_runs(tmp_path, capsys):
    arrays = write_dataset(tmp_path / "idx", n_train=100, n_test=20)
    root = tmp_path / "runs"
    argv = ["--data-dir", str(tmp_path / "idx"), "--root", str(root), "--epochs", "1"]
    argv += ["--hidden", "16", "--latent-dim", "2", "--test-subset", "10", "--num-samples", "3"]
    argv += ["--device", "cpu", "--json", str(tmp_path / "rows.json")]
    module = _script()
    rows = module.main(argv)
    assert [(r["model"], r["training"]) for r in rows] == [
        ("vae", "clean"),
        ("fisher", "clean"),
        ("vae", "noisy"),
        ("fisher", "noisy"),
    ]
    columns = ["clean", "square 0.25", "square 0.5", "dropout 0.25", "dropout 0.5"]
    columns += ["noise 0.25", "noise 0.5"]
    for r in rows:
        assert r["epochs"] == 1 and r["num_test"] == 10 and r["num_samples"] == 3
        assert math.isfinite(r["test_elbo"]) and math.isfinite(r["log_px"])
        assert list(r["mse"]) == columns
    out = capsys.readouterr().out
    assert "| Fisher AE | + noise σ = 0.3 |" in out and "| VAE | clean |" in out
    assert out.count("Fisher AE < VAE") == 2 * len(columns)

    # the noisy copy: clean + 0.3·N(0, 1) seeded by --seed, clipped; the test split clean
    train = torch.from_numpy(arrays["train"][0]).float().div(255).reshape(100, -1)
    with np.load(root / "mnist-train-noise0.3.npz") as saved:
        noisy = torch.from_numpy(saved["train_images"]).reshape(100, -1)
        test = torch.from_numpy(saved["test_images"]).reshape(20, -1)
    eps = torch.randn(train.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, (train + 0.3 * eps).clamp(0, 1))
    assert torch.equal(test, torch.from_numpy(arrays["t10k"][0]).float().div(255).reshape(20, -1))

    # the MSEs by hand: the decoder's mean at the encoder's mean of x̃, against the clean x
    run = load_run(root / "fisher-noisy", "cpu", download=False)
    x = run.data.test_x[:10]
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for name, corrupted in (("clean", x), ("noise 0.5", x + 0.5 * eps)):
        with torch.no_grad():
            recon = run.model.mean(run.guide.posterior(corrupted).mean)
        errors = (recon - x).pow(2).mean(-1)
        mean, stderr = rows[3]["mse"][name]
        assert mean == pytest.approx(errors.mean().item(), rel=1e-5)
        assert stderr == pytest.approx(errors.std().item() / math.sqrt(10), rel=1e-5)

    # read again: nothing retrained, no second evaluation
    again = module.main(argv)
    assert [r["log_px"] for r in again] == [r["log_px"] for r in rows]
    assert all(len(read_evaluations(root / f"{r['model']}-{r['training']}")) == 1 for r in rows)
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert [r["mse"]["noise 0.5"][0] for r in saved] == [r["mse"]["noise 0.5"][0] for r in rows]

    # a folder trained to another budget is refused, not read as this one: one line, exit 2
    other = [a if a != "1" else "2" for a in argv]  # --epochs 2
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fisher_ae.py"), *other],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fisher_ae: error: {root / 'vae-clean'} holds 1 epochs, not --epochs 2: remove it"
    ]
