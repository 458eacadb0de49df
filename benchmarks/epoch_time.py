"""Seconds per training epoch: pyrovae (Pyro SVI) against a hand-written PyTorch VAE.

Both train the same nets on the same mini-batches (``reference_vae.epoch_batches``). Their
epochs alternate in one process (pyrovae, reference, pyrovae, …) after one warm-up epoch
each, so drifts in machine load hit both alike. As in ``pyrovae.fit``, an epoch's clock covers
the shuffle and the steps, not the binarization.

    python benchmarks/epoch_time.py --repeats 5 --json benchmarks/results/epoch_time.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyro
import torch
from reference_vae import LOSSES, ReferenceVAE, epoch_batches, train_epoch
from reference_vae import make_optimizer as make_reference_optimizer

import pyrovae
from pyrovae.inference.train import make_optimizer, svi_step

SIDES = ("pyrovae", "reference")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimators", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per side and estimator")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads value")
    p.add_argument("--train-subset", type=int, default=None, help="first N training images only")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--hidden", type=int, nargs="+", default=[400, 400])
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyrovae": pyrovae.__version__,
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def timed(run: Callable[[], float], device: torch.device) -> tuple[float, float]:
    """(seconds, value) of ``run()``; on CUDA the queue is drained before each clock reading."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value


def bench_estimator(
    name: str, data: pyrovae.ImageData, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Alternate pyrovae and reference epochs for ``name``; epoch 1 of each is the warm-up."""
    config = pyrovae.TrainConfig(
        estimator=name,
        batch_size=args.batch_size,
        hidden=tuple(args.hidden),
        latent_dim=args.latent_dim,
        lr=args.lr,
        seed=args.seed,
    )
    pyrovae.set_seed(args.seed)
    model, guide = pyrovae.build_model_and_guide(config, data.num_pixels)
    model.to(device)
    guide.to(device)
    estimator = pyrovae.make_estimator(name)
    optimizer = make_optimizer((model, guide), config.lr)
    vae = ReferenceVAE(data.num_pixels, config.hidden, config.latent_dim, config.activation)
    vae.to(device)
    ref_optimizer = make_reference_optimizer(vae, config.lr)

    def pyrovae_epoch(batches: Iterator[torch.Tensor]) -> float:
        model.train()
        guide.train()
        return sum(svi_step(estimator, model, guide, optimizer, xb) for xb in batches)

    def reference_epoch(batches: Iterator[torch.Tensor]) -> float:
        return train_epoch(vae, ref_optimizer, batches, name)

    epochs = {"pyrovae": pyrovae_epoch, "reference": reference_epoch}
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    last_elbo: dict[str, float] = {}
    n = data.train_x.shape[0]
    for epoch in range(1, args.repeats + 2):
        for side in SIDES:
            batches = epoch_batches(data, config.batch_size, config.seed, epoch)
            elapsed, loss = timed(lambda b=batches, s=side: epochs[s](b), device)
            last_elbo[side] = -loss / n
            tag = "warm-up" if epoch == 1 else f"{epoch - 1}/{args.repeats}"
            print(f"  {name:12s} {side:9s} {tag:8s} {elapsed:8.3f} s  ELBO {-loss / n:9.2f}")
            if epoch > 1:
                seconds[side].append(elapsed)
    result: dict[str, Any] = {"estimator": name, "seconds": seconds, "train_elbo": last_elbo}
    for side in SIDES:
        result[f"median_{side}"] = statistics.median(seconds[side])
    result["ratio"] = result["median_pyrovae"] / result["median_reference"]
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    def span(times: list[float]) -> str:
        return f"{min(times):.3f}–{max(times):.3f}"

    print(f"\n{'estimator':12s} {'pyrovae s':>10s} {'reference s':>12s} {'ratio':>6s}", end="")
    print(f" {'pyrovae min–max':>16s} {'reference min–max':>18s}")
    for r in results:
        print(
            f"{r['estimator']:12s} {r['median_pyrovae']:10.3f} {r['median_reference']:12.3f}"
            f" {r['ratio']:6.2f} {span(r['seconds']['pyrovae']):>16s}"
            f" {span(r['seconds']['reference']):>18s}"
        )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pyrovae.resolve_device(args.device)
    data = pyrovae.load_data(args.dataset, "dynamic", device, train_subset=args.train_subset)
    env = environment(device)
    for key, value in env.items():
        print(f"{key:14s} {value}")
    n = data.train_x.shape[0]
    steps = -(-n // args.batch_size)
    print(f"{'data':14s} {args.dataset}, {n} images, batch {args.batch_size} ({steps} steps/epoch)")
    print(f"{'repeats':14s} {args.repeats} timed epochs per side after 1 warm-up, alternating\n")

    results = [bench_estimator(name, data, args, device) for name in args.estimators]
    print_table(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "environment": env,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "num_train": n,
            "results": results,
        }
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
