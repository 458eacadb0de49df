"""The GPU check: one command, under 8 minutes on one GPU, its findings as JSON.

    make gpu-check    # python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json

Six steps, each a subprocess with a time limit of its own, all within ``--budget`` seconds:

1. ``cuda-tests``: the CUDA-marked tests (``pytest -m cuda``);
2. ``epoch-time``: ``benchmarks/epoch_time.py --device cuda``, pyrovae's compiled epoch against
   the hand-written reference (Fashion-MNIST, batch 256, ``elbo`` and ``iwae`` K = 5), the
   ratio of medians, the compile seconds and the steps that repay them;
3. ``iwae-k``: ``benchmarks/scaling.py --device cuda``, IWAE milliseconds per step at
   K = 1, 5, 50 and each against K = 1;
4. ``evaluator``: ``benchmarks/evaluator.py --device cuda``, log p(x) with K = 5000 on all
   10 000 test images, seconds and peak GPU memory; then AIS (T = 100, C = 16, L = 10) on the
   first 100, seconds per 1000 images;
5. ``seeds``: ``benchmarks/seeds.py --device cuda``, the Burda protocol's batch-20 step
   compiled with CUDA graphs (``mode="reduce-overhead"``) alone, and 4 and 16 seeds side by
   side against the same number one after another;
6. ``torchrun``: ``torchrun --standalone --nproc_per_node 1 -m pyrovae train --device cuda``,
   one epoch, its checkpoint read back.

Each step's command, exit code, seconds, figures and the tail of its output go into the JSON;
the exit code is 0 when every step passed. Without a CUDA GPU the check refuses in one line
(exit 2). ``--smoke`` runs every step on the CPU at toy sizes to test this script itself: its
JSON says ``"smoke": true`` and ``"device": "cpu"``, and none of its figures is a GPU's.
Fashion-MNIST must be findable (``make data``, or ``$PYROVAE_DATA``): the GPU machine may have
no network.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUDGET = 470.0  # seconds: the check must end within 8 minutes
TAIL = 3000  # characters of each step's output kept in the JSON


@dataclass
class Step:
    """A subprocess, its time limit, and what to read from its results folder afterwards."""

    name: str
    command: list[str]
    timeout: float
    summarize: Callable[[Path], dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _tests(out: Path) -> dict[str, Any]:
    suite = ET.parse(out / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def _epoch_time(out: Path) -> dict[str, Any]:
    rows = _json(out / "epoch_time.json")["results"]
    keys = ("median_pyrovae", "median_reference", "median_reference-fused")
    keys += ("ratio_pyrovae_reference", "ratio_pyrovae_reference-fused")
    return {r["estimator"]: {k: r[k] for k in keys} for r in rows}


def _iwae(out: Path) -> dict[str, Any]:
    rows = [r for r in _json(out / "scaling.json")["rows"] if r["table"] == "particles"]
    base = rows[0]["iwae"]
    return {f"K={r['num_particles']}": {"ms": r["iwae"], "x_K1": r["iwae"] / base} for r in rows}


def _evaluator(out: Path) -> dict[str, Any]:
    result = _json(out / "evaluator.json")
    keys = ("images", "num_samples", "seconds", "log_px", "peak_cuda_mib", "peak_rss_mib")
    keys += ("ais_images", "ais_steps", "ais_seconds", "ais_seconds_per_1000", "ais_log_px")
    return {k: result[k] for k in keys if k in result}


def _seeds(out: Path) -> dict[str, Any]:
    keys = ("ms_one", "ms_in_turn", "ms_side_by_side", "side_by_side_over_one")
    keys += ("in_turn_over_side_by_side", "compile_seconds_single", "compile_seconds_batched")
    rows = _json(out / "seeds.json")["rows"]
    return {f"N={r['replicas']}": {k: r[k] for k in keys} for r in rows}


def _torchrun(out: Path) -> dict[str, Any]:
    from pyrovae.runs.checkpoint import load_checkpoint
    from pyrovae.runs.folder import read_metrics

    state = load_checkpoint(out / "run")
    last = read_metrics(out / "run")[-1]
    return {
        "world_size": state.get("world_size"),
        "ranks_in_checkpoint": len(state.get("rank_rngs", [])),
        "test_elbo": last["test_elbo"],
        "epoch_seconds": last["seconds"],
    }


# each step's sizes: on the GPU, and toy ones for --smoke on the CPU
SIZES = {
    "gpu": {
        "tests": [],  # every CUDA-marked test of the suite
        "epoch": ["--repeats", "3", "--estimators", "elbo", "iwae"],
        "iwae": ["--batch-sizes", "256", "--hidden-sizes", "400", "--particles", "1", "5", "50"],
        "evaluator": ["--images", "10000", "--num-samples", "5000"]
        + ["--batch-size", "500", "--chunk-size", "1000", "--ais-steps", "100"],
        "train": ["--train-subset", "6000"],
        # the Burda protocol's batch-20 step: CUDA graphs replay the compiled step
        "seeds": ["--preset", "burda2015", "--batch-size", "20", "--replicas", "4", "16"]
        + ["--compile-mode", "reduce-overhead", "--steps", "20", "--repeats", "3"],
    },
    "smoke": {
        "tests": ["tests/test_cli.py"],
        "epoch": ["--repeats", "1", "--train-subset", "256", "--estimators", "elbo"],
        "iwae": ["--batch-sizes", "16", "--hidden-sizes", "16", "--particles", "1", "5"]
        + ["--steps", "1", "--repeats", "1"],
        "evaluator": ["--images", "20", "--num-samples", "50"]
        + ["--batch-size", "20", "--chunk-size", "50", "--ais-steps", "3", "--ais-images", "5"],
        "train": ["--train-subset", "256", "--hidden", "16", "--latent-dim", "3"],
        "seeds": ["--replicas", "2", "--batch-size", "8", "--steps", "1", "--repeats", "1"],
    },
}


def steps(smoke: bool, out: Path) -> list[Step]:
    """The six steps, at GPU sizes on CUDA, or at toy sizes on the CPU with ``smoke``."""
    py, device = sys.executable, "cpu" if smoke else "cuda"
    size = SIZES["smoke" if smoke else "gpu"]
    tests = [py, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    tests += [f"--junitxml={out / 'junit.xml'}", *size["tests"]]
    epoch = [py, str(HERE / "epoch_time.py"), "--device", device, *size["epoch"]]
    iwae = [py, str(HERE / "scaling.py"), "--device", device, *size["iwae"]]
    evaluator = [py, str(HERE / "evaluator.py"), "--device", device, *size["evaluator"]]
    seeds = [py, str(HERE / "seeds.py"), "--device", device, *size["seeds"]]
    train = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    train += ["-m", "pyrovae", "train", "--device", device, "--epochs", "1", "--no-progress"]
    train += ["--no-figures", "--no-download", "--run-dir", str(out / "run"), *size["train"]]
    return [
        Step("cuda-tests", tests, 100, _tests),
        Step("epoch-time", [*epoch, "--json", str(out / "epoch_time.json")], 110, _epoch_time),
        Step("iwae-k", [*iwae, "--json", str(out / "scaling.json")], 60, _iwae),
        Step("evaluator", [*evaluator, "--json", str(out / "evaluator.json")], 75, _evaluator),
        Step("seeds", [*seeds, "--json", str(out / "seeds.json")], 75, _seeds),
        Step("torchrun", train, 50, _torchrun),
    ]


def run_step(step: Step, out: Path, limit: float, env: dict[str, str]) -> dict[str, Any]:
    """Run ``step`` for at most ``limit`` seconds (its whole process group is killed then:
    torchrun's workers too); a summary when it succeeded."""
    record: dict[str, Any] = {"step": step.name, "command": step.command, "limit_s": limit}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            step.command,
            cwd=ROOT,
            env={**env, **step.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=limit)
            status = "ok" if proc.returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            status = "timeout"
        log.seek(0)
        record["output_tail"] = log.read()[-TAIL:]
    record.update(returncode=proc.returncode, seconds=time.perf_counter() - start)
    if status == "ok":
        try:
            record["summary"] = step.summarize(out)
        except Exception as e:  # a result file missing or malformed: the step failed
            status = "failed"
            record["summary_error"] = f"{type(e).__name__}: {e}"
    record["status"] = status
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/gpu_check.json")
    p.add_argument("--budget", type=float, default=BUDGET, help="seconds for all the steps")
    p.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (tests the script)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu-check: error: no CUDA GPU is visible; nothing was checked", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from epoch_time import environment

    from pyrovae.core.errors import PyroVAEError
    from pyrovae.data.files import read_idx_dataset

    try:
        read_idx_dataset("fashion-mnist", download=False)
    except PyroVAEError as e:
        print(f"gpu-check: error: {e}", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    if args.smoke:
        env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "1")
    record: dict[str, Any] = {
        "format": "pyrovae-gpu-check/1",
        "smoke": args.smoke,
        "device": str(device),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "environment": environment(device),
        "budget_s": args.budget,
        "steps": [],
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for step in steps(args.smoke, out):
            left = args.budget - (time.perf_counter() - start)
            if left < 10:
                record["steps"].append({"step": step.name, "status": "skipped: no time left"})
                continue
            result = run_step(step, out, min(step.timeout, left), env)
            print(f"{step.name:12s} {result['status']:8s} {result['seconds']:7.1f} s", flush=True)
            record["steps"].append(result)
    record["total_seconds"] = time.perf_counter() - start
    record["ok"] = all(s["status"] == "ok" for s in record["steps"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'all passed' if record['ok'] else 'FAILED'}; wrote {args.json}")
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
