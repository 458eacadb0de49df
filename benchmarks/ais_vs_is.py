"""log p(x) of trained runs by importance sampling and by AIS at several T, on the same test
images, and BDMC's bounds on as many images simulated from each model; with the cost of each.

    MNIST=../shared/data/mnist
    # the measured table: IS K = 5000 and AIS T = 10, 100, 1000 on 100 test images of each run
    python benchmarks/ais_vs_is.py runs/iwae-table/1L-vae-k1 runs/iwae-table/1L-iwae-k5 \\
        --steps 10 100 1000 --test-subset 100 --data-dir $MNIST --json results/ais.json
    # BDMC on 50 simulated images at the same T
    python benchmarks/ais_vs_is.py runs/iwae-table/1L-vae-k1 --bdmc --steps 10 100 1000 \\
        --test-subset 50 --data-dir $MNIST

Each AIS row is printed beside importance sampling on the same images: its mean log p̂(x),
the standard error over images, the Monte-Carlo error of the mean, and the paired difference
AIS − IS with its standard error over images (AIS is a stochastic lower bound like IS: above IS
means tighter). ``s/1000`` is the wall time per 1000 images at this setting, measured. With
``--bdmc`` each row is instead the forward (lower) and reverse (upper) bound on simulated data
and their gap.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.ais import ais_log_marginal, bdmc
from pyrovae.inference.marginal import log_marginal_likelihood
from pyrovae.runs.load import first_test_images, load_run


def _stderr(values: torch.Tensor) -> float:
    return (values.std() / math.sqrt(values.numel())).item() if values.numel() > 1 else math.nan


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def measure(run_dir: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every row of one run."""
    run = load_run(run_dir, args.device, args.data_dir, download=False)
    x = first_test_images(run.data, args.test_subset, "--test-subset")
    n = x.shape[0]
    options = {"chains": args.chains, "leapfrog": args.leapfrog, "start": args.ais_from}
    rows: list[dict[str, Any]] = []
    if args.bdmc:
        for steps in args.steps:
            r, seconds = _timed(
                lambda steps=steps: bdmc(run.model, run.guide, x, steps=steps, **options)
            )
            rows.append(
                {
                    "run": run_dir,
                    "method": "bdmc",
                    "steps": steps,
                    **options,
                    "num_images": n,
                    "lower": r["lower"],
                    "upper": r["upper"],
                    "gap": r["gap"],
                    "gap_stderr": r["gap_stderr"],
                    "acceptance": r["acceptance_forward"],
                    "seconds_per_1000": seconds * 1000 / n,
                }
            )
            _print(rows[-1])
        return rows
    lml, seconds = _timed(lambda: log_marginal_likelihood(run.model, run.guide, x, args.is_samples))
    is_per = lml["per_datapoint"]
    rows.append(
        {
            "run": run_dir,
            "method": "is",
            "num_samples": args.is_samples,
            "num_images": n,
            "log_px": lml["log_px"],
            "stderr": lml["stderr"],
            "mc_stderr": lml["mc_stderr"],
            "seconds_per_1000": seconds * 1000 / n,
        }
    )
    _print(rows[-1])
    for steps in args.steps:
        r, seconds = _timed(
            lambda steps=steps: ais_log_marginal(run.model, run.guide, x, steps=steps, **options)
        )
        diff = r["per_datapoint"] - is_per
        rows.append(
            {
                "run": run_dir,
                "method": "ais",
                "steps": steps,
                **options,
                "num_images": n,
                "log_px": r["log_px"],
                "stderr": r["stderr"],
                "mc_stderr": r["mc_stderr"],
                "minus_is": diff.mean().item(),
                "minus_is_stderr": _stderr(diff),
                "acceptance": r["acceptance"],
                "seconds_per_1000": seconds * 1000 / n,
            }
        )
        _print(rows[-1])
    return rows


def _print(row: dict[str, Any]) -> None:
    name = Path(row["run"]).name
    if row["method"] == "is":
        print(
            f"{name:14s} IS  K={row['num_samples']:<6d}        log p(x) {row['log_px']:9.3f} "
            f"± {row['stderr']:.3f} (MC {row['mc_stderr']:.3f})      "
            f"{row['seconds_per_1000']:8.0f} s/1000",
            flush=True,
        )
    elif row["method"] == "ais":
        print(
            f"{name:14s} AIS T={row['steps']:<5d} C={row['chains']} L={row['leapfrog']}  "
            f"log p(x) {row['log_px']:9.3f} ± {row['stderr']:.3f} (MC {row['mc_stderr']:.3f}) "
            f"AIS − IS {row['minus_is']:+.3f} ± {row['minus_is_stderr']:.3f}, "
            f"acceptance {row['acceptance']:.2f}, {row['seconds_per_1000']:8.0f} s/1000",
            flush=True,
        )
    else:
        print(
            f"{name:14s} BDMC T={row['steps']:<5d} C={row['chains']} L={row['leapfrog']} "
            f"lower {row['lower']:9.3f} upper {row['upper']:9.3f} gap {row['gap']:.3f} "
            f"± {row['gap_stderr']:.3f}, {row['seconds_per_1000']:8.0f} s/1000",
            flush=True,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR")
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 100], metavar="T")
    parser.add_argument("--chains", type=int, default=16, metavar="C")
    parser.add_argument("--leapfrog", type=int, default=10, metavar="L")
    parser.add_argument("--ais-from", choices=["guide", "prior"], default="guide")
    parser.add_argument("--is-samples", type=int, default=5000, metavar="K")
    parser.add_argument("--test-subset", type=int, default=100, metavar="N")
    parser.add_argument("--bdmc", action="store_true", help="BDMC on simulated images instead")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", help="write the rows here too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    try:
        for run_dir in args.runs:
            rows.extend(measure(run_dir, args))
    except PyroVAEError as e:
        print(f"ais_vs_is.py: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
