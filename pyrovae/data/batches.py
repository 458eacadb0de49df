"""Mini-batches by shuffled index slicing of a device-resident tensor (no per-item DataLoader)."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def shuffled_batches(
    x: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Every row of ``x`` exactly once, in a random order, ``batch_size`` rows at a time.

    One gather per epoch (``x[perm]``), then each batch is a contiguous view of it.
    """
    perm = torch.randperm(x.shape[0], generator=generator, device=x.device)
    shuffled = x[perm]
    for start in range(0, x.shape[0], batch_size):
        yield shuffled[start : start + batch_size]  # (≤batch_size, D)


def epoch_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator of its own for one epoch's shuffle, so global RNG streams stay untouched."""
    return torch.Generator(device=device).manual_seed(seed)
