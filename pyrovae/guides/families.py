"""Posterior families: the encoder's raw output ↦ q_φ(z|x), always reparameterized.

A family is an ``nn.Module`` built for a latent dimension d, ``family_cls(d, **options)`` (keyword
options such as ``categories`` that a family does not use are ignored, as priors do). It declares
``num_params``, how many raw encoder outputs one datapoint needs, and maps raw outputs of shape
(B, num_params) to a distribution with batch shape (B,) and event shape (code_dim,): the
continuous families here have ``rsample`` and code_dim = d; the discrete codes of
:mod:`~pyrovae.guides.discrete` (``latent_kind = "discrete"``) do not. A family may hold
trainable parameters of its own (the flow's layers): they are then part of the guide's
``.parameters()`` and of its ``state_dict``.

Arguments are not validated (``validate_args=False``): a NaN from the encoder must surface as a NaN
loss, which training catches, not as a ValueError from deep inside a trace.
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.transforms import AffineAutoregressive
from pyro.nn import AutoRegressiveNN
from torch import nn
from torch.distributions.utils import clamp_probs

from pyrovae.guides.discrete import BernoulliCode, CategoricalCode
from pyrovae.guides.family import Family

MIN_SCALE = 1e-4
"""The floor on every scale σ = softplus(·) + MIN_SCALE of a Gaussian guide."""


def loc_and_scale(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """raw = cat(μ, ρ) ↦ (μ, σ) with σ = softplus(ρ) + MIN_SCALE, each (B, d)."""
    loc, rho = raw.chunk(2, dim=-1)
    return loc, F.softplus(rho) + MIN_SCALE


class DiagonalNormal(Family):
    """``normal``: q_φ(z|x) = N(μ, diag σ²); raw = cat(μ, ρ), σ = softplus(ρ) + 10⁻⁴."""

    description = "diagonal Normal N(μ, diag σ²)"

    def __init__(self, latent_dim: int, **options: Any) -> None:
        super().__init__(latent_dim)
        self.num_params = 2 * latent_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        loc, scale = loc_and_scale(raw)  # (B, d) each
        return dist.Normal(loc, scale, validate_args=False).to_event(1)


class FullCovarianceNormal(Family):
    """``full-covariance``: q_φ(z|x) = N(μ, L Lᵀ), z = μ + L ε, ε ~ N(0, I).

    L is lower-triangular with diagonal softplus(ρ) + 10⁻⁴ (so L Lᵀ is positive definite) and free
    strictly-lower entries. raw = cat(μ (d), ρ (d), the d(d−1)/2 strictly-lower entries in
    row-major order), so ``num_params`` = d + d(d+1)/2.
    """

    description = "Normal with a full covariance L Lᵀ"

    def __init__(self, latent_dim: int, **options: Any) -> None:
        super().__init__(latent_dim)
        d = latent_dim
        self.num_params = d + d * (d + 1) // 2
        rows, cols = torch.tril_indices(d, d, offset=-1)
        # buffers so they follow the module across devices; derived from d, so not checkpointed
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        d = self.latent_dim
        loc, rho, off = raw.split([d, d, d * (d - 1) // 2], dim=-1)
        strictly_lower = raw.new_zeros(*raw.shape[:-1], d, d)  # (B, d, d)
        strictly_lower[..., self.rows, self.cols] = off
        scale_tril = strictly_lower + torch.diag_embed(F.softplus(rho) + MIN_SCALE)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False)


class DiagonalLaplace(Family):
    """``laplace``: q_φ(z|x) = Π_j (1 / 2b_j) exp(−|z_j − μ_j| / b_j); raw = cat(μ, ρ),
    b = softplus(ρ) + 10⁻⁴. Heavier (exponential) tails than the normal guide."""

    description = "diagonal Laplace: heavier tails than the Normal"

    def __init__(self, latent_dim: int, **options: Any) -> None:
        super().__init__(latent_dim)
        self.num_params = 2 * latent_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        loc, scale = loc_and_scale(raw)
        return dist.Laplace(loc, scale, validate_args=False).to_event(1)


class DiagonalStudentT(Family):
    """``student-t``: q_φ(z|x) = Π_j t_ν(z_j; μ_j, s_j), drawn as z_j = μ_j + s_j ε_j / √(c_j / ν)
    with ε_j ~ N(0, 1), c_j ~ χ²_ν; raw = cat(μ, ρ), s = softplus(ρ) + 10⁻⁴.

    The degrees of freedom ν are fixed (default 5: polynomial tails, finite variance
    s² ν / (ν − 2)), not learned: a learned ν would need gradients through the Gamma draw and can
    drift to ν → ∞, where the family is just the normal guide.
    """

    description = "diagonal Student-t with 5 degrees of freedom"

    def __init__(self, latent_dim: int, df: float = 5.0, **options: Any) -> None:
        super().__init__(latent_dim)
        self.num_params = 2 * latent_dim
        self.df = float(df)

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        loc, scale = loc_and_scale(raw)
        return dist.StudentT(self.df, loc, scale, validate_args=False).to_event(1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, df={self.df}"


class _FiniteLogistic(dist.Logistic):
    """Pyro's Logistic with a draw that is always finite.

    Pyro draws z = μ + s logit(u), u ~ U[0, 1); a float32 u is exactly 0 with probability 2⁻²⁴,
    which over a training run (d · B · steps ≈ 10⁸ draws) happens, and gives z = −∞ and a NaN
    loss. Here u is clamped to [ε, 1 − ε] (torch's ``clamp_probs``, ε the dtype's machine epsilon),
    a truncation of the tails beyond |z − μ| ≈ 16 s (mass 2ε ≈ 2·10⁻⁷ in float32).
    """

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        u = clamp_probs(torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device))
        return self.loc + self.scale * torch.logit(u)


class DiagonalLogistic(Family):
    """``logistic``: q_φ(z|x) = Π_j σ(t_j) σ(−t_j) / s_j, t_j = (z_j − μ_j) / s_j (σ the sigmoid);
    z = μ + s logit(u), u ~ U(0, 1); raw = cat(μ, ρ), s = softplus(ρ) + 10⁻⁴."""

    description = "diagonal logistic"

    def __init__(self, latent_dim: int, **options: Any) -> None:
        super().__init__(latent_dim)
        self.num_params = 2 * latent_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        loc, scale = loc_and_scale(raw)
        return _FiniteLogistic(loc, scale, validate_args=False).to_event(1)


class InverseAutoregressiveFlow(Family):
    """``flow``: z = f_L ∘ … ∘ f_1(z₀), z₀ ~ N(μ_φ(x), diag σ_φ(x)²), raw = cat(μ, ρ) as ``normal``.

    Each layer is an inverse autoregressive flow step (Kingma et al. 2016),
    f_l(u) = m_l(u) + exp(s_l(u)) ⊙ u, with (m_l, s_l)_j depending on u only through the variables
    before j in the layer's order (a MADE network), so the Jacobian is triangular and

        log q_φ(z|x) = log N(z₀; μ, diag σ²) − Σ_l Σ_j s_l(u_{l−1})_j,   u_0 = z₀, u_L = z.

    The layers' weights are global (shared by every x), trainable, and in ``.parameters()``. The
    variable order alternates (identity, reversed, …) between layers. Each layer's output layer
    starts at zero, so the flow starts as the identity (the ``normal`` guide). Scoring a z the
    flow itself drew is cheap (Pyro caches the inverse); scoring any other z inverts each layer
    sequentially, d passes.
    """

    description = "diagonal Normal through 2 inverse autoregressive flow layers"

    def __init__(
        self,
        latent_dim: int,
        num_layers: int = 2,
        hidden: tuple[int, ...] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(latent_dim)
        d = latent_dim
        self.num_params = 2 * d
        hidden = list(hidden) if hidden is not None else [3 * d + 1]
        layers = []
        for layer in range(num_layers):
            order = torch.arange(d) if layer % 2 == 0 else torch.arange(d).flip(0)
            arn = AutoRegressiveNN(d, hidden, permutation=order)
            with torch.no_grad():
                arn.layers[-1].weight.zero_()
                arn.layers[-1].bias.zero_()
            layers.append(AffineAutoregressive(arn))
        self.layers = nn.ModuleList(layers)

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        loc, scale = loc_and_scale(raw)
        base = dist.Normal(loc, scale, validate_args=False).to_event(1)
        return dist.TransformedDistribution(base, list(self.layers), validate_args=False)


class PointMass(Family):
    """``delta``: q_φ(z|x) = δ(z − μ_φ(x)), raw = μ (``num_params`` = d); log q(z) = 0 at z = μ.

    The deterministic autoencoder: z = μ_φ(x) keeps its path to φ. Its KL to any prior is infinite,
    so it is meant with the latent site scaled by β = 0 (Pyro's convention, as in Trace_ELBO's
    log q = 0, drops the −∞ entropy and leaves −log p(μ) as its "KL").
    """

    description = "point mass at the encoder's output: the autoencoder (use with β = 0)"
    has_density = False

    def __init__(self, latent_dim: int, **options: Any) -> None:
        super().__init__(latent_dim)
        self.num_params = latent_dim

    def forward(self, raw: torch.Tensor) -> dist.Distribution:
        return dist.Delta(raw, event_dim=1, validate_args=False)


GUIDES: dict[str, type[Family]] = {
    "normal": DiagonalNormal,
    "full-covariance": FullCovarianceNormal,
    "laplace": DiagonalLaplace,
    "student-t": DiagonalStudentT,
    "logistic": DiagonalLogistic,
    "flow": InverseAutoregressiveFlow,
    "delta": PointMass,
    "categorical": CategoricalCode,
    "bernoulli": BernoulliCode,
}
"""Guide families by name (``--guide``): name ↦ the family of q_φ(z|x) an encoder parameterizes."""
