"""Image grids: flattened images as squares, tiled into one montage, drawn on one Axes.

The bottom of the plots package: it imports nothing from the rest of it.

A grid is a single ``imshow`` of one tiled array rather than one Axes per image, which keeps
even a 20 × 20 manifold cheap to draw. Matplotlib's object API only: no pyplot, no global
backend state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from pyrovae.core.errors import PyroVAEError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GRID_PAD = 1  # pixels between tiles (and around the montage)
GRID_FILL = 1.0  # the padding's grey level: white
TILE_INCHES = 0.5


def as_square(x: torch.Tensor) -> torch.Tensor:
    """(N, D) flattened images ↦ (N, s, s) with s = √D; D must be a perfect square."""
    if x.dim() != 2:
        raise PyroVAEError(f"images must be flattened, (N, D); got shape {tuple(x.shape)}")
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise PyroVAEError(
            f"images of {x.shape[1]} pixels are not square; plots need D = side² (784 = 28²)"
        )
    return x.reshape(x.shape[0], side, side)


def tile_images(images: torch.Tensor, cols: int, pad: int = GRID_PAD) -> torch.Tensor:
    """(N, H, W) ↦ one (R(H+pad)+pad, C(W+pad)+pad) montage, row-major, R = ⌈N/C⌉.

    Tiles are copied unchanged (no clamping), so a tile read back from the montage equals its
    image exactly; empty cells and padding are ``GRID_FILL``.
    """
    n, h, w = images.shape
    rows = math.ceil(n / cols)
    out = images.new_full((rows * (h + pad) + pad, cols * (w + pad) + pad), GRID_FILL)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[top : top + h, left : left + w] = images[i]
    return out


def tile_at(montage, row: int, col: int, side: int, pad: int = GRID_PAD):
    """The (side, side) tile at (row, col) of a montage from :func:`tile_images`."""
    top, left = pad + row * (side + pad), pad + col * (side + pad)
    return montage[top : top + side, left : left + side]


def draw_grid(
    ax,
    images: torch.Tensor,
    cols: int,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> None:
    """Draw (N, H, W) images in [0, 1] on ``ax`` as one grey-level montage, ``cols`` per row;
    optional labels at the rows' and columns' centres (as tick labels)."""
    n, h, w = images.shape
    montage = tile_images(images.detach().float().cpu(), cols)
    ax.imshow(montage.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for spine in ax.spines.values():
        spine.set_visible(False)
    rows = math.ceil(n / cols)
    x_centres = [GRID_PAD + c * (w + GRID_PAD) + (w - 1) / 2 for c in range(cols)]
    y_centres = [GRID_PAD + r * (h + GRID_PAD) + (h - 1) / 2 for r in range(rows)]
    ax.set_xticks(x_centres if col_labels else [], list(col_labels or []))
    ax.set_yticks(y_centres if row_labels else [], list(row_labels or []))
    ax.tick_params(length=0, labelsize=7)


def image_grid(
    images: torch.Tensor,
    cols: int | None = None,
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    tile_inches: float = TILE_INCHES,
) -> Figure:
    """A figure of (N, H, W) images in [0, 1] (or flattened (N, D), D = side²), ``cols`` per
    row (default ⌈√N⌉), each tile ``tile_inches`` wide, with optional row / column labels."""
    from matplotlib.figure import Figure

    if images.dim() == 2:
        images = as_square(images)
    n = images.shape[0]
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    # margins in inches, sized for 7-point labels (no layout engine: fixed, cheap geometry)
    left = 0.15 + 0.065 * max(map(len, row_labels)) if row_labels else 0.0
    bottom = 0.25 if col_labels else 0.0
    top = 0.3 if title else 0.0
    width, height = cols * tile_inches + left, rows * tile_inches + bottom + top
    fig = Figure(figsize=(width, height))
    box = (left / width, bottom / height, 1 - left / width, 1 - (bottom + top) / height)
    ax = fig.add_axes(box)
    draw_grid(ax, images, cols, row_labels, col_labels)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
