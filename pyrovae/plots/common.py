"""What every figure shares: a new Figure, saving it, decoding codes, labels, eval mode."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import atomic_write
from pyrovae.plots.grids import as_images

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 80
"""Dots per inch of every saved figure."""


def new_figure(
    width: float,
    height: float,
    *,
    left: float = 0.75,
    right: float = 0.15,
    bottom: float = 0.5,
    top: float = 0.3,
    gap: float = 0.6,
) -> Figure:
    """A ``width`` × ``height`` inch figure whose subplots keep the given margins and gaps (in
    inches). Fixed geometry rather than a layout engine: drawing is then one pass, which keeps
    the figures that every training run writes cheap."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap / 2,
        hspace=gap / 1.5,
    )
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created), atomically: readers see the
    old file or the whole new one. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    return path


@contextmanager
def evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """Modules in eval mode and no gradients inside the block; training modes restored after."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def label_tensor(y: torch.Tensor | int | None, n: int, device: torch.device) -> torch.Tensor | None:
    """Labels for a batch of ``n``: None stays None, one label (int or one element) is repeated,
    an (n,) tensor is used as it is."""
    if y is None:
        return None
    y = torch.as_tensor(y, dtype=torch.long, device=device).reshape(-1)
    if y.numel() == 1:
        return y.expand(n)
    if y.numel() != n:
        raise PyroVAEError(f"expected 1 or {n} labels, got {y.numel()}")
    return y


def as_rows(x: torch.Tensor, shape: tuple[int, int, int] | None = None) -> torch.Tensor:
    """One image (D,) or a batch (N, D) as a batch; with ``shape`` (C, H, W) checked to be
    such images (D = C·H·W) before any network sees it."""
    x = x.unsqueeze(0) if x.dim() == 1 else x
    if shape is not None:
        as_images(x, shape)
    return x


def image_shape(model) -> tuple[int, int, int]:
    """The (C, H, W) a model's x is (its ``image_shape``; square grey without one)."""
    shape = getattr(model, "image_shape", None)
    if shape is not None:
        return tuple(shape)
    d = model.likelihood.num_pixels
    side = math.isqrt(d)
    if side * side != d:
        raise PyroVAEError(
            f"this model's {d} values per image are not a square image and it has no "
            "image_shape; build it with image_shape=(C, H, W)"
        )
    return (1, side, side)


def decode(model, z: torch.Tensor, y: torch.Tensor | int | None = None) -> torch.Tensor:
    """E_θ[x|z] (the likelihood's mean) for codes z (N, d), shape (N, D)."""
    with evaluating(model):
        return model.mean(z, label_tensor(y, z.shape[0], z.device))


def latent_dim(model) -> int:
    """The size of the code the decoder reads: z, or z1 with several stochastic layers."""
    layers = getattr(model, "layers", None)
    if layers:
        return int(layers[0].latent_dim)
    with torch.no_grad():
        return int(model.prior().event_shape[-1])


def sites(module) -> tuple[str, ...]:
    """A model's or guide's latent sites, bottom first (``("z",)`` when it does not say)."""
    return tuple(getattr(module, "sites", ("z",)))


def layer_note(module) -> str | None:
    """With several stochastic layers, which one a figure of codes shows (the bottom one, which
    the decoder reads), e.g. ``z1, the bottom of 2 stochastic layers``; None for one layer."""
    names = sites(module)
    return f"{names[0]}, the bottom of {len(names)} stochastic layers" if len(names) > 1 else None
