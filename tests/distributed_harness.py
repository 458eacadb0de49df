"""One rank of a data-parallel test, run as a subprocess by tests/test_distributed.py:

    RANK=r WORLD_SIZE=w MASTER_ADDR=… LOCAL_RANK=r … python tests/distributed_harness.py SPEC

(the variables torchrun sets; :func:`launch` starts the W processes). SPEC is a JSON file with
``out`` (a folder for the results) and ``jobs``, run in order, each on a port of its own:

- ``{"kind": "fit", "port": P, "cases": [case, …]}``: :func:`fit` inside the process group for
  each case of :func:`fit_case` (tiny data, 2 epochs); weights, Adam state and metrics go to
  ``out/fit-NAME-rankR.pt``.
- ``{"kind": "cli", "port": P, "argv": [...], "watch": DIR, "nan_at": N}``: ``pyrovae``'s
  ``main(argv)``; its exit code, stderr, stdout and seconds go to ``out/cli-rankR.json``. On
  ranks other than 0 a tripwire records (and refuses) every file access under ``watch``; with
  ``nan_at`` rank 1's ``elbo`` loss is NaN at its N-th training step.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pyro.infer import Trace_ELBO

from pyrovae import TrainConfig, build_model_and_guide, fit, set_seed
from pyrovae.core.distributed import process_group_from_env
from pyrovae.data.images import ImageData
from pyrovae.inference import estimators
from pyrovae.inference.train import make_optimizer

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent

# 45 images in batches of 22: steps of 22, 22 and 1 rows, so with 2 ranks the shards are
# 11/11, 11/11, and 1/0 (the last step has a rank without rows)
N_TRAIN, BATCH, EPOCHS, SEED = 45, 22, 2, 5


def tiny_data(pixels: str = "dynamic") -> ImageData:
    """Deterministic images (intensities, grey or 8-bit levels) and 3 classes, the same in
    every process."""
    g = torch.Generator().manual_seed(11)
    train_x = torch.rand(N_TRAIN, 784, generator=g) ** 2
    test_x = torch.rand(30, 784, generator=g) ** 2
    if pixels == "8bit":
        train_x, test_x = (train_x * 255).round() / 255, (test_x * 255).round() / 255
    elif pixels != "grey":
        test_x = torch.bernoulli(test_x, generator=g)
    train_y = torch.arange(N_TRAIN) % 3
    test_y = torch.arange(30) % 3
    return ImageData(train_x, train_y, test_x, test_y, pixels)


def fit_case(case: dict[str, Any]) -> dict[str, Any]:
    """``case``: ``name``, ``estimator``, ``k``, ``compile`` and TrainConfig fields under
    ``config`` (also ``beta`` / ``kl_warmup``). Model, guide, Adam and data from fixed seeds."""
    config = TrainConfig(hidden=(16,), latent_dim=3, **case.get("config", {}))
    data = tiny_data(config.pixels)
    set_seed(0)
    model, guide = build_model_and_guide(config, 784, data.num_classes)
    optimizer = make_optimizer((model, guide), 1e-2)
    return {
        "config": config,
        "data": data,
        "model": model,
        "guide": guide,
        "optimizer": optimizer,
        "kwargs": {
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "num_particles": case["k"],
            "seed": SEED,
            "beta": config.beta,
            "kl_warmup": config.kl_warmup,
            "compile": case["compile"],
            "optimizer": optimizer,
            "progress": False,
        },
    }


def run_fit_cases(cases: list[dict[str, Any]], out: Path, rank: int) -> None:
    for case in cases:
        parts = fit_case(case)
        history = fit(
            parts["model"], parts["guide"], parts["data"], case["estimator"], **parts["kwargs"]
        )
        torch.save(
            {
                "model": parts["model"].state_dict(),
                "guide": parts["guide"].state_dict(),
                "optimizer": parts["optimizer"].state_dict(),
                "history": history,
            },
            out / f"fit-{case['name']}-rank{rank}.pt",
        )


class NaNAt(Trace_ELBO):
    """``elbo`` whose ``differentiable_loss`` is NaN at its n-th call (run eagerly: a compiled
    graph would freeze the counter)."""

    compilable = False
    calls = 0
    nan_at = 0

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        NaNAt.calls += 1
        return loss * float("nan") if NaNAt.calls == NaNAt.nan_at else loss


@contextlib.contextmanager
def tripwire(folder: Path, hits: list[str]):
    """Record and refuse every file access under ``folder`` (opening, creating, listing,
    stat-ing, renaming, deleting) for the block."""
    root = os.path.abspath(folder)  # not realpath: that stats, and os.lstat is guarded

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return False
        try:
            full = os.path.abspath(os.fspath(path))
        except TypeError:
            return False
        return full == root or full.startswith(root + os.sep)

    def guard(module: Any, name: str, nargs: int = 1):
        original = getattr(module, name)

        def checked(*args, **kwargs):
            paths = list(args[:nargs]) + [kwargs.get("dir"), kwargs.get("path")]
            for p in paths:
                if p is not None and inside(p):
                    hits.append(f"{name}({p})")
                    raise PermissionError(f"tripwire: rank touched {p}")
            return original(*args, **kwargs)

        return module, name, original, checked

    patches = [
        guard(builtins, "open"),
        guard(io, "open"),
        guard(os, "open"),
        guard(os, "stat"),
        guard(os, "lstat"),
        guard(os, "listdir"),
        guard(os, "scandir"),
        guard(os, "mkdir"),
        guard(os, "makedirs"),
        guard(os, "replace", 2),
        guard(os, "rename", 2),
        guard(os, "unlink"),
        guard(os, "remove"),
        guard(tempfile, "mkstemp", 0),
    ]
    for module, name, _, checked in patches:
        setattr(module, name, checked)
    try:
        yield
    finally:
        for module, name, original, _ in patches:
            setattr(module, name, original)


def run_cli(job: dict[str, Any], rank: int) -> dict[str, Any]:
    from pyrovae.cli import main

    hits: list[str] = []
    stderr, stdout = io.StringIO(), io.StringIO()
    saved = estimators.ESTIMATORS["elbo"]
    if job.get("nan_at") and rank == 1:
        NaNAt.calls, NaNAt.nan_at = 0, job["nan_at"]
        estimators.ESTIMATORS["elbo"] = NaNAt
    watch = job.get("watch")
    start = time.perf_counter()
    try:
        with (
            contextlib.redirect_stderr(stderr),
            contextlib.redirect_stdout(stdout),
            tripwire(Path(watch), hits) if watch and rank != 0 else contextlib.nullcontext(),
        ):
            code = main(job["argv"])
    finally:
        estimators.ESTIMATORS["elbo"] = saved
    return {
        "code": code,
        "stderr": stderr.getvalue(),
        "stdout": stdout.getvalue(),
        "seconds": time.perf_counter() - start,
        "tripwire": hits,
    }


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    out = Path(spec["out"])
    rank = int(os.environ["RANK"])
    results = []
    for job in spec["jobs"]:
        os.environ["MASTER_PORT"] = str(job["port"])
        if job["kind"] == "fit":
            with process_group_from_env(spec.get("timeout", 60)):
                run_fit_cases(job["cases"], out, rank)
        else:
            results.append(run_cli(job, rank))
            (out / f"cli-rank{rank}.json").write_text(json.dumps(results, indent=1))


def free_ports(n: int) -> list[int]:
    """``n`` ports nothing listens on now (the kernel's picks)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives rank ``rank`` of ``world`` processes on one machine, its
    store at ``localhost:port``."""
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def launch(
    argv: list[str], world: int, port: int, timeout: float, ranks: list[int] | None = None
) -> list[subprocess.CompletedProcess]:
    """Start ranks ``ranks`` (default: all) of a ``world``-process group as torchrun would
    (one machine, ``localhost:port``) running ``python argv…``; wait at most ``timeout``
    seconds for all of them, killing every one still running then (its returncode is then
    negative). Output goes through files, so a chatty rank never blocks on a full pipe."""
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as files:
        procs = []
        for r in ranks if ranks is not None else range(world):
            env = rank_env(r, world, port)
            out = files.enter_context(open(Path(logs) / f"{r}.out", "w+"))
            err = files.enter_context(open(Path(logs) / f"{r}.err", "w+"))
            cmd = [sys.executable, *argv]
            procs.append((subprocess.Popen(cmd, env=env, stdout=out, stderr=err), out, err))
        deadline = time.monotonic() + timeout
        done = []
        try:
            for p, _, _ in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for p, out, err in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                out.seek(0)
                err.seek(0)
                done.append(
                    subprocess.CompletedProcess(p.args, p.returncode, out.read(), err.read())
                )
        return done


if __name__ == "__main__":
    main(sys.argv[1])
