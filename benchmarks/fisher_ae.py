"""The Fisher auto-encoder (Elkhalil et al., AISTATS 2021) against the VAE with the same networks
on MNIST grey levels: test ELBO, log p(x), and the robustness of the reconstruction.

    MNIST=../shared/data/mnist
    python benchmarks/fisher_ae.py --data-dir $MNIST --epochs 1 --train-subset 2000 --test-subset 50
    python benchmarks/fisher_ae.py --data-dir $MNIST --epochs 10 --threads 1    # README's

Four runs go under ``--root``: ``vae-clean`` and ``fisher-clean`` (``pyrovae train --estimator
elbo`` and ``--estimator fisher``) on MNIST, and ``vae-noisy`` and ``fisher-noisy`` on a copy of
it whose training images carry additive Gaussian noise of std ``--train-noise`` (0.3), clipped to
[0, 1] since pyrovae's arrays hold intensities in [0, 1] (written once into the root as a .npz of
``train_images`` and the clean ``test_images``); the authors' ``celebA/train_noise.py`` corrupts
the training data the same way, unclipped. The networks are the authors' MNIST notebook's: MLPs
784-512-256 relu, latent 10, batch 100, Adam 10⁻³; the likelihood is pyrovae's ``gaussian``
(σ = 0.1 fixed) on ``--pixels grey``, where their decoder is N(x̂, 1). A folder already trained to
the budget is read, an evaluation already made at (epoch, K, test images) is read too.

Per run, on the first ``--test-subset`` test images (2000): the single-sample test ELBO,
log p(x) importance-sampled with K = ``--num-samples`` (1000; the run's guide as the proposal),
and the reconstruction MSE per pixel against the clean test image, the reconstruction of an input
being E_θ[x | z = E_q[z|x]] (encoder mean, then decoder mean), of the clean input and of inputs
corrupted at test time as the authors' ``celebA/test.py`` does (:data:`CORRUPTIONS`): the top-left
square of side ⌊s·H⌋ × ⌊s·W⌋ zeroed, each pixel zeroed with probability s, or s·N(0, 1) added
(unclipped). Each corrupted input is drawn once (seeded) and shared by all runs, so the Fisher-AE
minus VAE differences are paired per image, with their standard errors.

The paper's tables could not be read (see the README): no figure of theirs is printed, only the
ordering its abstract claims, the Fisher AE more robust than the VAE.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pyrovae import load_data, train_run
from pyrovae.core.errors import PyroVAEError
from pyrovae.plots.common import decode
from pyrovae.plots.latents import latent_codes
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.evaluate import evaluation_at
from pyrovae.runs.folder import CHECKPOINT, read_metrics
from pyrovae.runs.load import first_test_images, load_run

# row's model ↦ (--estimator, label)
MODELS = {"vae": ("elbo", "VAE"), "fisher": ("fisher", "Fisher AE")}
TRAINING = ("clean", "noisy")


def square(x: torch.Tensor, s: float, shape, generator: torch.Generator) -> torch.Tensor:
    """The top-left ⌊s·H⌋ × ⌊s·W⌋ pixels of every channel zeroed; x (N, D), D = C·H·W."""
    c, h, w = shape
    out = x.reshape(-1, c, h, w).clone()
    out[:, :, : int(s * h), : int(s * w)] = 0
    return out.reshape(x.shape)


def dropout(x: torch.Tensor, s: float, shape, generator: torch.Generator) -> torch.Tensor:
    """Each pixel zeroed independently with probability s."""
    keep = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= s
    return x * keep.to(x.device)


def noise(x: torch.Tensor, s: float, shape, generator: torch.Generator) -> torch.Tensor:
    """x + s·ε, ε ~ N(0, I), unclipped (the Gaussian likelihood's x lives on ℝ)."""
    return x + s * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


CORRUPTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "square": square,
    "dropout": dropout,
    "noise": noise,
}


def column(kind: str, s: float) -> str:
    return f"{kind} {s:g}"


def folder(root: Path, model: str, training: str) -> Path:
    return root / f"{model}-{training}"


def noisy_data(args: argparse.Namespace) -> Path:
    """The .npz of MNIST's training images + N(0, σ²) noise clipped to [0, 1] (seeded by
    ``--seed``) and its clean test images, written once into ``--root``."""
    path = Path(args.root).resolve() / f"mnist-train-noise{args.train_noise:g}.npz"
    if path.exists():
        return path
    data = load_data("mnist", "grey", "cpu", args.data_dir, download=False)
    g = torch.Generator().manual_seed(args.seed)
    train = data.train_x + args.train_noise * torch.randn(data.train_x.shape, generator=g)
    shape = (-1, *data.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(
        partial,
        train_images=train.clamp(0, 1).reshape(shape).numpy(),
        train_labels=data.train_y.numpy(),
        test_images=data.test_x.reshape(shape).numpy(),
        test_labels=data.test_y.numpy(),
    )
    partial.rename(path)
    return path


def config_of(model: str, training: str, args: argparse.Namespace) -> TrainConfig:
    dataset = "mnist" if training == "clean" else str(noisy_data(args))
    return TrainConfig(
        dataset=dataset,
        pixels="grey",
        likelihood="gaussian",
        estimator=MODELS[model][0],
        hidden=tuple(args.hidden),
        latent_dim=args.latent_dim,
        activation="relu",
        batch_size=100,
        lr=1e-3,
        epochs=args.epochs,
        train_subset=args.train_subset,
        seed=args.seed,
        device=args.device,
    )


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    n = values.numel()
    se = values.std().item() / math.sqrt(n) if n > 1 else float("nan")
    return values.mean().item(), se


def recon_errors(run, x: torch.Tensor, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Per image (N,), the MSE per pixel between the clean x and the reconstruction
    E_θ[x | E_q[z|x̃]] of its clean and corrupted versions x̃, by column."""
    inputs = {"clean": x}
    for kind, levels in (("square", args.square), ("dropout", args.dropout), ("noise", args.noise)):
        for s in levels:
            g = torch.Generator().manual_seed(args.seed)  # the same x̃ for every run
            inputs[column(kind, s)] = CORRUPTIONS[kind](x, s, run.data.shape, g)
    with torch.no_grad():
        return {
            name: (decode(run.model, latent_codes(run.guide, xt)) - x).pow(2).mean(-1).cpu()
            for name, xt in inputs.items()
        }


def run_cell(model: str, training: str, args: argparse.Namespace) -> dict:
    """Train (or read) one run, evaluate it (or read its evaluation), and reconstruct."""
    path = folder(Path(args.root), model, training)
    # the noisy copy is a file of its own: --data-dir is for the registered MNIST only
    common = {"data_dir": args.data_dir if training == "clean" else None, "download": False}
    if not (path / CHECKPOINT).exists():
        train_run(config_of(model, training, args), path, figures=True, progress=False, **common)
    history = read_metrics(path)
    epoch = history[-1]["epoch"]
    if epoch != args.epochs:  # a run stopped early, or trained to another budget
        raise PyroVAEError(f"{path} holds {epoch} epochs, not --epochs {args.epochs}: remove it")
    figures = evaluation_at(path, args.num_samples, args.test_subset, args.device, **common)
    run = load_run(path, args.device, **common)
    x = first_test_images(run.data, args.test_subset, "--test-subset")
    errors = recon_errors(run, x, args)
    return {
        "model": model,
        "training": training,
        "epochs": epoch,
        "seconds": sum(r["seconds"] for r in history),
        "num_test": figures["num_test"],
        "num_samples": figures["num_samples"],
        "test_elbo": figures["test_elbo"],
        "log_px": figures["log_px"],
        "stderr": figures["log_px_stderr"],
        "mse": {name: mean_and_stderr(e) for name, e in errors.items()},
        "errors": errors,  # per image, for the paired differences; not written to --json
    }


def table(rows: list[dict], args: argparse.Namespace) -> str:
    columns = list(rows[0]["mse"])
    head = " | ".join(f"MSE {c}" for c in columns)
    lines = [
        f"| model | training data | test ELBO | log p(x) | {head} |",
        "|---|---|---|---|" + "---|" * len(columns),
    ]
    for r in rows:
        data = "clean" if r["training"] == "clean" else f"+ noise σ = {args.train_noise:g}"
        cells = " | ".join(f"{m:.4f} ± {se:.4f}" for m, se in r["mse"].values())
        lines.append(
            f"| {MODELS[r['model']][1]} | {data} | {r['test_elbo']:.1f} | "
            f"{r['log_px']:.1f} ± {r['stderr']:.1f} | {cells} |"
        )
    lines.append("")
    by = {(r["model"], r["training"]): r for r in rows}
    for training in TRAINING:  # the paper's claim: the Fisher AE reconstructs more robustly
        vae, fae = by.get(("vae", training)), by.get(("fisher", training))
        if not (vae and fae):
            continue
        for c in columns:
            diff, se = mean_and_stderr(fae["errors"][c] - vae["errors"][c])
            holds = "holds" if diff < 0 else "does not hold"
            lines.append(
                f"{training} training, MSE {c}: Fisher AE < VAE {holds} "
                f"(difference {diff:+.4f} ± {se:.4f})"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--training", nargs="+", default=list(TRAINING), choices=list(TRAINING))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--data-dir", default=None, help="MNIST's IDX files (../shared/data/mnist)")
    p.add_argument("--root", default="runs/fisher_ae", help="the run folders go here")
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 256])
    p.add_argument("--latent-dim", type=int, default=10)
    p.add_argument("--train-noise", type=float, default=0.3, help="std of the noisy training data")
    p.add_argument("--square", type=float, nargs="+", default=[0.25, 0.5], help="side fractions")
    p.add_argument("--dropout", type=float, nargs="+", default=[0.25, 0.5], help="probabilities")
    p.add_argument("--noise", type=float, nargs="+", default=[0.25, 0.5], help="noise stds")
    p.add_argument("--num-samples", type=int, default=1000, help="K of the importance sampling")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", default=None, help="write the rows here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = [run_cell(m, t, args) for t in args.training for m in args.models]
    print(table(rows, args))
    if args.json is not None:
        saved = [{k: v for k, v in r.items() if k != "errors"} for r in rows]
        Path(args.json).write_text(json.dumps(saved, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    try:
        main()
    except PyroVAEError as e:  # one line, exit 2, as pyrovae's own commands
        print(f"fisher_ae: error: {e}", file=sys.stderr)
        sys.exit(2)
