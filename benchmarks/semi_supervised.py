"""M2 (Kingma et al. 2014) on MNIST with 100, 600, 1000 and 3000 labels: test accuracy and error
of q(y|x) at a given budget, beside published figures.

    MNIST=../shared/data/mnist
    python benchmarks/semi_supervised.py --data-dir $MNIST --epochs 1 --labels 100 3000
    python benchmarks/semi_supervised.py --data-dir $MNIST --epochs 300    # a full budget

Every row trains in its own run folder under ``--root`` (``pyrovae train --semi-supervised
--labels N``, the repo's defaults otherwise: MLP 400-400 relu, latent 50, batch 128, Adam 1e-3,
α = 0.1·N); a folder already trained to the budget is read, one trained less is resumed.
The table goes to stdout, the rows to ``--json``.

Published figures (test accuracy of M2 on MNIST with N labels):
- Pyro's tutorial "The Semi-Supervised VAE", Table 1, third variant (enumerated y and the
  auxiliary loss), mean over five labelled subsets: 0.9319, 0.9437, 0.9487, 0.9582.
Kingma et al. 2014's own Table 1 (M2 column) is not quoted: it could not be checked here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pyrovae import resume_run, train_run
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.folder import CHECKPOINT, read_metrics

LABELS = (100, 600, 1000, 3000)
# Pyro tutorial ss-vae, Table 1, "Third variant": test accuracy by labels.
PYRO_TUTORIAL = {100: 0.9319, 600: 0.9437, 1000: 0.9487, 3000: 0.9582}


def config_of(labels: int, args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        dataset=args.dataset,
        semi_supervised=True,
        labels=labels,
        epochs=args.epochs,
        hidden=tuple(args.hidden),
        latent_dim=args.latent_dim,
        train_subset=args.train_subset,
        seed=args.seed,
        device=args.device,
    )


def run_row(labels: int, args: argparse.Namespace) -> dict:
    """Train (or resume, or read) the row's run; its last epoch's figures."""
    path = Path(args.root) / f"labels-{labels}"
    common = {"data_dir": args.data_dir, "download": False, "progress": False, "figures": False}
    if not (path / CHECKPOINT).exists():
        train_run(config_of(labels, args), path, **common)
    elif read_metrics(path)[-1]["epoch"] < args.epochs:
        resume_run(path, epochs=args.epochs, **common)
    history = read_metrics(path)[: args.epochs]
    last = history[-1]
    return {
        "labels": labels,
        "epochs": last["epoch"],
        "seconds": sum(r["seconds"] for r in history),
        "test_accuracy": last["test_accuracy"],
        "test_elbo": last["test_elbo"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| labels | epochs | seconds | test accuracy | test error | Pyro tutorial (accuracy) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        pyro = PYRO_TUTORIAL.get(r["labels"])
        lines.append(
            f"| {r['labels']} | {r['epochs']} | {r['seconds']:.0f} | {r['test_accuracy']:.4f} | "
            f"{100 * (1 - r['test_accuracy']):.2f}% | {'—' if pyro is None else pyro} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, nargs="+", default=list(LABELS))
    p.add_argument("--epochs", type=int, default=1, help="the budget (epochs over unlabelled)")
    p.add_argument("--data-dir", default=None, help="MNIST's IDX files (../shared/data/mnist)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--root", default="runs/semi-supervised", help="one run folder per row here")
    p.add_argument("--hidden", type=int, nargs="+", default=[400, 400])
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = [run_row(n, args) for n in args.labels]
    print(table(rows))
    if args.json is not None:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
