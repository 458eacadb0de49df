"""Saving image grids (matplotlib's object API: no pyplot, no global backend state)."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def save_grid(images: torch.Tensor, path: str | Path, cols: int | None = None) -> Path:
    """Save (N, H, W) images in [0, 1] as one grey-level PNG grid; returns the path."""
    from matplotlib.figure import Figure

    n = images.shape[0]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * 0.6, rows * 0.6))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i].numpy(), cmap="gray", vmin=0, vmax=1)
    fig.subplots_adjust(0, 0, 1, 1, 0.05, 0.05)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
