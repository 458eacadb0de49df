"""The discretized logistic: a distribution over the 256 levels of an 8-bit value.

Salimans et al. (2017, PixelCNN++) and Kingma et al. (2016) define it on [−1, 1] with bin width
2/255; here the values are the intensities x ∈ {0, 1/255, …, 1} that the data module produces,
bin width 1/255, half-width δ = 1/510. The probabilities are the same under x' = 2x − 1,
μ' = 2μ − 1, s' = 2s, since (x' ± 1/255 − μ')/s' = (x ± δ − μ)/s:

    P(x) = σ((x + δ − μ)/s) − σ((x − δ − μ)/s)      for 0 < x < 1,
    P(0) = σ((δ − μ)/s),   P(1) = 1 − σ((1 − δ − μ)/s)   (the edge bins take the tails),

so the 256 probabilities sum to 1 for every μ ∈ ℝ, s > 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all, clamp_probs

from pyrovae.data.validate import LEVELS

MEAN_CHUNK = 32  # thresholds per step when the mean is summed (bounded memory)


def log_expm1(t: torch.Tensor) -> torch.Tensor:
    """log(eᵗ − 1) for t > 0, as t + log(1 − e⁻ᵗ): finite where eᵗ would overflow."""
    return t + torch.log(-torch.expm1(-t))


class DiscretizedLogistic(TorchDistribution):
    """x ∈ {0, 1/L, …, 1} (L = ``levels`` = 255) with the probabilities in the module docstring;
    ``loc`` μ and ``scale`` s broadcast to the batch shape; each value is one draw.

    log P is computed without subtracting probabilities: with a = (x + δ − μ)/s and
    b = (x − δ − μ)/s, σ(a) − σ(b) = eᵇ(e^{a−b} − 1) / ((1 + eᵃ)(1 + eᵇ)), so
    log P = log(e^{2δ/s} − 1) − softplus(−b) − softplus(a), exact in the tails too.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        levels: int = LEVELS,
        validate_args: bool | None = None,
    ) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self.levels = levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.levels = self.levels
        super(DiscretizedLogistic, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        half = 0.5 / self.levels  # δ
        a = (value + half - self.loc) / self.scale
        b = (value - half - self.loc) / self.scale
        interior = log_expm1(2 * half / self.scale) - F.softplus(-b) - F.softplus(a)
        lowest = -F.softplus(-a)  # log σ(a): P(x ≤ δ)
        highest = -F.softplus(b)  # log(1 − σ(b)): P(x > 1 − δ)
        return torch.where(value < half, lowest, torch.where(value > 1 - half, highest, interior))

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = (1/L) Σ_{k=1..L} P(x ≥ k/L) = (1/L) Σ_k σ((μ − k/L + δ)/s)."""
        half = 0.5 / self.levels
        thresholds = torch.arange(1, self.levels + 1, dtype=self.loc.dtype, device=self.loc.device)
        thresholds = thresholds / self.levels - half  # (L,): the lower edges of bins 1 … L
        total = torch.zeros_like(self.loc)
        for t in thresholds.split(MEAN_CHUNK):
            total = total + torch.sigmoid((self.loc[..., None] - t) / self.scale[..., None]).sum(-1)
        return total / self.levels

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        """y = μ + s·logit(u), u ~ U(0, 1), rounded to the nearest level and clipped to [0, 1]."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = clamp_probs(torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device))
            y = self.loc.expand(shape) + self.scale.expand(shape) * torch.logit(u)
            return (y * self.levels).round().clamp(0, self.levels) / self.levels
