"""``make gpu-check``'s script, tested on the CPU: it refuses without a GPU, and with --smoke it
runs every one of its steps at toy sizes and reads each step's figures back."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _run(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=timeout,
    )


def _script(monkeypatch):
    """The script as a module, for a call in this process; its imports of its siblings and of
    the repository (sys.path) and its module entry are undone after the test."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_without_a_gpu_it_refuses_in_one_line(tmp_path):
    result = _run("--json", str(tmp_path / "check.json"))
    assert result.returncode == 2
    assert result.stderr == "gpu-check: error: no CUDA GPU is visible; nothing was checked\n"
    assert not (tmp_path / "check.json").exists()


@pytest.mark.slow
def test_smoke_runs_every_step_and_reads_its_figures(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_dataset(data)
    out = tmp_path / "check.json"
    result = _run("--smoke", "--json", str(out), env={"PYROVAE_DATA": str(data)})
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads(out.read_text())
    assert record["smoke"] is True and record["device"] == "cpu" and record["ok"] is True
    steps = {s["step"]: s for s in record["steps"]}
    assert list(steps) == ["cuda-tests", "epoch-time", "iwae-k", "evaluator", "seeds", "torchrun"]
    assert all(s["status"] == "ok" and s["seconds"] > 0 for s in steps.values())
    tests = steps["cuda-tests"]["summary"]
    assert tests["tests"] >= 1 and tests["failures"] == tests["errors"] == 0
    ratio = steps["epoch-time"]["summary"]["elbo"]["ratio_pyrovae_reference"]
    assert 0 < ratio < 100
    iwae = steps["iwae-k"]["summary"]
    assert iwae["K=1"]["x_K1"] == 1 and iwae["K=5"]["ms"] > 0
    evaluator = steps["evaluator"]["summary"]
    assert evaluator["images"] == 20 and evaluator["num_samples"] == 50
    assert evaluator["log_px"] < 0
    assert evaluator["ais_images"] == 5 and evaluator["ais_steps"] == 3
    assert evaluator["ais_log_px"] < 0 and evaluator["ais_seconds_per_1000"] > 0
    seeds = steps["seeds"]["summary"]["N=2"]
    assert seeds["ms_one"] > 0 and seeds["ms_side_by_side"] > 0
    assert seeds["compile_seconds_batched"] > 0
    train = steps["torchrun"]["summary"]
    assert train["world_size"] == 1 and train["ranks_in_checkpoint"] == 1
    assert train["test_elbo"] < 0
    # the budget is enforced: with too little left, steps are skipped, not run over time
    # (the same main in this process: the script's own start is tested above)
    monkeypatch.setenv("PYROVAE_DATA", str(data))
    assert _script(monkeypatch).main(["--smoke", "--budget", "5", "--json", str(out)]) == 1
    assert {s["status"] for s in json.loads(out.read_text())["steps"]} == {"skipped: no time left"}
