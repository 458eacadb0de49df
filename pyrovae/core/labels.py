"""Labels as network inputs, for conditional models."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def with_label(h: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[h, onehot(y)] along the last dim, h (…, B, n) and y (…, B) broadcast against each other:
    y (B,) over h's leading (particle) dims, or an enumerated y (C, 1) over a batch h (B, n),
    giving (C, B, n + C)."""
    onehot = F.one_hot(y, num_classes).to(h.dtype)  # (…, B, C)
    lead = torch.broadcast_shapes(h.shape[:-1], onehot.shape[:-1])
    return torch.cat([h.expand(*lead, h.shape[-1]), onehot.expand(*lead, num_classes)], dim=-1)


def takes_labels(model) -> bool:
    """Whether a model's ELBO takes the labels y as given: a conditional VAE's (num_classes > 0),
    unless the model says otherwise (M2, whose y is a latent site observed only when known)."""
    return bool(getattr(model, "takes_labels", getattr(model, "num_classes", 0)))


def labels_for(model, y: torch.Tensor) -> torch.Tensor | None:
    """The labels a (possibly conditional) model takes: ``y``, or None when it takes none."""
    return y if takes_labels(model) else None
