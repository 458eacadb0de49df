"""Seeds, random-number-generator state and device choice: the only place global RNGs are set."""

from __future__ import annotations

import contextvars
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyro
import torch

from pyrovae.core.errors import PyroVAEError


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every CUDA device)."""
    pyro.set_rng_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Every global generator's state, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned (CUDA states only where the GPUs exist)."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


DEVICE_TYPES = ("cpu", "cuda")


def parse_device(name: str) -> torch.device | None:
    """``name`` checked without looking for hardware: None for ``auto``, else a cpu or cuda
    device (``cuda:N`` for the N-th GPU); anything else is a one-line error (``mps`` too:
    pyrovae is built and tested for CPUs and CUDA GPUs only)."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise PyroVAEError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "mps":
        raise PyroVAEError(
            f"--device {name}: Apple's MPS backend is not supported (pyrovae is tested on cpu "
            "and cuda only); use --device cpu"
        )
    if device.type not in DEVICE_TYPES:
        raise PyroVAEError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    return device


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when a GPU is visible, else the CPU. ``cuda`` without a GPU, or
    ``cuda:N`` without an N-th GPU, is a one-line error."""
    device = parse_device(name)
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PyroVAEError(
                f"--device {name} asked for, but no CUDA GPU is visible; use cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            visible = "cuda:0" if count == 1 else f"cuda:0 … cuda:{count - 1}"
            raise PyroVAEError(
                f"--device {name}: there is no such GPU; {count} visible ({visible})"
            )
    return device


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block under ``set_seed(seed)`` and restore every generator afterwards.

    Evaluation uses it so test figures are reproducible and training's random stream is the
    same whether or not (or how often) it was evaluated.
    """
    state = get_rng_state()
    set_seed(seed)
    try:
        yield
    finally:
        set_rng_state(state)


def free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device``: CUDA's own count, or for the CPU the kernel's MemAvailable
    (None where neither is known)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


_RECORDING = contextvars.ContextVar("pyrovae_recording", default=False)


@contextmanager
def recording() -> Iterator[None]:
    """Mark a block as a graph recording (the compiled fast path): checks that read tensor
    values in Python, and were made on the eager warm-up step, are skipped inside it."""
    token = _RECORDING.set(True)
    try:
        yield
    finally:
        _RECORDING.reset(token)


def is_recording() -> bool:
    """Whether the code runs inside :func:`recording`."""
    return _RECORDING.get()
