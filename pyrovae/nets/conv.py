"""A small conv encoder and decoder for images of any shape (C, H, W).

Both have the constructor ``(in_dim, hidden, out_dim, activation, *, image_shape)`` of every
network and map (..., in_dim) to (..., out_dim); leading dims (particles, batch) pass through.
Images are flattened channel-major (``images.flatten(1)`` of (N, C, H, W)).

Each stride-2 convolution (kernel 4, padding 1) maps a side s to ⌊s/2⌋; the decoder's transposed
convolutions undo it exactly, side t to 2t + p with output padding p = s − 2⌊s/2⌋ ∈ {0, 1}, so
odd sides come back at their size (28 → 14 → 7 → 14 → 28; 21 → 10 → 5 → 10 → 21).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.core.errors import ShapeError
from pyrovae.core.registry import lookup
from pyrovae.nets.dense import ACTIVATIONS, mlp

MNIST_SHAPE = (1, 28, 28)
CHANNELS = (32, 64)  # feature channels after the first and the second convolution
KERNEL, STRIDE, PADDING = 4, 2, 1
MIN_SIDE = 4  # two halvings must leave at least one pixel: ⌊⌊s/2⌋/2⌋ ≥ 1


def halved(side: int) -> int:
    """A stride-2 convolution's output side, ⌊(s + 2·1 − 4)/2⌋ + 1 = ⌊s/2⌋."""
    return (side + 2 * PADDING - KERNEL) // STRIDE + 1


def conv_sides(side: int) -> list[int]:
    """[s, ⌊s/2⌋, ⌊⌊s/2⌋/2⌋]: a side at the input and after each convolution."""
    sides = [side]
    for _ in CHANNELS:
        sides.append(halved(sides[-1]))
    return sides


def _checked(image_shape: Sequence[int], what: str) -> tuple[int, int, int]:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ShapeError(f"the conv {what} needs an image shape (C, H, W), got {image_shape}")
    c, h, w = (int(s) for s in image_shape)
    if min(h, w) < MIN_SIDE:
        raise ShapeError(
            f"the conv {what} needs images of at least {MIN_SIDE}×{MIN_SIDE} pixels, got "
            f"(C, H, W) = {(c, h, w)}; use --net mlp"
        )
    return c, h, w


class ConvEncoder(nn.Module):
    """x ↦ conv(image) ‖ extras → hidden… → out_dim, for images of shape (C, H, W).

    The first D = C·H·W entries of x are the image; the other ``in_dim − D`` (a one-hot label
    for a conditional VAE) join the conv features before the MLP. Conv(C→32, 4, stride 2, pad 1)
    gives ⌊H/2⌋×⌊W/2⌋, Conv(32→64, 4, 2, 1) gives h×w = ⌊H/4⌋×⌊W/4⌋, flattened to 64·h·w.
    """

    description = "two stride-2 convolutions (side → side/2 → side/4), then --hidden; ≥ 4×4 images"

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        activation: str = "relu",
        *,
        image_shape: Sequence[int] = MNIST_SHAPE,
    ) -> None:
        super().__init__()
        c, h, w = _checked(image_shape, "encoder")
        self.image_shape, self.image_dim = (c, h, w), c * h * w
        if in_dim < self.image_dim:
            raise ShapeError(
                f"the conv encoder needs {c}×{h}×{w} images ({self.image_dim} inputs or more), "
                f"got in_dim {in_dim}"
            )
        act = lookup(ACTIVATIONS, activation, "activation")
        self.in_dim = in_dim
        self.conv = nn.Sequential(
            nn.Conv2d(c, CHANNELS[0], KERNEL, STRIDE, PADDING),  # (N, 32, H/2, W/2)
            act(),
            nn.Conv2d(CHANNELS[0], CHANNELS[1], KERNEL, STRIDE, PADDING),  # (N, 64, H/4, W/4)
            act(),
        )
        features = CHANNELS[-1] * conv_sides(h)[-1] * conv_sides(w)[-1]
        self.head = mlp([features + in_dim - self.image_dim, *hidden, out_dim], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_dim)  # (N, in_dim), N = prod(lead)
        image = x[:, : self.image_dim].reshape(-1, *self.image_shape)  # (N, C, H, W)
        features = self.conv(image).flatten(1)  # (N, 64·h·w)
        h = torch.cat([features, x[:, self.image_dim :]], dim=-1)  # (N, 64·h·w + extras)
        out = self.head(h)
        return out.reshape(*lead, out.shape[-1])


class ConvDecoder(nn.Module):
    """z ↦ hidden… → 64×h×w → ConvT(64→32, 4, 2, 1) → ConvT(32→P·C, 4, 2, 1) → (P·C, H, W).

    ``out_dim`` = P·D, P the likelihood's parameters per value, D = C·H·W. The output is
    channel-major: entry p·D + c·H·W + W·row + col is parameter p of channel c at (row, col), so
    for P = 1 it is the image as ``images.flatten(1)`` lays out the data, and for P > 1
    ``chunk(P, -1)`` splits it into one full image per parameter. ``hidden`` is used in the
    order given (build.py passes the encoder's sizes reversed, as for the MLP).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        activation: str = "relu",
        *,
        image_shape: Sequence[int] = MNIST_SHAPE,
    ) -> None:
        super().__init__()
        c, h, w = _checked(image_shape, "decoder")
        image_dim = c * h * w
        if out_dim % image_dim or out_dim == 0:
            raise ShapeError(
                f"the conv decoder makes {c}×{h}×{w} images: out_dim must be a multiple of "
                f"{image_dim}, got {out_dim}"
            )
        act = lookup(ACTIVATIONS, activation, "activation")
        self.in_dim, self.out_dim = in_dim, out_dim
        hs, ws = conv_sides(h), conv_sides(w)
        self.feature_shape = (CHANNELS[-1], hs[-1], ws[-1])
        self.head = nn.Sequential(
            mlp([in_dim, *hidden, math.prod(self.feature_shape)], activation), act()
        )

        def up(n_in: int, n_out: int, level: int) -> nn.ConvTranspose2d:
            # output side 2t + p: p restores the side an odd input lost to ⌊s/2⌋
            pad = (hs[level] - 2 * hs[level + 1], ws[level] - 2 * ws[level + 1])
            return nn.ConvTranspose2d(n_in, n_out, KERNEL, STRIDE, PADDING, output_padding=pad)

        self.deconv = nn.Sequential(
            up(CHANNELS[1], CHANNELS[0], 1),  # (N, 32, ⌊H/2⌋, ⌊W/2⌋)
            act(),
            up(CHANNELS[0], (out_dim // image_dim) * c, 0),  # (N, P·C, H, W)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, self.in_dim))  # (N, 64·h·w)
        out = self.deconv(h.reshape(-1, *self.feature_shape))  # (N, P·C, H, W)
        return out.reshape(*lead, self.out_dim)  # (..., P·D), channel-major
