"""Run ``pyrovae`` and signal it at a chosen moment, for tests/test_faults_run_folder.py (run as
a subprocess, alone or as a rank under tests/distributed_harness.py's ``launch``):

    python tests/signal_harness.py SIGNAL MOMENT N -- train ...

SIGNAL is ``TERM`` or ``KILL``; the process sends it to itself, through the kernel as a
scheduler would, at the N-th time MOMENT comes (counting from 1):
- ``step``: just before an SVI step;
- ``checkpoint``: half-way through writing checkpoint.pt's bytes (the rest is then written);
- ``figure``: half-way through writing a figure's PNG bytes.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import torch
from fault_harness import _at, _checkpoint_writes

import pyrovae.inference.train
import pyrovae.plots.common
from pyrovae.cli import main


def _signal(name: str):
    number = getattr(signal, f"SIG{name}")

    def send(*args, **kwargs) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), number)

    return send


def _half_then(send):
    """A write of ``data`` that sends the signal half-way, then writes the rest."""

    def write(data: bytes, f) -> None:
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        send()
        f.write(data[len(data) // 2 :])

    return write


def _in_checkpoint(n: int, send) -> None:
    half = _half_then(send)

    def fault(obj, f) -> None:
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        half(buffer.getvalue(), f)

    _checkpoint_writes(n, fault)


def _in_figure(n: int, send) -> None:
    half, write = _half_then(send), pyrovae.plots.common.atomic_write
    calls = 0

    def patched(path, produce) -> None:
        nonlocal calls
        calls += 1
        if calls != n:
            return write(path, produce)
        buffer = io.BytesIO()
        produce(buffer)
        return write(path, lambda f: half(buffer.getvalue(), f))

    pyrovae.plots.common.atomic_write = patched


def _before_step(n: int, send) -> None:
    pyrovae.inference.train.svi_step = _at(n, send, pyrovae.inference.train.svi_step)


MOMENTS = {"step": _before_step, "checkpoint": _in_checkpoint, "figure": _in_figure}


if __name__ == "__main__":
    name, moment, n, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: signal_harness.py SIGNAL MOMENT N -- pyrovae arguments"
    MOMENTS[moment](int(n), _signal(name))
    sys.exit(main(argv))
