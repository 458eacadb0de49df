"""Step time and images per second of data-parallel training: 1 process against W processes.

Each setting trains the same model on the same data for a few epochs in fresh processes:
``plain:T`` is ``fit`` in one process without a process group (what ``pyrovae train`` does),
``ddpW:T`` is ``fit`` under ``torchrun --standalone --nproc_per_node W`` (gloo on the CPU, NCCL
on GPUs: one GPU per process), each process with T torch threads. The settings alternate,
``--repeats`` times, so drifts in machine load hit all alike. Per run the first epoch is the
warm-up (recording the loss graph, DDP's first buckets) and the others are timed with ``fit``'s
own clock (training steps only: the shuffle and the steps, not the test ELBO); a step is one
global batch, split across the processes.

    python benchmarks/distributed.py --json benchmarks/results/distributed_cpu.json
    python benchmarks/distributed.py --device cuda --settings plain:4 ddp1:4 ddp2:4 ddp4:4 \
        --train-subset 60000 --json benchmarks/results/distributed_cuda.json

``--worker OUT`` is one run's process, for a launcher of your own (2 machines: the same
``torchrun --nnodes 2 … benchmarks/distributed.py --worker OUT …`` on each); rank 0 writes
the epochs' seconds, ms per step and images per second to OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
# processes:threads per process; "plain": one process, no process group
SETTINGS = ["plain:1", "ddp1:1", "ddp2:1", "plain:2"]


def setting(text: str) -> tuple[int, int]:
    """``plain:T`` → (0, T); ``ddpW:T`` → (W, T)."""
    kind, _, threads = text.partition(":")
    processes = 0 if kind == "plain" else int(kind.removeprefix("ddp"))
    if not kind.startswith(("plain", "ddp")) or int(threads) < 1 or processes < 0:
        raise ValueError(text)
    return processes, int(threads)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--train-subset", type=int, default=12800, help="first N training images")
    p.add_argument("--batch-size", type=int, default=256, help="the global batch")
    p.add_argument("--hidden", type=int, nargs="+", default=[400, 400])
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--estimator", default="elbo")
    p.add_argument("--epochs", type=int, default=3, help="per run; the first is the warm-up")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting, alternating")
    p.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    p.add_argument(
        "--settings", nargs="+", default=SETTINGS, help="plain:T or ddpW:T (W processes, T threads)"
    )
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--worker", type=Path, default=None, help="one run's process; rank 0 → OUT")
    p.add_argument("--threads", type=int, default=None, help="torch threads (--worker)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first is the warm-up)")
    try:
        args.parsed = [setting(s) for s in args.settings]
    except ValueError as e:
        p.error(f"--settings takes plain:T or ddpW:T, got {e}")
    return args


def worker(args: argparse.Namespace) -> None:
    """One process of a run: train, then rank 0 writes the epochs' seconds to --worker."""
    import torch

    import pyrovae
    from pyrovae.core.distributed import process_group_from_env, rank_device, world_size

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with process_group_from_env(600) as rank:
        device = rank_device(args.device)
        data = pyrovae.load_data(args.dataset, "dynamic", device, train_subset=args.train_subset)
        config = pyrovae.TrainConfig(hidden=tuple(args.hidden), latent_dim=args.latent_dim)
        pyrovae.set_seed(0)
        model, guide = pyrovae.build_model_and_guide(config, data.num_pixels)
        model, guide = model.to(device), guide.to(device)
        history = pyrovae.fit(
            model,
            guide,
            data,
            args.estimator,
            epochs=args.epochs,
            batch_size=args.batch_size,
            progress=False,
        )
        if rank == 0:
            seconds = [r["seconds"] for r in history]
            timed = statistics.median(seconds[1:])
            steps = -(-args.train_subset // args.batch_size)
            record = {"world_size": world_size(), "device": str(device), "seconds": seconds}
            record.update(ms_per_step=timed / steps * 1e3, images_per_s=args.train_subset / timed)
            args.worker.write_text(json.dumps(record, indent=2) + "\n")


def run_setting(args: argparse.Namespace, processes: int, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = [str(HERE), "--worker", str(out), "--threads", str(threads)]
        script += ["--dataset", args.dataset, "--train-subset", str(args.train_subset)]
        script += ["--batch-size", str(args.batch_size), "--estimator", args.estimator]
        script += ["--epochs", str(args.epochs), "--latent-dim", str(args.latent_dim)]
        script += ["--hidden", *map(str, args.hidden), "--device", args.device]
        launcher = [sys.executable]
        if processes:
            launcher += ["-m", "torch.distributed.run", "--standalone"]
            launcher += [f"--nproc_per_node={processes}"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        subprocess.run([*launcher, *script], env=env, check=True, timeout=1800)
        return json.loads(out.read_text())


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        worker(args)
        return
    sys.path.insert(0, str(HERE.parent))
    import torch
    from epoch_time import environment

    env = environment(torch.device(args.device))
    env["cpu_cores"] = os.cpu_count()
    env["date_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    env["load_average_before"] = load_average()
    for key, value in env.items():
        print(f"{key:20s} {value}")
    steps = -(-args.train_subset // args.batch_size)
    print(
        f"{'data':20s} {args.dataset}, {args.train_subset} images, global batch "
        f"{args.batch_size} ({steps} steps/epoch), {args.epochs - 1} timed epochs per run"
    )
    labels = [
        f"plain, {t} thread{'s' * (t > 1)}" if w == 0 else f"ddp, {w} × {t} thread{'s' * (t > 1)}"
        for w, t in args.parsed
    ]
    timed: dict[str, list[float]] = {label: [] for label in labels}
    for repeat in range(1, args.repeats + 1):
        for label, (processes, threads) in zip(labels, args.parsed, strict=True):
            result = run_setting(args, processes, threads)
            epochs = result["seconds"][1:]
            timed[label].extend(epochs)
            print(f"  {repeat}/{args.repeats} {label:22s} " + " ".join(f"{s:.3f}" for s in epochs))
    env["load_average_after"] = load_average()
    base = statistics.median(timed[labels[0]])
    rows = []
    print(f"\n{'setting':24s} {'ms/step':>9s} {'images/s':>9s} {'× first':>8s}  (median epoch)")
    for label, (processes, threads) in zip(labels, args.parsed, strict=True):
        epoch = statistics.median(timed[label])
        row = {
            "setting": label,
            "processes": max(processes, 1),
            "ddp": processes > 0,
            "threads_per_process": threads,
            "epoch_seconds": timed[label],
            "median_epoch_s": epoch,
            "ms_per_step": epoch / steps * 1e3,
            "images_per_s": args.train_subset / epoch,
            "ms_per_step_min_max": [
                min(timed[label]) / steps * 1e3,
                max(timed[label]) / steps * 1e3,
            ],
            "speedup_vs_first": base / epoch,
        }
        rows.append(row)
        print(
            f"{label:24s} {row['ms_per_step']:9.2f} {row['images_per_s']:9.0f} "
            f"{row['speedup_vs_first']:8.2f}"
        )
    print(f"load average before {env['load_average_before']}, after {env['load_average_after']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        given = {k: str(v) for k, v in vars(args).items() if k != "parsed"}
        record = {"environment": env, "args": given}
        record["steps_per_epoch"] = steps
        record["rows"] = rows
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
