"""Labels as network inputs, for conditional models."""

from __future__ import annotations

import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError


def onehot(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """One-hot rows (…, C) of labels y (…,): a scatter, which (unlike ``F.one_hot``, whose range
    check reads a value back to Python) a recorded, compiled step can hold."""
    out = torch.zeros(*y.shape, num_classes, dtype=dtype, device=y.device)
    return out.scatter(-1, y.unsqueeze(-1), 1.0)


def joined(h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[h, c] along the last dim, their leading dims broadcast: a context c (B, n_c) joins h
    (K, B, n) of K particles, giving (K, B, n + n_c)."""
    lead = torch.broadcast_shapes(h.shape[:-1], c.shape[:-1])
    return torch.cat([h.expand(*lead, h.shape[-1]), c.expand(*lead, c.shape[-1])], dim=-1)


def with_label(h: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[h, onehot(y)] along the last dim, h (…, B, n) and y (…, B) broadcast against each other:
    y (B,) over h's leading (particle) dims, or an enumerated y (C, 1) over a batch h (B, n),
    giving (C, B, n + C)."""
    return joined(h, onehot(y, num_classes, h.dtype))


def takes_labels(model) -> bool:
    """Whether a model's ELBO takes the labels y as given: a conditional VAE's (num_classes > 0),
    unless the model says otherwise (M2, whose y is a latent site observed only when known)."""
    return bool(getattr(model, "takes_labels", getattr(model, "num_classes", 0)))


def labels_for(model, y: torch.Tensor) -> torch.Tensor | None:
    """The labels a (possibly conditional) model takes: ``y``, or None when it takes none."""
    return y if takes_labels(model) else None


class LabelCondition(nn.Module):
    """c = onehot(y) for ``num_classes`` classes: p_θ(x|z, y), q(z|x, y), p(z|y)."""

    predicted = None  # the likelihood covers every pixel
    given, target = "y", "x"  # what log p(target|given) is of

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    @property
    def size(self) -> int:
        return self.num_classes

    def context(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """onehot(y), (…, B, C), in x's dtype."""
        if y is None:
            raise PyroVAEError("a conditional VAE needs the labels y")
        return onehot(y, self.num_classes, x.dtype)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"
