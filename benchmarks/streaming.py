"""Seconds per epoch: training images held on the device against streamed from disk.

Fashion-MNIST is written once as a ``.pt`` file (train/test images and labels), then trained
with ``pyrovae.fit`` from that file three ways: device-resident, and streamed through a
DataLoader (the file memory-mapped) with 0 and with ``--workers`` worker processes. Each side
runs one warm-up epoch and ``--repeats`` timed ones, in the same process, alternating. Two
clocks per epoch: ``fit``'s own (the shuffle and the training steps) and the wall time of the
whole epoch (also the streamed binarization pass and the test ELBO). Both paths train on the
same batches (``tests/test_streaming.py``), so the metrics are printed too: they must agree.

    python benchmarks/streaming.py --pixels dynamic grey --json benchmarks/results/streaming.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import pyrovae
from pyrovae.core.runtime import get_rng_state, set_rng_state
from pyrovae.data import load_data, read_idx_dataset


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pixels", nargs="+", default=["dynamic", "grey"])
    p.add_argument("--workers", type=int, default=2, help="worker processes of the 3rd side")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per side")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads value")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args(argv)


def write_pt(folder: Path) -> Path:
    """Fashion-MNIST's IDX files as one .pt of uint8 tensors (memory-mappable)."""
    raw = read_idx_dataset("fashion-mnist", download=False)
    path = folder / "fashion-mnist.pt"
    torch.save(
        {
            "train_images": raw["train_images"],
            "train_labels": raw["train_labels"],
            "test_images": raw["test_images"],
            "test_labels": raw["test_labels"],
        },
        path,
    )
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sides = {
        "resident": (False, 0),
        "streamed-0": (True, 0),
        f"streamed-{args.workers}": (
            True,
            args.workers,
        ),
    }
    results: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = write_pt(Path(tmp))
        for pixels in args.pixels:
            config = pyrovae.TrainConfig(
                pixels=pixels,
                likelihood="bernoulli"
                if pixels in ("dynamic", "static")
                else "continuous-bernoulli",
            )
            runs = {}
            for side, (stream, workers) in sides.items():
                data = load_data(str(path), pixels, stream=stream, workers=workers)
                pyrovae.set_seed(0)
                model, guide = pyrovae.build_model_and_guide(config, data.num_pixels)
                optimizer = pyrovae.inference.make_optimizer((model, guide), config.lr)
                runs[side] = {
                    "data": data,
                    "model": model,
                    "guide": guide,
                    "opt": optimizer,
                    "fit": [],
                    "wall": [],
                    "metrics": [],
                    "rng": None,
                }
            for epoch in range(1, args.repeats + 2):  # epoch 1 warms up
                for side, run in runs.items():
                    if run["rng"] is not None:  # each side continues its own random stream
                        set_rng_state(run["rng"])
                    start = time.perf_counter()
                    history = pyrovae.fit(
                        run["model"],
                        run["guide"],
                        run["data"],
                        "elbo",
                        epochs=epoch,
                        batch_size=args.batch_size,
                        seed=0,
                        optimizer=run["opt"],
                        start_epoch=epoch - 1,
                        progress=False,
                    )
                    wall = time.perf_counter() - start
                    run["rng"] = get_rng_state()
                    record = history[-1]
                    run["metrics"].append((record["train_elbo"], record["test_elbo"]))
                    print(
                        f"  {pixels} {side} epoch {epoch}: fit {record['seconds']:.3f} s, "
                        f"wall {wall:.3f} s",
                        flush=True,
                    )
                    if epoch > 1:
                        run["fit"].append(record["seconds"])
                        run["wall"].append(wall)
            for side, run in runs.items():
                row = {
                    "pixels": pixels,
                    "side": side,
                    "fit_seconds": statistics.median(run["fit"]),
                    "fit_range": [min(run["fit"]), max(run["fit"])],
                    "wall_seconds": statistics.median(run["wall"]),
                    "metrics": run["metrics"],
                }
                results["rows"].append(row)
                print(
                    f"{pixels:8s} {side:12s} fit {row['fit_seconds']:.3f} s "
                    f"({row['fit_range'][0]:.3f}–{row['fit_range'][1]:.3f}), wall "
                    f"{row['wall_seconds']:.3f} s, last train/test ELBO "
                    f"{run['metrics'][-1][0]:.4f} / {run['metrics'][-1][1]:.4f}"
                )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
