"""How the cost of a training step grows with batch size, hidden size and particles K.

Milliseconds per step (median over repeated blocks of steps, the sides alternating in one
process), pyrovae's default step (``fit``'s compiled step, ``CompiledELBO``, + fused Adam)
beside the hand-written reference with the same optimizer; for K, compiled vectorized IWAE
against K = 1 and against Pyro's ``Trace_ELBO`` looping over K particles in Python
(``vectorize_particles=False``). Each side's first two steps (recording and compiling, Adam's
state) run before the clock; the compile seconds are printed, not timed.

    python benchmarks/scaling.py --json benchmarks/results/scaling_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from epoch_time import environment
from pyro.infer import Trace_ELBO
from reference_vae import LOSSES, ReferenceVAE
from reference_vae import make_optimizer as make_reference_optimizer

import pyrovae
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.train import make_optimizer, svi_step

Step = Callable[[], None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--hidden-sizes", type=int, nargs="+", default=[200, 400, 800])
    p.add_argument("--particles", type=int, nargs="+", default=[1, 5, 10, 50])
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per side")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def median_ms(steps: dict[str, Step], n: int, repeats: int, device: torch.device) -> dict:
    """Median milliseconds per step of each side, blocks of ``n`` steps alternating."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for warm in steps.values():  # outside the clock: recording and compiling, Adam's state
        warm()
        warm()
    for _ in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(n):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append((time.perf_counter() - start) / n * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def pyrovae_step(estimator, x: torch.Tensor, hidden: int, device: torch.device) -> Step:
    config = pyrovae.TrainConfig(hidden=(hidden, hidden))
    model, guide = pyrovae.build_model_and_guide(config, x.shape[1])
    model.to(device)
    guide.to(device)
    optimizer = make_optimizer((model, guide), 1e-3)
    return lambda: svi_step(estimator, model, guide, optimizer, x)


def reference_step(x: torch.Tensor, hidden: int, device: torch.device) -> Step:
    vae = ReferenceVAE(x.shape[1], (hidden, hidden)).to(device)
    optimizer = make_reference_optimizer(vae, 1e-3, fused=True)

    def step() -> None:
        loss = LOSSES["elbo"](vae, x, 1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()

    return step


def print_pair(size: int, ms: dict[str, float]) -> None:
    ratio = ms["pyrovae"] / ms["reference"]
    print(f"  {size:5d} {ms['pyrovae']:9.2f} {ms['reference']:9.2f} {ratio:6.3f}")


def batch(n: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n)
    return torch.bernoulli(torch.full((n, 784), 0.3), generator=generator).to(device)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pyrovae.resolve_device(args.device)
    env = environment(device)
    for key, value in env.items():
        print(f"{key:14s} {value}")
    pyrovae.set_seed(0)
    rows: list[dict[str, Any]] = []

    def compiled(name: str = "elbo", k: int = 1) -> CompiledELBO:
        return CompiledELBO(pyrovae.make_estimator(name, k), log=lambda line: print(f"  {line}"))

    print("\nbatch size (hidden 400, elbo): ms/step  pyrovae  reference-fused  ratio")
    for b in args.batch_sizes:
        x = batch(b, device)
        steps = {
            "pyrovae": pyrovae_step(compiled(), x, 400, device),
            "reference": reference_step(x, 400, device),
        }
        ms = median_ms(steps, args.steps, args.repeats, device)
        rows.append({"table": "batch", "batch_size": b, "hidden": 400, **ms})
        print_pair(b, ms)

    print("\nhidden size (batch 256, elbo): ms/step  pyrovae  reference-fused  ratio")
    x = batch(256, device)
    for h in args.hidden_sizes:
        steps = {
            "pyrovae": pyrovae_step(compiled(), x, h, device),
            "reference": reference_step(x, h, device),
        }
        ms = median_ms(steps, args.steps, args.repeats, device)
        rows.append({"table": "hidden", "batch_size": 256, "hidden": h, **ms})
        print_pair(h, ms)

    print(
        "\nparticles K (batch 256, hidden 400): ms/step  iwae (vectorized)  ×K=1  "
        "Trace_ELBO K-loop  ×K=1"
    )
    base: dict[str, float] = {}
    for k in args.particles:
        looped = Trace_ELBO(num_particles=k, vectorize_particles=False)
        steps = {
            "iwae": pyrovae_step(compiled("iwae", k), x, 400, device),
            "loop": pyrovae_step(looped, x, 400, device),
        }
        repeats = args.repeats if k <= 10 else max(2, args.repeats // 2)
        ms = median_ms(steps, max(1, args.steps // max(1, k // 5)), repeats, device)
        base = base or ms
        rows.append({"table": "particles", "num_particles": k, **ms})
        print(
            f"  {k:5d} {ms['iwae']:9.2f} {ms['iwae'] / base['iwae']:6.2f}"
            f" {ms['loop']:9.2f} {ms['loop'] / base['loop']:6.2f}"
        )

    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
