"""Seconds and peak memory of the importance-sampled log p(x) evaluator (K = 5000 by default),
and of annealed importance sampling with ``--ais-steps T`` (C = 16 chains, L = 10).

``log_marginal_likelihood`` streams over the images (``--batch-size``) and over K
(``--chunk-size`` particles at a time, a running log-sum-exp), so memory is bounded by one
chunk × batch of decoder outputs, whatever K and the number of images. The model is the default
one, freshly initialized, or a run's checkpoint (``--run``): the cost does not depend on training.

    python benchmarks/evaluator.py --images 1000 --num-samples 5000
    python benchmarks/evaluator.py --images 100 --num-samples 5000 --ais-steps 100 --ais-images 100

AIS runs after importance sampling on the first ``--ais-images`` images (a batch of 100 images ×
16 chains is one pass of the decoder per leapfrog step); its seconds per 1000 images are scaled
from those.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch
from epoch_time import environment

import pyrovae
from pyrovae.inference.ais import ais_log_marginal
from pyrovae.inference.marginal import log_marginal_likelihood
from pyrovae.runs import load_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="first N test images")
    p.add_argument("--num-samples", type=int, default=5000, help="K")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--chunk-size", type=int, default=500)
    p.add_argument("--run", type=Path, default=None, help="a run folder to evaluate instead")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--ais-steps", type=int, default=0, help="T for AIS (0: no AIS)")
    p.add_argument("--ais-images", type=int, default=100, help="images for AIS")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = pyrovae.resolve_device(args.device)
    if args.run is not None:
        run = load_run(args.run, str(device))
        data, model, guide = run.data, run.model, run.guide
    else:
        data = pyrovae.load_data("fashion-mnist", "dynamic", device)
        pyrovae.set_seed(0)
        model, guide = pyrovae.build_model_and_guide(pyrovae.TrainConfig(), data.num_pixels)
        model.to(device)
        guide.to(device)
    env = environment(device)
    for key, value in env.items():
        print(f"{key:14s} {value}")
    x = data.test_x[: args.images]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    out = log_marginal_likelihood(
        model,
        guide,
        x,
        args.num_samples,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        progress=True,
    )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    result = {
        "images": int(x.shape[0]),
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "chunk_size": args.chunk_size,
        "seconds": seconds,
        "log_px": float(out["log_px"]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mib": rss_before,
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(
        f"\nlog p(x) {result['log_px']:.2f} on {result['images']} images, K={args.num_samples}: "
        f"{seconds:.1f} s ({result['images'] * args.num_samples / seconds / 1e3:.1f} k particles/s)"
        f", peak RSS {result['peak_rss_mib']:.0f} MiB (before: {rss_before:.0f} MiB)"
    )
    if args.ais_steps > 0:
        result.update(_ais(model, guide, data.test_x[: args.ais_images], args.ais_steps, device))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": env, **result}, indent=2) + "\n")


def _ais(model, guide, x, steps: int, device: torch.device) -> dict:
    """AIS with T = ``steps``, C = 16, L = 10 on ``x``: seconds, per 1000 images, log p(x)."""
    start = time.perf_counter()
    out = ais_log_marginal(model, guide, x, steps=steps, chains=16, leapfrog=10, progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    n = int(x.shape[0])
    print(f"AIS log p(x) {out['log_px']:.2f} on {n} images, T={steps}, C=16, L=10: {seconds:.1f} s")
    return {
        "ais_images": n,
        "ais_steps": steps,
        "ais_seconds": seconds,
        "ais_seconds_per_1000": seconds * 1000 / n,
        "ais_log_px": float(out["log_px"]),
        "ais_acceptance": out["acceptance"],
    }


if __name__ == "__main__":
    main()
