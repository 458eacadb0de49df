"""Labels as network inputs, for conditional models."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def with_label(h: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[h, onehot(y)] along the last dim; y (B,) broadcast over h's leading (particle) dims."""
    onehot = F.one_hot(y, num_classes).to(h.dtype)  # (B, C)
    return torch.cat([h, onehot.expand(*h.shape[:-1], num_classes)], dim=-1)


def labels_for(model, y: torch.Tensor) -> torch.Tensor | None:
    """The labels a (possibly conditional) model takes: ``y``, or None when it has no classes."""
    return y if model.num_classes else None
