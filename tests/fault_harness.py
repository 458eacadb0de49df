"""Run ``pyrovae`` with one fault injected, for tests/test_faults.py (run as a subprocess):

    python tests/fault_harness.py FAULT N -- train ...

FAULT, at the N-th time its moment comes (counting from 1):
- ``kill-step``: SIGKILL just before an SVI step (a kill between steps);
- ``kill-replicas-step``: SIGKILL just before a step of seeds side by side (``train --seeds``);
- ``kill-in-checkpoint``: SIGKILL half-way through writing checkpoint.pt's bytes;
- ``kill-before-metrics``: SIGKILL after checkpoint.pt is written, before metrics.jsonl;
- ``enospc-checkpoint``: the disk fills up while checkpoint.pt is written;
- ``eacces``: every new file fails with "permission denied" (a read-only folder, as root sees
  it: root ignores chmod), from the first write on.
"""

from __future__ import annotations

import errno
import io
import os
import signal
import sys

import torch

import pyrovae.core.files
import pyrovae.inference.replicas
import pyrovae.inference.side_by_side
import pyrovae.inference.train
import pyrovae.runs.checkpoint
import pyrovae.runs.folder
import pyrovae.runs.train
from pyrovae.cli import main


def _kill() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _at(n: int, fault, original):
    """``original`` wrapped so that its n-th call runs ``fault(args)`` first."""
    calls = 0

    def wrapped(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == n:
            fault(*args, **kwargs)
        return original(*args, **kwargs)

    return wrapped


def _checkpoint_writes(n: int, fault) -> None:
    """``fault(content, file)`` at the n-th torch.save into a checkpoint."""
    save = torch.save
    calls = 0

    def patched(obj, f, *args, **kwargs):
        nonlocal calls
        if isinstance(obj, dict) and obj.get("format") == pyrovae.runs.checkpoint.CHECKPOINT_FORMAT:
            calls += 1
            if calls == n:
                return fault(obj, f)
        return save(obj, f, *args, **kwargs)

    torch.save = patched  # the one torch module every pyrovae module uses: patched for all


def _half_then_kill(obj, f) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    _kill()


def _no_space(obj, f) -> None:
    f.write(b"\0" * 1024)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def no_permission(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def install(fault: str, n: int) -> None:
    if fault == "kill-step":
        step = pyrovae.inference.train.svi_step
        pyrovae.inference.train.svi_step = _at(n, lambda *a, **k: _kill(), step)
    elif fault == "kill-replicas-step":  # batched (a GPU) or in turn (the CPU): one is used
        for cls in (pyrovae.inference.replicas.ReplicaStep, pyrovae.inference.side_by_side._InTurn):
            cls.loss_and_grads = _at(n, lambda *a, **k: _kill(), cls.loss_and_grads)
    elif fault == "kill-in-checkpoint":
        _checkpoint_writes(n, _half_then_kill)
    elif fault == "kill-before-metrics":
        write = pyrovae.runs.train.write_metrics
        # resume writes metrics once before training: count only the writes after checkpoints
        pyrovae.runs.train.save_checkpoint = _at(
            n, lambda *a, **k: _kill_at_next_metrics(write), pyrovae.runs.train.save_checkpoint
        )
    elif fault == "enospc-checkpoint":
        _checkpoint_writes(n, _no_space)
    elif fault == "eacces":
        pyrovae.core.files.tempfile.mkstemp = no_permission
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def _kill_at_next_metrics(write) -> None:
    pyrovae.runs.train.write_metrics = lambda *a, **k: _kill()


if __name__ == "__main__":
    fault, n, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: fault_harness.py FAULT N -- pyrovae arguments"
    install(fault, int(n))
    sys.exit(main(argv))
