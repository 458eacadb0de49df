"""benchmarks/reproduce_iwae.py end to end on MNIST, on a tiny budget: the plumbing of the
table (rows, resume, evaluation reuse, paper figures beside ours), not the paper's numbers.
Skipped where ``../shared/data/mnist`` (beside the repository) is absent."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pyrovae.core.errors import PyroVAEError

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "data" / "mnist"


def _script():
    spec = importlib.util.spec_from_file_location(
        "reproduce_iwae", ROOT / "benchmarks" / "reproduce_iwae.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


script = _script()


def test_row_names_and_paper_figures():
    assert [r.name for r in script.select(["1L-k5"])] == ["1L-vae-k5", "1L-iwae-k5", "1L-dreg-k5"]
    assert script.ROWS["1L-iwae-k50"].paper == 84.78
    assert script.ROWS["1L-vae-k1"].paper == 86.76
    assert script.ROWS["1L-stl-k1"].paper is None  # not in the paper's table
    config = script.config_of(script.ROWS["1L-dreg-k5"], 13, 0, "cpu", None)
    assert (config.estimator, config.num_particles, config.epochs) == ("iwae-dreg", 5, 13)
    assert (config.hidden, config.activation, config.adam_eps) == ((200, 200), "tanh", 1e-4)
    two = script.config_of(script.ROWS["2L-iwae-k50"], 3280, 0, "cpu", None)
    assert (two.latent_dims, two.upper_hidden, two.num_particles) == ((100, 50), (100, 100), 50)
    assert script.ROWS["2L-iwae-k50"].paper == 82.90


def test_orderings_are_checked_at_equal_budget():
    rows = [
        {"layers": 1, "objective": "VAE", "k": 5, "nll": 90.0, "passes": 4, "active_units": 10},
        {"layers": 1, "objective": "IWAE", "k": 5, "nll": 89.0, "passes": 4, "active_units": 12},
        {"layers": 1, "objective": "VAE", "k": 1, "nll": 89.5, "passes": 4, "active_units": 11},
        {"layers": 1, "objective": "DReG", "k": 5, "nll": 89.0, "passes": 1, "active_units": 9},
    ]
    two = {"layers": 2, "k": 5, "passes": 4}  # active units per layer, compared in total
    rows += [
        {**two, "objective": "VAE", "nll": 91.0, "active_units": [9, 2]},
        {**two, "objective": "IWAE", "nll": 88.0, "active_units": [8, 4]},
    ]
    checks = script.orderings(rows)
    assert "2L IWAE k=5 more active units than VAE k=5: holds (12.00 vs 11.00)" in checks
    assert "2L IWAE k=5 > 1L IWAE k=5: holds (-88.00 vs -89.00)" in checks
    assert "2L VAE k=5 > 1L VAE k=5: does NOT hold (-91.00 vs -90.00)" in checks
    assert script.units_text([8, 4]) == "8 + 4" and script.units_text(None) == "—"
    assert "1L IWAE k=5 > VAE k=5: holds (-89.00 vs -90.00)" in checks
    assert "1L VAE k=5 ≥ VAE k=1: does NOT hold (-90.00 vs -89.50)" in checks
    assert "1L IWAE k=5 more active units than VAE k=5: holds (12.00 vs 10.00)" in checks
    assert not any("DReG" in c for c in checks)  # trained for another budget: not compared


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is absent")
def test_a_short_row_end_to_end(tmp_path, capsys):
    common = ["--root", str(tmp_path / "runs"), "--data-dir", str(MNIST), "--no-progress"]
    common += ["--train-subset", "200", "--test-subset", "20", "--eval-samples", "10"]
    common += ["--device", "cpu", "--json", str(tmp_path / "table.json")]
    first = script.main(["--rows", "1L-vae-k1", "1L-iwae-k5", "--passes", "1", *common])
    assert [(r["row"], r["passes"], r["num_test"]) for r in first] == [
        ("1L-vae-k1", 1, 20),
        ("1L-iwae-k5", 1, 20),
    ]
    out = capsys.readouterr().out
    assert "| 1 | IWAE | 5 | 85.54 |" in out and "log p(x) with K = 10 at pass 1" in out
    saved = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert saved[0]["nll"] == pytest.approx(first[0]["nll"]) and saved[0]["nll"] > 0
    # the same command again: nothing to train, nothing to evaluate
    again = script.main(["--rows", "1L-vae-k1", "--passes", "1", *common])
    out = capsys.readouterr().out
    assert "training" not in out and "log p(x)" not in out.split("|")[0]
    assert again[0]["nll"] == first[0]["nll"]
    # a longer budget resumes the row from its checkpoint and evaluates the new pass
    longer = script.main(["--rows", "1L-vae-k1", "--passes", "2", *common])
    out = capsys.readouterr().out
    assert "resuming at pass 1 of 2" in out and "at pass 2" in out
    assert longer[0]["passes"] == 2 and longer[0]["last_lr"] == pytest.approx(1e-3 * 10 ** (-1 / 7))


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is absent")
def test_a_row_stopped_before_its_first_checkpoint_starts_again(tmp_path, capsys):
    """A kill after the folder's config.json and before the first checkpoint leaves a folder
    that a new run may not overwrite: the row resumes it from pass 0."""
    common = ["--root", str(tmp_path / "runs"), "--data-dir", str(MNIST), "--no-progress"]
    common += ["--train-subset", "100", "--test-subset", "10", "--eval-samples", "5"]
    common += ["--device", "cpu", "--json", str(tmp_path / "table.json")]
    script.main(["--rows", "1L-vae-k1", "--passes", "1", *common])
    folder = tmp_path / "runs" / "1L-vae-k1"
    reference = json.loads((folder / script.EVALUATED).read_text())
    for name in ("checkpoint.pt", "metrics.jsonl", "evaluation.json", script.EVALUATED):
        (folder / name).unlink()  # as if killed right after create_run
    rows = script.main(["--rows", "1L-vae-k1", "--passes", "1", *common])
    assert "resuming at pass 0 of 1" in capsys.readouterr().out
    assert rows[0]["passes"] == 1 and rows[0]["nll"] == pytest.approx(-reference["log_px"])


def test_a_pyrovae_error_is_one_line_and_exit_2(tmp_path):
    import subprocess

    folder = tmp_path / "runs" / "1L-vae-k1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{ damaged")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reproduce_iwae.py"), "--rows", "1L-vae-k1"]
        + ["--passes", "1", "--root", str(tmp_path / "runs"), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("reproduce_iwae.py: error: ") and result.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is absent")
def test_a_row_of_seeds_side_by_side_gives_mean_and_spread(tmp_path, capsys):
    common = ["--root", str(tmp_path / "runs"), "--data-dir", str(MNIST), "--no-progress"]
    common += ["--train-subset", "200", "--test-subset", "20", "--eval-samples", "10"]
    common += ["--device", "cpu", "--json", str(tmp_path / "table.json"), "--passes", "1"]
    (row,) = script.main(["--rows", "1L-iwae-k5", "--seeds", "0", "1", "2", *common])
    singles = []
    for seed in (0, 1, 2):
        run = tmp_path / "runs" / "1L-iwae-k5" / f"seed-{seed}"
        singles.append(script.result(script.ROWS["1L-iwae-k5"], run, script.read_evaluated(run)))
    nlls = [r["nll"] for r in singles]
    assert row["seeds"] == [0, 1, 2] and len(set(nlls)) == 3
    assert row["nll"] == pytest.approx(sum(nlls) / 3)
    mean = sum(nlls) / 3
    assert row["nll_seed_sd"] == pytest.approx((sum((v - mean) ** 2 for v in nlls) / 2) ** 0.5)
    assert "over 3 seeds" in capsys.readouterr().out
    with pytest.raises(PyroVAEError, match="was trained with seeds"):
        script.main(["--rows", "1L-iwae-k5", "--seeds", "0", "1", *common])
