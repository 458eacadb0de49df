"""Encoders: x ↦ the guide family's raw parameters, shape (B, family.num_params(d))."""

from __future__ import annotations

from torch import nn

from pyrovae.nets import MLP

ENCODERS: dict[str, type[nn.Module]] = {"mlp": MLP}
