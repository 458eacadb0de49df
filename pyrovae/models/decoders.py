"""Decoders: z ↦ the likelihood's parameters for every pixel, shape (..., D·params_per_pixel)."""

from __future__ import annotations

from torch import nn

from pyrovae.nets import MLP

DECODERS: dict[str, type[nn.Module]] = {"mlp": MLP}
