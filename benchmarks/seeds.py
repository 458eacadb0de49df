"""What N seeds side by side cost against one: milliseconds per step of N replicas in one
batched, compiled graph (``ReplicaStep``, what ``pyrovae train --seeds`` runs) beside one
replica's compiled step (``CompiledELBO``, a plain ``pyrovae train``) and N such steps one after
another (N separate runs, one after the other), with each side's Adam steps. The sides alternate
in blocks in one process; compiling happens before the clock (its seconds are printed).

    python benchmarks/seeds.py --json benchmarks/results/seeds_cpu.json
    python benchmarks/seeds.py --preset burda2015 --batch-size 20 --replicas 2 4 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from epoch_time import environment
from scaling import median_ms

import pyrovae
from pyrovae.core.runtime import get_rng_state, set_seed
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.replicas import ReplicaStep
from pyrovae.inference.train import make_optimizer
from pyrovae.runs.config import PRESETS, preset_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--estimator", default="elbo")
    p.add_argument("--num-particles", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--preset", choices=list(PRESETS), default=None, help="the nets of a preset")
    p.add_argument("--steps", type=int, default=10, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per side")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile's mode for both compiled sides (reduce-overhead: CUDA graphs)",
    )
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if min(args.replicas) < 2:
        p.error("--replicas takes numbers of at least 2")
    return args


def _config(args: argparse.Namespace) -> pyrovae.TrainConfig:
    settings = {"estimator": args.estimator, "num_particles": args.num_particles}
    if args.preset is not None:
        return preset_config(args.preset, **settings)
    return pyrovae.TrainConfig(**settings)


def _replica(config, seed: int, device: torch.device):
    set_seed(seed)
    model, guide = pyrovae.build_model_and_guide(config, 784)
    model.to(device)
    guide.to(device)
    return model, guide, make_optimizer((model, guide), 1e-3)


def _batch(n: int, seed: int, device: torch.device) -> tuple[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (torch.bernoulli(torch.full((n, 784), 0.3), generator=generator).to(device),)


def _adam(optimizers) -> None:
    for opt in optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)


def sides(
    config, n: int, batch_size: int, device: torch.device, mode: str | None = None
) -> tuple[dict, dict]:
    """Steps of: one replica alone; n one after another; n side by side. And the compile
    seconds of the single and the batched step."""
    estimator = pyrovae.make_estimator(config.estimator, config.num_particles)
    replicas = [_replica(config, s, device) for s in range(n)]
    batches = [_batch(batch_size, s, device) for s in range(n)]
    singles = [CompiledELBO(estimator, mode=mode, log=lambda line: None) for _ in range(n)]
    batched = ReplicaStep(estimator, mode=mode, log=lambda line: None)
    streams = []
    for s in range(n):
        set_seed(s)
        streams.append(get_rng_state())
    models, guides, optimizers = (list(x) for x in zip(*replicas, strict=True))

    def one() -> None:
        singles[0].loss_and_grads(models[0], guides[0], *batches[0])
        _adam(optimizers[:1])

    def in_turn() -> None:
        for r in range(n):
            singles[r].loss_and_grads(models[r], guides[r], *batches[r])
        _adam(optimizers)

    def side_by_side() -> None:
        batched.loss_and_grads(models, guides, batches, streams)
        _adam(optimizers)

    compile_seconds = {"single": lambda: singles[0].stats.seconds,
                       "batched": lambda: batched.stats.seconds}
    return {"one": one, f"{n} in turn": in_turn, f"{n} side by side": side_by_side}, compile_seconds


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pyrovae.resolve_device(args.device)
    config = _config(args)
    env = environment(device)
    for key, value in env.items():
        print(f"{key:14s} {value}")
    print(f"{'model':14s} {args.preset or 'default'} nets, {config.estimator} K = "
          f"{config.num_particles}, batch {args.batch_size}, compile mode {args.compile_mode}\n")
    print(f"{'N':>3s} {'one ms':>9s} {'N in turn':>10s} {'N side by side':>15s} "
          f"{'side/one':>9s} {'turn/side':>10s} {'compile s (1, N)':>17s}")
    rows = []
    for n in args.replicas:
        steps, compile_seconds = sides(config, n, args.batch_size, device, args.compile_mode)
        start = time.perf_counter()
        ms = median_ms(steps, args.steps, args.repeats, device)
        one, turn, side = (ms[k] for k in steps)
        row = {
            "replicas": n,
            "ms_one": one,
            "ms_in_turn": turn,
            "ms_side_by_side": side,
            "side_by_side_over_one": side / one,
            "in_turn_over_side_by_side": turn / side,
            "compile_seconds_single": compile_seconds["single"](),
            "compile_seconds_batched": compile_seconds["batched"](),
            "wall_seconds": time.perf_counter() - start,
        }
        rows.append(row)
        print(f"{n:3d} {one:9.2f} {turn:10.2f} {side:15.2f} {side / one:9.2f} "
              f"{turn / side:10.2f} {row['compile_seconds_single']:8.1f} "
              f"{row['compile_seconds_batched']:8.1f}")
    record = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
              "rows": rows}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return record


if __name__ == "__main__":
    main()
