"""benchmarks/discrete_codes.py end to end on MNIST at a tiny budget: the plumbing of the
comparison (equal steps, equal wall-clock, a code an estimator does not apply to, the published
figures beside ours), not the paper's numbers. Skipped where ``../shared/data/mnist`` is absent."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "data" / "mnist"
SCRIPT = ROOT / "benchmarks" / "discrete_codes.py"

pytestmark = pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is absent")


def _script():
    spec = importlib.util.spec_from_file_location("discrete_codes", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TINY = ["--train-subset", "300", "--test-subset", "20", "--num-samples", "5"]
TINY += ["--curve-every", "2", "--data-dir", str(MNIST), "--device", "cpu", "--no-compile"]


def test_equal_steps_every_row_and_the_refusal(tmp_path, capsys):
    out = tmp_path / "steps.json"
    estimators = ["enumerate", "straight-through", "vimco"]
    rows = _script().main(
        ["--estimators", *estimators, "--steps", "4", "--json", str(out), *TINY]
    )
    assert [r["estimator"] for r in rows] == estimators
    refused, straight, vimco = rows
    assert "refused" in refused and "states" in refused["refused"]  # 10^20 states
    assert straight["K"] == 1 and vimco["K"] == 5
    for row in (straight, vimco):
        assert row["steps"] == 4 and len(row["curve"]) == 2
        assert math.isfinite(row["test_elbo"]) and math.isfinite(row["log_px"])
    assert straight["temperature"] == 1.0 and vimco["temperature"] is None
    table = capsys.readouterr().out
    assert "| `enumerate` | — |" in table and "does not apply" in table
    assert "-107.8 (ST Gumbel-S.)" in table  # Jang et al. 2017, Table 1, beside ours
    saved = json.loads(out.read_text())
    assert [r["estimator"] for r in saved["rows"]] == estimators


def test_equal_wall_clock_stops_on_the_clock(tmp_path):
    rows = _script().main(
        ["--code", "bernoulli", "--estimators", "rws", "--seconds", "0.5", "--json",
         str(tmp_path / "s.json"), *TINY]
    )
    (row,) = rows
    # the budget is training time after the compiled first step: at least 0.5 s of it, and
    # the step that crossed the line is the last one
    assert row["train_seconds"] >= 0.5 and row["steps"] >= 2
    assert row["train_seconds"] - 0.5 < 5 * row["ms_per_step"] / 1000 + 0.5


def test_an_unknown_estimator_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--estimators", "reinforce", "--steps", "1", *TINY],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "discrete_codes: error: unknown estimator 'reinforce'"
    ]
