"""Structured output prediction on MNIST (Sohn, Lee & Yan 2015): the baseline network, the CVAE
and the GSNN for 1, 2 and 3 observed quadrants, by the conditional −log p(x_miss|x_obs).

    MNIST=../shared/data/mnist
    python benchmarks/completion.py --data-dir $MNIST --epochs 1 --quadrants 1 --train-subset 2000
    python benchmarks/completion.py --data-dir $MNIST --epochs 10 --num-samples 100    # README's

For each number of quadrants q three runs go under ``--root``: ``base-q{q}`` (``pyrovae train
--condition-on quadrants:q --conditional-model baseline``), then ``cvae-q{q}`` and ``gsnn-q{q}``
(``--prior conditional --baseline-input`` that baseline), and ``cvae-warm-q{q}``, the CVAE with
``--kl-warmup`` (β from 0 to 1 over the first 5 epochs: without it the CVAE's z collapsed
at 2 and 3 quadrants, its decoder reading x_obs and ŷ directly). All are MLPs of ``--hidden``
(500 500, Pyro's tutorial's), latent ``--latent-dim`` (200, its), batch 128, Adam 10⁻³, dynamically
binarized pixels under the Bernoulli likelihood. A folder already trained to the budget is read,
an evaluation already made at (epoch, K, test images) is read too. −log p(x_miss|x_obs) is
importance-sampled with K = ``--num-samples`` (the run's guide as the proposal; p(z|x_obs) for
the GSNN; exact for the baseline) on the first ``--test-subset`` test images (all by default).

Published figures beside it (−CLL, lower is better): Pyro's tutorial "Conditional Variational
Auto-encoder" (``tutorial/source/cvae.ipynb``), its table of NN (baseline) and CVAE for 1, 2, 3
quadrants: 100.4 / 61.9 / 25.4 and 71.8 / 51.0 / 24.2, after at most 50 epochs with early
stopping on the test split, grey-level targets under a Bernoulli cross-entropy (not a density,
so not comparable to the nats here to the decimal), the CVAE's figure a 10-particle ELBO of
q(z|x, y) rather than an importance-sampled value. Sohn et al.'s MNIST table could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pyrovae import train_run
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.evaluate import evaluation_at
from pyrovae.runs.folder import CHECKPOINT, read_metrics

QUADRANTS = (1, 2, 3)
# row ↦ (--conditional-model, run-folder prefix); "cvae-warmup" adds --kl-warmup
MODELS = {
    "baseline": ("baseline", "base"),
    "cvae": ("cvae", "cvae"),
    "cvae-warmup": ("cvae", "cvae-warm"),
    "gsnn": ("gsnn", "gsnn"),
}
# Pyro's tutorial cvae.ipynb: NN (baseline) and CVAE (its "Monte Carlo" row), by quadrants.
PYRO_TUTORIAL = {"baseline": {1: 100.4, 2: 61.9, 3: 25.4}, "cvae": {1: 71.8, 2: 51.0, 3: 24.2}}
PYRO_TUTORIAL["cvae-warmup"] = PYRO_TUTORIAL["cvae"]


def folder(root: Path, model: str, q: int) -> Path:
    return root / f"{MODELS[model][1]}-q{q}"


def config_of(model: str, q: int, args: argparse.Namespace) -> TrainConfig:
    latent = (
        {}
        if model == "baseline"
        else {
            "prior": "conditional",
            "baseline_input": str(folder(Path(args.root), "baseline", q)),
        }
    )
    if model == "cvae-warmup":
        latent["kl_warmup"] = args.kl_warmup
    return TrainConfig(
        dataset="mnist",
        pixels="dynamic",
        condition_on=f"quadrants:{q}",
        conditional_model=MODELS[model][0],
        hidden=tuple(args.hidden),
        latent_dim=args.latent_dim,
        batch_size=128,
        lr=1e-3,
        epochs=args.epochs,
        train_subset=args.train_subset,
        seed=args.seed,
        device=args.device,
        **latent,
    )


def run_cell(model: str, q: int, args: argparse.Namespace) -> dict:
    """Train (or read) one run, then evaluate it (or read its evaluation)."""
    path = folder(Path(args.root), model, q)
    if not (path / CHECKPOINT).exists():
        common = {"data_dir": args.data_dir, "download": False, "progress": False}
        train_run(config_of(model, q, args), path, figures=True, **common)
    history = read_metrics(path)
    epoch = history[-1]["epoch"]
    figures = evaluation_at(
        path, args.num_samples, args.test_subset, args.device, args.data_dir, download=False
    )
    return {
        "model": model,
        "quadrants": q,
        "epochs": epoch,
        "seconds": sum(r["seconds"] for r in history),
        "num_test": figures["num_test"],
        "num_samples": figures["num_samples"],
        "nll": -figures["log_px"],
        "stderr": figures["log_px_stderr"],
        "test_kl": figures["test_kl"],
        "active_units": figures.get("active_units"),
    }


def table(rows: list[dict]) -> str:
    by = {(r["model"], r["quadrants"]): r for r in rows}
    qs = sorted({r["quadrants"] for r in rows})
    head = " | ".join(f"{q} quadrant{'s' if q > 1 else ''}" for q in qs)
    lines = [f"| model | {head} | Pyro's tutorial |", "|---|" + "---|" * (len(qs) + 1)]
    for model in MODELS:
        cells = []
        for q in qs:
            r = by.get((model, q))
            cells.append("—" if r is None else f"{r['nll']:.2f} ± {r['stderr']:.2f}")
        pyro = PYRO_TUTORIAL.get(model)
        published = " / ".join(str(pyro[q]) for q in qs) if pyro else "—"
        lines.append(f"| {model} | {' | '.join(cells)} | {published} |")
    lines.append("")
    for q in qs:  # Sohn et al.'s ordering: the CVAE at or below the baseline in −CLL
        base = by.get(("baseline", q))
        for name in ("cvae", "cvae-warmup"):
            cvae = by.get((name, q))
            if cvae and base:
                holds = "holds" if cvae["nll"] <= base["nll"] else "does not hold"
                lines.append(
                    f"{q} quadrant(s): {name} ≤ baseline {holds} "
                    f"({cvae['nll']:.2f} vs {base['nll']:.2f})"
                )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quadrants", type=int, nargs="+", default=list(QUADRANTS))
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument(
        "--kl-warmup", type=int, default=2345, help="cvae-warmup's steps (5 epochs of 469)"
    )
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data-dir", default=None, help="MNIST's IDX files (../shared/data/mnist)")
    p.add_argument("--root", default="runs/completion", help="the run folders go here")
    p.add_argument("--hidden", type=int, nargs="+", default=[500, 500])
    p.add_argument("--latent-dim", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=100, help="K of the importance sampling")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # the baseline first: the other two read it
    order = sorted(args.models, key=list(MODELS).index)
    rows = [run_cell(m, q, args) for q in args.quadrants for m in order]
    print(table(rows))
    if args.json is not None:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
