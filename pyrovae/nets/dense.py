"""Dense networks: ``mlp`` (an ``nn.Sequential`` of linear layers) and the ``MLP`` encoder/decoder.

Activations by name in ``ACTIVATIONS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyrovae.core.registry import lookup


def _relu() -> nn.Module:
    """max(0, x): the rectified linear unit."""
    return nn.ReLU()


def _softplus() -> nn.Module:
    """log(1 + eˣ): a smooth max(0, x)."""
    return nn.Softplus()


def _tanh() -> nn.Module:
    """tanh x = (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ), in (−1, 1)."""
    return nn.Tanh()


def _elu() -> nn.Module:
    """x for x > 0, else eˣ − 1: the exponential linear unit."""
    return nn.ELU()


# name ↦ a new activation module; each described in our words (--help), not torch's docstring's
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": _relu,
    "softplus": _softplus,
    "tanh": _tanh,
    "elu": _elu,
}
"""Activations by name (``--activation``): name ↦ the ``nn.Module`` class put between layers."""


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers ``sizes[0] → … → sizes[-1]`` with ``activation`` between them (not after)."""
    act = lookup(ACTIVATIONS, activation, "activation")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """``in_dim → hidden… → out_dim``; leading dims (particles, batch) pass through. Images come
    flattened, so their ``image_shape`` (C, H, W) is accepted and not needed."""

    description = "fully connected layers of the --hidden sizes (reversed in the decoder)"

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        activation: str = "relu",
        *,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.net = mlp([in_dim, *hidden, out_dim], activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
