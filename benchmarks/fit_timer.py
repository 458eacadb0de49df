"""Seconds per epoch of ``pyrovae.fit``'s default training step, for ``before_after.py``.

Run with ``PYTHONPATH=<a version's source root>``: it uses only the API that version and the
current one share (``TrainConfig``, ``preset_config``, ``build_model_and_guide``, ``load_data``,
``fit``), and prints one JSON line: the version's pyrovae path and git rev, each epoch's
``seconds`` (training steps only, as ``fit`` clocks them) and the steps per epoch.

    PYTHONPATH=. python benchmarks/fit_timer.py --estimator iwae --num-particles 5 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--estimator", default="elbo")
    p.add_argument("--num-particles", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--preset", default=None, help="a preset of pyrovae.runs.config, e.g. burda2015")
    p.add_argument("--epochs", type=int, default=3, help="epoch 1 is the warm-up")
    p.add_argument("--train-subset", type=int, default=None, help="first N training images only")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads value")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def git_rev(root: Path) -> str | None:
    """The commit checked out at ``root``, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def time_fit(args: argparse.Namespace) -> dict[str, Any]:
    import pyrovae
    from pyrovae.runs.config import preset_config

    settings = {"estimator": args.estimator, "num_particles": args.num_particles}
    settings |= {"batch_size": args.batch_size, "seed": args.seed}
    if args.preset:
        config = preset_config(args.preset, **settings)
    else:
        config = pyrovae.TrainConfig(**settings)
    data = pyrovae.load_data(
        config.dataset, config.pixels, "cpu", args.data_dir, train_subset=args.train_subset
    )
    pyrovae.set_seed(config.seed)
    model, guide = pyrovae.build_model_and_guide(config, data.num_pixels)
    history = pyrovae.fit(
        model,
        guide,
        data,
        config.estimator,
        epochs=args.epochs,
        batch_size=config.batch_size,
        num_particles=config.num_particles,
        lr=config.lr,
        seed=config.seed,
        progress=False,
    )
    root = Path(pyrovae.__file__).resolve().parent.parent
    return {
        "pyrovae": str(Path(pyrovae.__file__).resolve().parent),
        "rev": git_rev(root),
        "seconds": [record["seconds"] for record in history],
        "steps_per_epoch": math.ceil(data.num_train / config.batch_size),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from pyrovae import PyroVAEError

    try:
        result = time_fit(args)
    except PyroVAEError as e:
        print(f"fit_timer.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
