"""Seconds per training epoch: pyrovae (Pyro SVI) against a hand-written PyTorch VAE.

Four sides train the same nets on the same mini-batches (``reference_vae.epoch_batches``):
pyrovae's default step (``fit``'s compiled step, ``CompiledELBO``, fused Adam), pyrovae with
Pyro's handlers run every step (``--no-compile``), the hand-written reference with Adam's
defaults, and the reference with pyrovae's fused Adam (the same optimizer: what is left is the
cost of the loss itself). Estimators: ``elbo`` and ``analytic-kl`` with one particle, ``iwae``
and ``iwae-dreg`` with ``--num-particles`` K. Their epochs alternate in one process after one
warm-up epoch each, so drifts in machine load hit all alike. As in ``pyrovae.fit``, an epoch's
clock covers the shuffle and the steps, not the binarization.

The compiled side's warm-up epoch holds its recording and compiling: the compile seconds
(``CompiledELBO.stats.seconds``) are reported per estimator, with the steps that repay them,
compile seconds / (plain − compiled seconds per step), "never" where compiling is not faster.
``PYROVAE_COMPILE_BACKEND`` picks ``torch.compile``'s backend (default Inductor).

    python benchmarks/epoch_time.py --repeats 5 --json benchmarks/results/epoch_time.json
"""

from __future__ import annotations

import argparse
import json
import math
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
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.train import make_optimizer, svi_step

SIDES = ("pyrovae", "pyrovae-plain", "reference", "reference-fused")
SIDE_NOTES = {
    "pyrovae": "pyrovae.fit's step: the compiled loss and gradient (CompiledELBO) + fused Adam",
    "pyrovae-plain": "Pyro's handlers every step (fit(compile=False), --no-compile) + fused Adam",
    "reference": "hand-written PyTorch, torch.optim.Adam's defaults",
    "reference-fused": "hand-written PyTorch, Adam(fused=True): pyrovae's optimizer",
}
PARTICLE_ESTIMATORS = ("iwae", "iwae-dreg")  # the others run with one particle


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimators", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument(
        "--num-particles", type=int, default=5, help=f"K of {' and '.join(PARTICLE_ESTIMATORS)}"
    )
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
    if args.num_particles < 1:
        p.error("--num-particles must be at least 1")
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
    k = args.num_particles if name in PARTICLE_ESTIMATORS else 1
    config = pyrovae.TrainConfig(
        estimator=name,
        num_particles=k,
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
    plain = pyrovae.make_estimator(name, k)
    compiled = CompiledELBO(plain, log=lambda line: print(f"  {name:12s} pyrovae         {line}"))
    estimators = {"pyrovae": compiled, "pyrovae-plain": plain}
    optimizer = make_optimizer((model, guide), config.lr)
    # each reference side trains its own copy, from the same initial weights
    vaes = {
        side: ReferenceVAE(data.num_pixels, config.hidden, config.latent_dim, config.activation)
        for side in ("reference", "reference-fused")
    }
    vaes["reference-fused"].load_state_dict(vaes["reference"].state_dict())
    ref_optimizers = {}
    for side, vae in vaes.items():
        vae.to(device)
        ref_optimizers[side] = make_reference_optimizer(vae, config.lr, side == "reference-fused")

    def pyrovae_epoch(batches: Iterator[torch.Tensor], side: str) -> float:
        model.train()
        guide.train()
        return sum(svi_step(estimators[side], model, guide, optimizer, xb) for xb in batches)

    def reference_epoch(batches: Iterator[torch.Tensor], side: str) -> float:
        return train_epoch(vaes[side], ref_optimizers[side], batches, name, k)

    epochs = {
        side: pyrovae_epoch if side.startswith("pyrovae") else reference_epoch for side in SIDES
    }
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    last_elbo: dict[str, float] = {}
    n = data.train_x.shape[0]
    for epoch in range(1, args.repeats + 2):
        for side in SIDES:
            batches = epoch_batches(data, config.batch_size, config.seed, epoch)
            elapsed, loss = timed(lambda b=batches, s=side: epochs[s](b, s), device)
            last_elbo[side] = -loss / n
            tag = "warm-up" if epoch == 1 else f"{epoch - 1}/{args.repeats}"
            print(f"  {name:12s} {side:15s} {tag:8s} {elapsed:8.3f} s  ELBO {-loss / n:9.2f}")
            if epoch > 1:
                seconds[side].append(elapsed)
    result: dict[str, Any] = {
        "estimator": name,
        "num_particles": k,
        "seconds": seconds,
        "train_elbo": last_elbo,
    }
    for side in SIDES:
        result[f"median_{side}"] = statistics.median(seconds[side])
    result.update(compile_cost(compiled, result, -(-n // config.batch_size)))
    for side in SIDES[:2]:
        for ref in SIDES[2:]:
            result[f"ratio_{side}_{ref}"] = result[f"median_{side}"] / result[f"median_{ref}"]
    result["ratio"] = result["ratio_pyrovae_reference"]
    return result


def compile_cost(compiled: CompiledELBO, result: dict[str, Any], steps: int) -> dict[str, Any]:
    """Compile seconds and the steps that repay them: compile seconds / (plain − compiled
    seconds per step), None ("never") where the compiled step is not faster."""
    per_step = {side: result[f"median_{side}"] / steps for side in SIDES[:2]}
    saved = per_step["pyrovae-plain"] - per_step["pyrovae"]
    seconds = compiled.stats.seconds
    return {
        "steps_per_epoch": steps,
        "compile_seconds": seconds,
        "compiled_graphs": compiled.stats.graphs,
        "compile_fallbacks": compiled.stats.fallbacks,
        "step_seconds_pyrovae": per_step["pyrovae"],
        "step_seconds_pyrovae-plain": per_step["pyrovae-plain"],
        "steps_to_repay": math.ceil(seconds / saved) if saved > 0 else None,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'estimator':12s}" + "".join(f" {side + ' s':>18s}" for side in SIDES))
    for r in results:
        print(f"{r['estimator']:12s}" + "".join(f" {r['median_' + s]:18.3f}" for s in SIDES))
    print(f"\n{'ratio (medians)':28s}" + "".join(f" {ref:>16s}" for ref in SIDES[2:]))
    for r in results:
        for side in SIDES[:2]:
            ratios = "".join(f" {r[f'ratio_{side}_{ref}']:16.3f}" for ref in SIDES[2:])
            print(f"{r['estimator'] + ' ' + side:28s}{ratios}")
    columns = "".join(f" {c:>8s}" for c in ("seconds", "ms/step", "plain ms"))
    print(f"\n{'compiling':12s} {'K':>3s}{columns} {'repaid in':>12s}")
    for r in results:
        repay = r["steps_to_repay"]
        print(
            f"{r['estimator']:12s} {r['num_particles']:3d} {r['compile_seconds']:8.2f}"
            f" {r['step_seconds_pyrovae'] * 1e3:8.2f} {r['step_seconds_pyrovae-plain'] * 1e3:8.2f}"
            f" {'never' if repay is None else f'{repay} steps':>12s}"
            + ("".join(f"  (eager: {f})" for f in r["compile_fallbacks"]))
        )
    print("\nmin–max seconds per side:")
    for r in results:
        spans = ", ".join(
            f"{s} {min(r['seconds'][s]):.3f}–{max(r['seconds'][s]):.3f}" for s in SIDES
        )
        print(f"  {r['estimator']}: {spans}")


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
    print(f"{'repeats':14s} {args.repeats} timed epochs per side after 1 warm-up, alternating")
    for side, note in SIDE_NOTES.items():
        print(f"{'':14s} {side}: {note}")
    print()

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
