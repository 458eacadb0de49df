"""Mini-batches by shuffled index slicing of device-resident tensors (no per-item DataLoader)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

Batch = torch.Tensor | tuple[torch.Tensor, ...]


def num_batches(n: int, batch_size: int) -> int:
    """How many batches of ``batch_size`` cover ``n`` items: ⌈n / batch_size⌉."""
    return -(-n // batch_size)


def epoch_permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """The order an epoch visits n rows in, on the generator's device: the same for the
    device-resident and the streamed path."""
    return torch.randperm(n, generator=generator, device=generator.device)


def shuffled_batches(data: Batch, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """Every row exactly once, in a random order, ``batch_size`` rows at a time.

    ``data`` is one tensor or a tuple of aligned tensors (images, labels): batches come in the
    same form. One gather per epoch (``t[perm]``), then each batch is a contiguous view.
    """
    tensors = data if isinstance(data, tuple) else (data,)
    n = tensors[0].shape[0]
    perm = epoch_permutation(n, generator)
    shuffled = [t[perm] for t in tensors]
    for start in range(0, n, batch_size):
        batch = tuple(t[start : start + batch_size] for t in shuffled)  # (≤batch_size, …)
        yield batch if isinstance(data, tuple) else batch[0]


def epoch_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator of its own for one epoch's shuffle, so global RNG streams stay untouched."""
    return torch.Generator(device=device).manual_seed(seed)
