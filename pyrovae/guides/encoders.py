"""Encoders: x ↦ the guide family's raw parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.nets import mlp


class MLPEncoder(nn.Module):
    """An MLP ``D → hidden… → out_dim`` (out_dim = the family's number of raw parameters)."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.net = mlp([in_dim, *hidden, out_dim], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, out_dim)


ENCODERS: dict[str, type[nn.Module]] = {"mlp": MLPEncoder}
