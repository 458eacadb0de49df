"""What a conditional model conditions on: a context c made from the batch, and the pixels
its likelihood covers.

A condition is a module with ``size`` (the length of c), ``context(x, y)`` ↦ c (…, B, size) and
``predicted`` (a (D,) bool mask of the pixels p_θ(x|z, c) is over, or None for all of them).
The model's decoder reads [z, c], the guide's encoder [x, c], a conditional prior p(z|c) reads c.

- :class:`~pyrovae.core.labels.LabelCondition`: c = onehot(y), the conditional VAE of a class
  label.
- :class:`ObservedPixels`: structured output prediction (Sohn, Lee & Yan 2015): c = x_obs, the
  values of the observed pixels, and the likelihood covers the missing ones only:
  p_θ(x_miss|z, x_obs). Optionally c also holds a deterministic baseline network's prediction
  of x_miss from x_obs (the paper's baseline as an input of the prior and recognition nets).

Masks (``MASKS``): ``quadrants:N`` observes N of the image's four quadrants, in the order
bottom-left, top-left, top-right, as Pyro's CVAE tutorial does: 1 observes the bottom-left, 2
the left half, 3 all but the bottom-right; an odd side splits at ⌊H/2⌋, ⌊W/2⌋.
``mask:FILE`` reads a boolean .npy of shape (H, W) or (C, H, W), True where observed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import joined
from pyrovae.core.registry import lookup


class ObservedPixels(nn.Module):
    """c = x_obs (the ``observed`` pixels' values, in pixel order), or [x_obs, ŷ] with a
    ``baseline``: a deterministic network's prediction ŷ = E[x|x_obs] (its likelihood's mean)
    for every pixel, computed without gradient (the baseline is trained first, then frozen).
    The likelihood covers the pixels not observed: ``predicted`` = ¬observed."""

    given, target = "x_obs", "x_miss"  # what log p(target|given) is of

    def __init__(self, observed: torch.Tensor, baseline: nn.Module | None = None) -> None:
        super().__init__()
        observed = observed.reshape(-1).bool()
        if bool(observed.all()) or not bool(observed.any()):
            raise PyroVAEError(
                "the mask must observe some pixels and leave some to predict; it "
                f"observes {int(observed.sum())} of {observed.numel()}"
            )
        self.register_buffer("observed", observed)  # (D,)
        self.register_buffer("index", observed.nonzero().squeeze(-1))  # (D_obs,)
        self.baseline = baseline
        if baseline is not None:
            baseline.requires_grad_(False)

    @property
    def predicted(self) -> torch.Tensor:
        """The pixels the likelihood covers, (D,) bool."""
        return ~self.observed

    @property
    def num_observed(self) -> int:
        return int(self.index.numel())

    @property
    def size(self) -> int:
        extra = self.observed.numel() if self.baseline is not None else 0
        return self.num_observed + extra

    def observed_values(self, x: torch.Tensor) -> torch.Tensor:
        """x_obs = x[…, observed], (…, B, D_obs)."""
        return x.index_select(-1, self.index)

    def context(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x_obs, or [x_obs, ŷ(x_obs)] with a baseline: (B, size)."""
        c = self.observed_values(x)
        if self.baseline is None:
            return c
        with torch.no_grad():
            guess = self.baseline.predict(c)  # (B, D)
        return joined(c, guess)

    def extra_repr(self) -> str:
        return f"observed={self.num_observed}/{self.observed.numel()}"


def masked(likelihood: dist.Distribution, pixels: torch.Tensor | None) -> dist.Distribution:
    """p_θ(x|·) over ``pixels`` (a (D,) bool mask) only: Σ_{i: pixels_i} log p(x_i|·). The other
    pixels' terms are zero and so is their gradient. ``likelihood`` is one event of D
    independent pixels (``base.to_event(1)``); None keeps every pixel."""
    if pixels is None:
        return likelihood
    base = likelihood.base_dist  # batch (…, B, D)
    return base.mask(pixels).to_event(1)


def quadrants(count: str, shape: Sequence[int]) -> torch.Tensor:
    """The observed-pixel mask (C, H, W) of ``count`` ∈ {1, 2, 3} quadrants: bottom-left, then
    top-left, then top-right (the rows split at ⌊H/2⌋, the columns at ⌊W/2⌋)."""
    if count not in {"1", "2", "3"}:
        raise PyroVAEError(f"quadrants:N observes 1, 2 or 3 quadrants, got {count!r}")
    c, h, w = shape
    if h < 2 or w < 2:
        raise PyroVAEError(f"quadrants need images of at least 2×2 pixels, got {h}×{w}")
    top, left = h // 2, w // 2
    mask = torch.zeros(c, h, w, dtype=torch.bool, device="cpu")  # a value, even on meta
    corners = [  # (rows, columns): bottom-left, top-left, top-right
        (slice(top, h), slice(0, left)),
        (slice(0, top), slice(0, left)),
        (slice(0, top), slice(left, w)),
    ]
    for rows, cols in corners[: int(count)]:
        mask[:, rows, cols] = True
    return mask


def mask_file(path: str, shape: Sequence[int]) -> torch.Tensor:
    """The observed-pixel mask read from a boolean .npy file of shape (H, W) (every channel)
    or (C, H, W), True where observed."""
    c, h, w = shape
    try:
        array = np.load(Path(path), allow_pickle=False)
    except FileNotFoundError:
        raise PyroVAEError(f"mask file {path} does not exist") from None
    except (OSError, ValueError) as e:
        raise PyroVAEError(f"mask file {path} is not a readable .npy array ({e})") from None
    if array.dtype != np.bool_:
        raise PyroVAEError(f"mask file {path} must hold booleans, it holds {array.dtype}")
    if array.shape not in {(h, w), (c, h, w)}:
        raise PyroVAEError(
            f"mask file {path} has shape {array.shape}; the images need ({h}, {w}) or "
            f"({c}, {h}, {w})"
        )
    return torch.from_numpy(array.copy()).expand(c, h, w)


MASKS: dict[str, Callable[[str, Sequence[int]], torch.Tensor]] = {
    "quadrants": quadrants,
    "mask": mask_file,
}


def parse_mask(spec: str) -> tuple[str, str]:
    """``KIND:ARGUMENT`` ↦ (kind, argument), the kind checked against ``MASKS``."""
    kind, sep, argument = spec.partition(":")
    if not sep or not argument:
        raise PyroVAEError(
            f"--condition-on needs KIND:ARGUMENT (quadrants:1, mask:FILE.npy), got {spec!r}"
        )
    lookup(MASKS, kind, "mask kind")
    return kind, argument


def observed_mask(spec: str, shape: Sequence[int]) -> torch.Tensor:
    """The (C, H, W) bool mask of observed pixels that ``spec`` (``quadrants:N``, ``mask:FILE``)
    describes for images of ``shape``."""
    kind, argument = parse_mask(spec)
    return MASKS[kind](argument, tuple(shape))
