"""Decoders: z ↦ the likelihood's parameters for every pixel."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.nets import mlp


class MLPDecoder(nn.Module):
    """An MLP ``d → hidden… → D·n_params``; leading dims (particles, batch) pass through."""

    def __init__(
        self, latent_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.net = mlp([latent_dim, *hidden, out_dim], activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (..., B, D·n_params)


DECODERS: dict[str, type[nn.Module]] = {"mlp": MLPDecoder}
