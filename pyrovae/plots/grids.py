"""Image grids: flattened images as images (grey or RGB), tiled into one montage, drawn on one Axes.

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
AXIS_LABEL_INCHES = 0.2  # the margin an axis label (8 points) takes


def readable_tile(width: int, dpi: int, scale: int = 3, most: int = 192) -> float:
    """Inches per tile of images ``width`` pixels wide that draw each image pixel as ``scale``
    pixels at ``dpi`` (padding included), but not past ``most`` pixels a tile unless the image
    itself is wider; never below :data:`TILE_INCHES`."""
    pixels = min(scale * (width + GRID_PAD), max(width + GRID_PAD, most))
    return max(TILE_INCHES, pixels / dpi)


def as_images(x: torch.Tensor, shape: Sequence[int] | None) -> torch.Tensor:
    """(N, D) flattened images of ``shape`` (C, H, W) ↦ (N, H, W) grey or (N, 3, H, W) RGB;
    ``shape`` None: square grey images (:func:`as_square`)."""
    if shape is None:
        return as_square(x)
    c, h, w = shape
    if x.dim() != 2 or x.shape[1] != c * h * w:
        raise PyroVAEError(
            f"images must be flattened (N, {c * h * w}) for shape {tuple(shape)}; got "
            f"{tuple(x.shape)}"
        )
    if c not in (1, 3):
        raise PyroVAEError(f"figures draw grey or RGB images, not {c} channels")
    images = x.reshape(x.shape[0], c, h, w)
    return images[:, 0] if c == 1 else images


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
    """(N, H, W) ↦ one (R(H+pad)+pad, K(W+pad)+pad) montage, row-major, R = ⌈N/K⌉, K = cols;
    (N, C, H, W) ↦ (C, R(H+pad)+pad, K(W+pad)+pad).

    Tiles are copied unchanged (no clamping), so a tile read back from the montage equals its
    image exactly; empty cells and padding are ``GRID_FILL``.
    """
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    rows = math.ceil(n / cols)
    lead = images.shape[1:-2]  # () grey, (C,) colour
    out = images.new_full((*lead, rows * (h + pad) + pad, cols * (w + pad) + pad), GRID_FILL)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        out[..., top : top + h, left : left + w] = images[i]
    return out


def tile_at(montage, row: int, col: int, side: int, pad: int = GRID_PAD, width: int | None = None):
    """The (side, width) tile at (row, col) of a drawn montage, (H, W) grey or (H, W, 3) RGB
    (``width`` defaults to ``side``: square tiles)."""
    width = side if width is None else width
    top, left = pad + row * (side + pad), pad + col * (width + pad)
    return montage[top : top + side, left : left + width]


def draw_grid(
    ax,
    images: torch.Tensor,
    cols: int,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> None:
    """Draw (N, H, W) grey or (N, 3, H, W) RGB images in [0, 1] on ``ax`` as one montage,
    ``cols`` per row; optional labels at the rows' and columns' centres (as tick labels).
    RGB values are clipped to [0, 1] (grey ones are, by the colour map's limits)."""
    n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    montage = tile_images(images.detach().float().cpu(), cols)
    if montage.dim() == 3:  # (3, H', W') ↦ (H', W', 3), as imshow takes colour
        ax.imshow(montage.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    else:
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
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Figure:
    """A figure of (N, H, W) grey or (N, 3, H, W) RGB images in [0, 1] (or flattened (N, D),
    D = side²), ``cols`` per row (default ⌈√N⌉), each tile ``tile_inches`` wide (and as high
    as the images' aspect says), with optional row / column labels and axis labels (what the
    rows and columns are)."""
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
    left += AXIS_LABEL_INCHES if ylabel else 0.0
    bottom += AXIS_LABEL_INCHES if xlabel else 0.0
    aspect = images.shape[-2] / images.shape[-1]  # H / W of one tile
    width, height = cols * tile_inches + left, rows * tile_inches * aspect + bottom + top
    fig = Figure(figsize=(width, height))
    box = (left / width, bottom / height, 1 - left / width, 1 - (bottom + top) / height)
    ax = fig.add_axes(box)
    draw_grid(ax, images, cols, row_labels, col_labels)
    if title:
        ax.set_title(title, fontsize=9)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)
    return fig
