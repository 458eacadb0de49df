"""Train the same VAE with every estimator for equal epochs; report test ELBO, IWAE bound and
importance-sampled log p(x) on Fashion-MNIST (the README's measured row).

    python benchmarks/compare_estimators.py --epochs 5 --test-subset 1000 --num-samples 5000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyrovae
from pyrovae import TrainConfig, build_model_and_guide, fit, load_data, set_seed
from pyrovae.inference import active_units, evaluate_elbo, log_marginal_likelihood

# K per estimator: the multi-sample objectives at K=5, the single-sample ones at K=1.
DEFAULT_RUNS = [
    ("elbo", 1),
    ("analytic-kl", 1),
    ("elbo-stl", 1),
    ("iwae", 5),
    ("iwae-dreg", 5),
    ("score-function", 1),
    ("score-function-loo", 5),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=1000, help="test images for log p(x)")
    p.add_argument("--num-samples", type=int, default=5000, help="K for log p(x)")
    p.add_argument("--iwae-k", type=int, default=50, help="K of the reported IWAE bound")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", default=None, help="estimator names to run")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/estimators.json"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = pyrovae.resolve_device(args.device)
    data = load_data("fashion-mnist", "dynamic", device, train_subset=args.train_subset)
    x_test = data.test_x[: args.test_subset]
    config = TrainConfig()
    rows = []
    runs = [(n, k) for n, k in DEFAULT_RUNS if args.only is None or n in args.only]
    for name, k in runs:
        set_seed(args.seed)
        model, guide = build_model_and_guide(config, data.num_pixels)
        model.to(device)
        guide.to(device)
        start = time.perf_counter()
        history = fit(
            model,
            guide,
            data,
            name,
            num_particles=k,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=False,
        )
        train_s = time.perf_counter() - start
        elbo = evaluate_elbo(model, guide, data.test_x)
        bound = log_marginal_likelihood(model, guide, x_test, args.iwae_k)
        start = time.perf_counter()
        lpx = log_marginal_likelihood(model, guide, x_test, args.num_samples, progress=True)
        row = {
            "estimator": name,
            "K": k,
            "epochs": args.epochs,
            "test_elbo": elbo["elbo"],
            "test_kl": elbo["kl"],
            f"iwae_{args.iwae_k}": bound["log_px"],
            "log_px": lpx["log_px"],
            "log_px_stderr": lpx["stderr"],
            "log_px_mc_stderr": lpx["mc_stderr"],
            "active_units": active_units(guide, data.test_x),
            "seconds_per_epoch": train_s / args.epochs,
            "log_px_seconds": time.perf_counter() - start,
            "final_train_elbo": history[-1]["train_elbo"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "device": str(device),
        "num_train": int(data.train_x.shape[0]),
        "num_test_log_px": int(x_test.shape[0]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    k_col = f"iwae_{args.iwae_k}"
    print(
        f"\n| estimator | K | test ELBO | IWAE L_{args.iwae_k} | log p(x), K={args.num_samples} "
        "| KL | active units | s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['estimator']}` | {r['K']} | {r['test_elbo']:.2f} | {r[k_col]:.2f} | "
            f"{r['log_px']:.2f} ± {r['log_px_stderr']:.2f} | {r['test_kl']:.1f} | "
            f"{r['active_units']} | {r['seconds_per_epoch']:.1f} |"
        )


if __name__ == "__main__":
    main()
