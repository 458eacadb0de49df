"""Checks on images and labels: one validator for every way data comes in (files, folders,
torchvision datasets, tensors handed to ``make_image_data`` / ``ImageData``).

Each check raises a one-line :class:`PyroVAEError` that starts with ``where`` (a file, a folder,
or the name of a tensor), so the user knows which data is bad.
"""

from __future__ import annotations

import torch

from pyrovae.core.errors import PyroVAEError

LEVELS = 255  # 8-bit images: intensities k / 255, k = 0 … 255
GRID_TOLERANCE = 1e-4  # |255 x − round(255 x)| allowed for 8-bit data stored as floats
GRID_BLOCK = 1 << 18  # values per block of the grid check: its float64 temporaries stay in cache


def validate_images(images: torch.Tensor, where: str, levels: int | None = None) -> None:
    """Intensities must be finite and in [0, 1]; with ``levels`` L also on the grid k / L.

    ``images`` has any shape (N, …) and any real dtype; uint8 is always valid. Counted over the
    whole tensor, so the message says how many values are wrong and one of them.
    """
    if images.dtype == torch.uint8 or images.numel() == 0:
        return
    if images.dtype == torch.bool:
        return
    x = images if images.is_floating_point() else images.double()
    bad = ~torch.isfinite(x)
    if bad.any():
        count, first = int(bad.sum()), x[bad].flatten()[0].item()
        raise PyroVAEError(f"{where}: {count} values are not finite (e.g. {first})")
    low, high = x.min().item(), x.max().item()
    if low < 0 or high > 1:
        raise PyroVAEError(
            f"{where}: values span [{low:g}, {high:g}]; images must be uint8 (0–255) or "
            "intensities in [0, 1]"
        )
    if levels is not None and _off_grid(x, levels):
        scaled = x.double() * levels  # whole this time: the count and an example
        off = (scaled - scaled.round()).abs() > GRID_TOLERANCE
        what = "0 or 1" if levels == 1 else f"on the 8-bit grid k/{levels}"
        hint = "; use --pixels grey for continuous data" if levels == LEVELS else ""
        raise PyroVAEError(
            f"{where}: {int(off.sum())} values are not {what} "
            f"(e.g. {x[off].flatten()[0].item():.6f}){hint}"
        )


def _off_grid(x: torch.Tensor, levels: int) -> bool:
    """Whether a value of ``x`` is off the grid k / ``levels``: the check of
    :func:`validate_images` block by block, without float64 copies of the whole tensor (those
    took longer than reading the dataset's files)."""
    flat = x.reshape(-1)
    for start in range(0, flat.numel(), GRID_BLOCK):
        scaled = flat[start : start + GRID_BLOCK].double() * levels
        if ((scaled - scaled.round()).abs() > GRID_TOLERANCE).any():
            return True
    return False


def validate_labels(labels: torch.Tensor, num_images: int, where: str) -> None:
    """Labels are N integers ≥ 0, one per image."""
    if labels.dim() != 1:
        raise PyroVAEError(
            f"{where}: labels must be one integer per image, got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != num_images:
        raise PyroVAEError(f"{where}: {num_images} images but {labels.shape[0]} labels")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise PyroVAEError(f"{where}: labels must be integers, got {labels.dtype}")
    if labels.numel() and labels.min().item() < 0:
        raise PyroVAEError(f"{where}: labels must be ≥ 0, found {labels.min().item()}")
