"""Train one VAE per setting of a grid for equal epochs on Fashion-MNIST; report test ELBO,
IWAE bound and importance-sampled log p(x) (the README's measured tables).

    python benchmarks/compare.py --grid estimators --epochs 10 --test-subset 1000
    python benchmarks/compare.py --grid guides --epochs 5 --test-subset 500 --num-samples 1000
    python benchmarks/compare.py --grid likelihoods --epochs 5 --test-subset 500
    python benchmarks/compare.py --grid layers --epochs 10 --test-subset 1000 --num-samples 5000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pyrovae
from pyrovae import TrainConfig, build_model_and_guide, fit, load_data, set_seed
from pyrovae.inference import active_units_by_site, evaluate_elbo, log_marginal_likelihood

# Burda et al. 2015's architectures: 784-200-200-50 and 784-200-200-100-100-100-50, tanh
ONE_LAYER = {"latent_dim": 50, "hidden": (200, 200), "activation": "tanh"}
TWO_LAYERS = {**ONE_LAYER, "latent_dim": (100, 50), "upper_hidden": (100, 100)}
OBJECTIVES = {"elbo": {"estimator": "elbo"}} | {
    name: {"estimator": name, "num_particles": 5} for name in ("iwae", "iwae-dreg")
}

# Each grid: (label, TrainConfig settings). Estimators: the multi-sample objectives at K=5.
GRIDS: dict[str, list[tuple[str, dict]]] = {
    "estimators": [
        ("elbo", {"estimator": "elbo"}),
        ("analytic-kl", {"estimator": "analytic-kl"}),
        ("elbo-stl", {"estimator": "elbo-stl"}),
        ("iwae", {"estimator": "iwae", "num_particles": 5}),
        ("iwae-dreg", {"estimator": "iwae-dreg", "num_particles": 5}),
        ("score-function", {"estimator": "score-function"}),
        ("score-function-loo", {"estimator": "score-function-loo", "num_particles": 5}),
    ],
    "guides": [
        (name, {"guide": name})
        for name in ("normal", "full-covariance", "laplace", "student-t", "logistic", "flow")
    ],
    "likelihoods": [
        ("bernoulli", {"likelihood": "bernoulli", "pixels": "dynamic"}),
        ("continuous-bernoulli", {"likelihood": "continuous-bernoulli", "pixels": "grey"}),
        ("gaussian", {"likelihood": "gaussian", "pixels": "grey"}),
        ("gaussian-learned", {"likelihood": "gaussian-learned", "pixels": "grey"}),
        ("laplace", {"likelihood": "laplace", "pixels": "grey"}),
    ],
    "layers": [
        (f"{layers}, {name}", {**arch, **objective})
        for layers, arch in (("1 layer (50)", ONE_LAYER), ("2 layers (100, 50)", TWO_LAYERS))
        for name, objective in OBJECTIVES.items()
    ],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", choices=list(GRIDS), default="estimators")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=1000, help="test images for log p(x)")
    p.add_argument("--num-samples", type=int, default=5000, help="K for log p(x)")
    p.add_argument("--iwae-k", type=int, default=50, help="K of the reported IWAE bound")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="+", default=None, help="labels of the grid to run")
    p.add_argument("--json", type=Path, default=None, help="default: results/<grid>.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = pyrovae.resolve_device(args.device)
    cache: dict[str, pyrovae.ImageData] = {}
    rows = []
    runs = [(lab, kw) for lab, kw in GRIDS[args.grid] if args.only is None or lab in args.only]
    for label, settings in runs:
        config = TrainConfig(**settings)
        if config.pixels not in cache:
            cache[config.pixels] = load_data(
                "fashion-mnist", config.pixels, device, train_subset=args.train_subset
            )
        data = cache[config.pixels]
        x_test = data.test_x[: args.test_subset]
        set_seed(args.seed)
        model, guide = build_model_and_guide(config, data.num_pixels)
        model.to(device)
        guide.to(device)
        name, k = config.estimator, config.num_particles
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
            "label": label,
            "estimator": name,
            "K": k,
            "pixels": config.pixels,
            "epochs": args.epochs,
            "test_elbo": elbo["elbo"],
            "test_kl": elbo["kl"],
            f"iwae_{args.iwae_k}": bound["log_px"],
            "log_px": lpx["log_px"],
            "log_px_stderr": lpx["stderr"],
            "log_px_mc_stderr": lpx["mc_stderr"],
            "active_units": list(active_units_by_site(guide, data.test_x).values()),
            "latent_dim": list(config.latent_dims),
            "seconds_per_epoch": train_s / args.epochs,
            "log_px_seconds": time.perf_counter() - start,
            "final_train_elbo": history[-1]["train_elbo"],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "device": str(device),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    out = args.json or Path(f"benchmarks/results/{args.grid}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    k_col = f"iwae_{args.iwae_k}"
    print(
        f"\n| {args.grid[:-1]} | K | test ELBO | IWAE L_{args.iwae_k} "
        f"| log p(x), K={args.num_samples} | KL | active units | s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        pairs = zip(r["active_units"], r["latent_dim"], strict=True)
        active = ", ".join(f"{a} / {d}" for a, d in pairs)
        print(
            f"| `{r['label']}` | {r['K']} | {r['test_elbo']:.2f} | {r[k_col]:.2f} | "
            f"{r['log_px']:.2f} ± {r['log_px_stderr']:.2f} | {r['test_kl']:.1f} | "
            f"{active} | {r['seconds_per_epoch']:.1f} |"
        )


if __name__ == "__main__":
    main()
