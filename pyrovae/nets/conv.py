"""A small conv encoder and decoder for 28×28 images.

Both have the constructor ``(in_dim, hidden, out_dim, activation)`` of every network and map
(..., in_dim) to (..., out_dim); leading dims (particles, batch) pass through.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.nets.dense import ACTIVATIONS, mlp

SIDE = 28
IMAGE_PIXELS = SIDE * SIDE
# The conv stacks halve the side twice, 28 → 14 → 7, with FEATURES channels at 7×7.
FEATURES = 64
FEATURE_SIDE = SIDE // 4
FEATURE_DIM = FEATURES * FEATURE_SIDE * FEATURE_SIDE


class ConvEncoder(nn.Module):
    """x ↦ conv(image) ‖ extras → hidden… → out_dim, for 28×28 images.

    The first 784 entries of x are the image, row-major (``images.flatten(1)`` of (N, 28, 28));
    the other ``in_dim − 784`` (e.g. a one-hot label for a conditional VAE) join the conv
    features before the MLP. Conv(1→32, 4, stride 2, pad 1) gives 14×14, Conv(32→64, 4, 2, 1)
    gives 7×7, flattened to 3136 features.
    """

    description = "two stride-2 convolutions 28 → 14 → 7, then --hidden; 28×28 images"

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__()
        if in_dim < IMAGE_PIXELS:
            raise PyroVAEError(
                f"the conv encoder needs 28×28 images (784 inputs or more), got in_dim {in_dim}"
            )
        act = lookup(ACTIVATIONS, activation, "activation")
        self.in_dim = in_dim
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 4, stride=2, padding=1),  # (N, 32, 14, 14)
            act(),
            nn.Conv2d(32, FEATURES, 4, stride=2, padding=1),  # (N, 64, 7, 7)
            act(),
        )
        self.head = mlp([FEATURE_DIM + in_dim - IMAGE_PIXELS, *hidden, out_dim], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_dim)  # (N, in_dim), N = prod(lead)
        image = x[:, :IMAGE_PIXELS].reshape(-1, 1, SIDE, SIDE)  # (N, 1, 28, 28)
        features = self.conv(image).flatten(1)  # (N, 3136)
        h = torch.cat([features, x[:, IMAGE_PIXELS:]], dim=-1)  # (N, 3136 + extras)
        out = self.head(h)
        return out.reshape(*lead, out.shape[-1])


class ConvDecoder(nn.Module):
    """z ↦ hidden… → 64×7×7 → ConvT(64→32, 4, 2, 1) 14×14 → ConvT(32→C, 4, 2, 1) 28×28.

    ``out_dim`` = 784·C, C the likelihood's parameters per pixel. The output is channel-major:
    entry c·784 + 28·row + col is parameter c of pixel (row, col), so for C = 1 it is the image
    row-major, as ``images.flatten(1)`` lays out the data, and for C > 1 ``chunk(C, -1)`` splits
    it into one full image per parameter. ``hidden`` is used in the order given (build.py passes
    the encoder's sizes reversed, as for the MLP).
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__()
        if out_dim % IMAGE_PIXELS or out_dim == 0:
            raise PyroVAEError(
                f"the conv decoder makes 28×28 images: out_dim must be a multiple of 784, "
                f"got {out_dim}"
            )
        act = lookup(ACTIVATIONS, activation, "activation")
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.head = nn.Sequential(mlp([in_dim, *hidden, FEATURE_DIM], activation), act())
        params_per_pixel = out_dim // IMAGE_PIXELS
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(FEATURES, 32, 4, stride=2, padding=1),  # (N, 32, 14, 14)
            act(),
            nn.ConvTranspose2d(32, params_per_pixel, 4, stride=2, padding=1),  # (N, C, 28, 28)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, self.in_dim))  # (N, 3136)
        out = self.deconv(h.reshape(-1, FEATURES, FEATURE_SIDE, FEATURE_SIDE))  # (N, C, 28, 28)
        return out.reshape(*lead, self.out_dim)  # (..., C·784), channel-major
