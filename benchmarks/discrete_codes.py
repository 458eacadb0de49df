"""Every estimator for a discrete code on binarized MNIST, at equal steps and at equal wall-clock:
test ELBO and importance-sampled log p(x) beside Jang, Gu & Poole (2017), Table 1.

    MNIST=../shared/data/mnist
    # categorical 20 × 10 code (Jang et al.'s VAE), every estimator, 3000 steps each
    python benchmarks/discrete_codes.py --code categorical --steps 3000 --data-dir $MNIST
    # the same at equal wall-clock: each estimator trains for 120 s
    python benchmarks/discrete_codes.py --code categorical --seconds 120 --data-dir $MNIST
    # the 200-unit Bernoulli code, two estimators, a short smoke run
    python benchmarks/discrete_codes.py --code bernoulli --estimators vimco rws --steps 50 \\
        --test-subset 100 --num-samples 50 --data-dir $MNIST

Each row trains a fresh model from the same seed with its estimator (K particles where the
estimator needs several) on batches of ``--batch-size`` drawn as ``pyrovae train`` draws them,
through the compiled step, and stops after ``--steps`` steps or ``--seconds`` of training,
whichever is given. The training curve (step, seconds, running ELBO) is kept for the notebook.
The test ELBO is the single-sample ELBO of the whole test set under the discrete q (the
relaxed estimators are scored on the unrelaxed model, as Jang et al. score them); log p(x) is
log (1/K) Σ_k p(x, z_k)/q(z_k|x) with K = ``--num-samples`` on the first ``--test-subset``
test images (Jang et al.: m = 1000). An estimator that does not apply to the code (enumeration
of 10^20 states) is reported as such, not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from pyrovae import TrainConfig, build_model_and_guide, load_data, resolve_device, set_seed
from pyrovae.core.errors import PyroVAEError
from pyrovae.inference import evaluate_elbo, log_marginal_likelihood, make_optimizer, svi_step
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.temperature import Temperature

# Jang, Gu & Poole (2017), Table 1, VAE rows: negative multi-sample bound (m = 1000) in nats on
# MNIST with fixed binarization, by their estimator names (SF with variance normalization).
PAPER: dict[str, dict[str, float]] = {
    "categorical": {"SF": 110.6, "ST Gumbel-S.": 107.8, "Gumbel-S.": 101.5},
    "bernoulli": {"SF": 112.2, "ST Gumbel-S.": 111.5, "Gumbel-S.": 105.0},
}
# Which of ours is which of theirs (the others are not in their table).
PAPER_NAME = {
    "score-function": "SF",
    "straight-through": "ST Gumbel-S.",
    "gumbel-softmax": "Gumbel-S.",
}
# Each code: its guide/prior pair and size (Jang et al.: 20 groups of 10; 200 units).
CODES: dict[str, dict[str, Any]] = {
    "categorical": {"guide": "categorical", "prior": "categorical", "latent_dim": 20},
    "bernoulli": {"guide": "bernoulli", "prior": "bernoulli", "latent_dim": 200},
}
# Estimators for discrete codes, each with its K: the multi-sample ones at --multi-k.
SINGLE = ("enumerate", "score-function", "nvil", "gumbel-softmax", "straight-through")
MULTI = ("score-function-loo", "vimco", "rws")
# Jang et al.'s authors' notebook network: 784-512-256-code-256-512-784, Adam 1e-3, batch 100.
NETWORK = {"hidden": (512, 256), "activation": "relu", "lr": 1e-3, "batch_size": 100}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", choices=list(CODES), default="categorical")
    p.add_argument("--estimators", nargs="+", default=[*SINGLE, *MULTI])
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="train each estimator for this many steps")
    budget.add_argument("--seconds", type=float, help="… or for this many seconds of training")
    p.add_argument("--multi-k", type=int, default=5, help="K of vimco, rws, score-function-loo")
    p.add_argument("--data-dir", default=None, help="the folder holding MNIST's IDX files")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=1000, help="test images for log p(x)")
    p.add_argument("--num-samples", type=int, default=1000, help="K for log p(x) (Jang: 1000)")
    p.add_argument("--curve-every", type=int, default=100, help="steps between curve points")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--no-compile", action="store_true", help="run the steps eagerly")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="default: results/discrete-<code>.json")
    return p.parse_args(argv)


def config_for(code: str, estimator: str, multi_k: int, train_subset: int | None) -> TrainConfig:
    k = multi_k if estimator in MULTI else 1
    return TrainConfig(
        dataset="mnist",
        pixels="static",
        estimator=estimator,
        num_particles=k,
        train_subset=train_subset,
        **CODES[code],
        **NETWORK,
    )


def train_row(config: TrainConfig, data, args: argparse.Namespace) -> dict[str, Any]:
    """Train one estimator to the budget; its curve and final figures."""
    set_seed(args.seed)
    model, guide = build_model_and_guide(config, data.num_pixels, data.num_classes, data.shape)
    device = data.device
    model.to(device)
    guide.to(device)
    estimator = make_estimator(config.estimator, config.num_particles)
    fast = (
        estimator
        if args.no_compile
        else CompiledELBO(estimator, log=lambda line: print(f"  {line}", file=sys.stderr))
    )
    optimizer = make_optimizer((model, guide), config.lr, config.adam_betas, config.adam_eps)
    annealed = getattr(estimator, "annealed", False)
    tau_at = config.temperature_schedule()
    curve: list[dict[str, float]] = []
    step, clock, total, seen, compile_s = 0, 0.0, 0.0, 0, 0.0
    epoch = 0
    done = False
    while not done:
        epoch += 1
        for x in data.train_batches(args.seed, epoch, config.batch_size):
            if x.shape[0] != config.batch_size:
                continue  # one graph: the short last batch is skipped
            start = time.perf_counter()
            with Temperature(tau_at(step)) if annealed else nullcontext():
                loss = svi_step(fast, model, guide, optimizer, x)
            took = time.perf_counter() - start
            if step == 0:
                compile_s = took  # recording and compiling (or warm-up): not in the budget
            else:
                clock += took
            step += 1
            total += loss
            seen += x.shape[0]
            if step % args.curve_every == 0:
                curve.append({"step": step, "seconds": clock, "train_elbo": -total / seen})
                total, seen = 0.0, 0
            if (args.steps is not None and step >= args.steps) or (
                args.seconds is not None and clock >= args.seconds
            ):
                done = True
                break
    elbo = evaluate_elbo(model, guide, data.test_x)
    x_test = data.test_x[: args.test_subset]
    start = time.perf_counter()
    lpx = log_marginal_likelihood(model, guide, x_test, args.num_samples)
    return {
        "estimator": config.estimator,
        "K": config.num_particles,
        "steps": step,
        "train_seconds": clock,
        "compile_seconds": compile_s,
        "ms_per_step": 1000 * clock / max(step - 1, 1),
        "temperature": tau_at(step - 1) if annealed else None,
        "test_elbo": elbo["elbo"],
        "test_kl": elbo["kl"],
        "log_px": lpx["log_px"],
        "log_px_stderr": lpx["stderr"],
        "log_px_seconds": time.perf_counter() - start,
        "curve": curve,
    }


def paper_figure(code: str, estimator: str) -> str:
    name = PAPER_NAME.get(estimator)
    return f"{-PAPER[code][name]:.1f} ({name})" if name else "—"


def table(rows: list[dict[str, Any]], code: str, args: argparse.Namespace) -> str:
    budget = f"{args.steps} steps" if args.steps is not None else f"{args.seconds:g} s"
    lines = [
        f"| estimator | K | steps | train s | ms/step | test ELBO | log p(x), K={args.num_samples}"
        f" | Jang et al. 2017, bound (m = 1000) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "refused" in r:
            lines.append(f"| `{r['estimator']}` | — | — | — | — | does not apply | — | — |")
            continue
        lines.append(
            f"| `{r['estimator']}` | {r['K']} | {r['steps']} | {r['train_seconds']:.0f} | "
            f"{r['ms_per_step']:.1f} | {r['test_elbo']:.2f} | {r['log_px']:.2f} ± "
            f"{r['log_px_stderr']:.2f} | {paper_figure(code, r['estimator'])} |"
        )
    return f"budget: {budget} per estimator\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        unknown = [e for e in args.estimators if e not in ESTIMATORS]
        if unknown:
            raise PyroVAEError(f"unknown estimator {unknown[0]!r}")
        device = resolve_device(args.device)
        data = load_data(
            "mnist", "static", device, data_dir=args.data_dir, train_subset=args.train_subset,
            download=False,
        )
        rows = []
        for name in args.estimators:
            try:
                config = config_for(args.code, name, args.multi_k, args.train_subset)
            except PyroVAEError as e:  # the estimator does not apply to this code: say so
                rows.append({"estimator": name, "K": "—", "refused": str(e)})
                print(f"{name}: not run: {e}", flush=True)
                continue
            row = train_row(config, data, args)
            rows.append(row)
            brief = {k: v for k, v in row.items() if k != "curve"}
            print(json.dumps(brief), flush=True)
    except PyroVAEError as e:
        print(f"discrete_codes: error: {e}", file=sys.stderr)
        sys.exit(2)
    meta = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    budget = f"{args.steps}steps" if args.steps is not None else f"{args.seconds:g}s"
    out = args.json or Path(f"benchmarks/results/discrete-{args.code}-{budget}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print("\n" + table(rows, args.code, args))
    return rows


if __name__ == "__main__":
    main()
