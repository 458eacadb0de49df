"""How much memory a device has free, and sizes in words: for refusing what cannot fit before an
allocator fails with a traceback half-way through."""

from __future__ import annotations

import os

import torch


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` in bytes: the GPU's free memory, or the machine's available
    RAM; None where it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``n`` bytes as e.g. ``23.1 GB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")
