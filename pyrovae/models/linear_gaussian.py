"""Probabilistic PCA: z ~ N(0, I_d), x|z ~ N(Wz + b, σ² I_D) — exact log p(x) and posterior;
and its two-layer version z2 → z1 → x with the exact two-site posterior as a guide.

The ground truth for the estimators: every bound can be checked against the closed forms.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.core.modules import LocalPyroModule


class LinearGaussian(LocalPyroModule):
    """p(z) p(x|z) with sites ``"z"``, ``"x"`` in plate ``"data"``; W (D, d), b (D,), σ > 0."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma: float | torch.Tensor) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(b.clone())
        self.log_sigma = nn.Parameter(torch.as_tensor(sigma, dtype=W.dtype).log().clone())

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.W.shape[1]
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(d), x.new_ones(d)).to_event(1)
            z = pyro.sample("z", prior)  # (…, B, d)
            mean = z @ self.W.T + self.b  # (…, B, D)
            pyro.sample("x", dist.Normal(mean, self.sigma).to_event(1), obs=x)
        return z

    def _eye(self, n: int) -> torch.Tensor:
        return torch.eye(n, dtype=self.W.dtype, device=self.W.device)

    def marginal(self) -> dist.MultivariateNormal:
        """p(x) = N(b, C), C = W Wᵀ + σ² I."""
        cov = self.W @ self.W.T + self.sigma**2 * self._eye(self.W.shape[0])
        return dist.MultivariateNormal(self.b, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per datapoint, shape (B,)."""
        return self.marginal().log_prob(x)

    def posterior_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, Σ) with p(z|x) = N(A (x − b), Σ): A = M⁻¹ Wᵀ, Σ = σ² M⁻¹, M = Wᵀ W + σ² I."""
        M = self.W.T @ self.W + self.sigma**2 * self._eye(self.W.shape[1])
        return torch.linalg.solve(M, self.W.T), self.sigma**2 * torch.linalg.inv(M)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """The exact posterior p(z|x), batch shape (B,)."""
        A, cov = self.posterior_map()
        return dist.MultivariateNormal((x - self.b) @ A.T, covariance_matrix=cov)

    def elbo(self, x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Closed-form ELBO per datapoint for q(z|x) = N(loc, diag scale²):

        −(D/2) log(2πσ²) − [‖x − b − W μ‖² + Σ_j s_j² ‖W_{:,j}‖²] / (2σ²)
        − ½ Σ_j (μ_j² + s_j² − 1 − log s_j²).
        """
        D = self.W.shape[0]
        s2 = self.sigma**2
        resid = x - self.b - loc @ self.W.T
        expected_sq = (resid**2).sum(-1) + (scale**2 * (self.W**2).sum(0)).sum(-1)
        recon = -0.5 * D * torch.log(2 * math.pi * s2) - expected_sq / (2 * s2)
        kl = 0.5 * (loc**2 + scale**2 - 1 - torch.log(scale**2)).sum(-1)
        return recon - kl

    @classmethod
    def fit_ml(cls, x: torch.Tensor, latent_dim: int) -> LinearGaussian:
        """Maximum likelihood (Tipping & Bishop 1999): b = mean; σ² = mean of the D − d smallest
        eigenvalues of the sample covariance; W = U_d (Λ_d − σ² I)^{1/2}."""
        b = x.mean(0)
        cov = (x - b).T @ (x - b) / x.shape[0]
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        evals, evecs = evals.flip(0), evecs.flip(1)
        sigma2 = evals[latent_dim:].mean()
        W = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp_min(0).sqrt()
        return cls(W, b, sigma2.sqrt())


class ExactPosteriorGuide(LocalPyroModule):
    """q(z|x) = p(z|x) of a :class:`LinearGaussian` at its current parameters (held fixed).

    With it, log w = log p(x, z) − log p(z|x) = log p(x) for every z: every bound is exact.
    """

    def __init__(self, model: LinearGaussian) -> None:
        super().__init__()
        with torch.no_grad():
            A, cov = model.posterior_map()
            self.register_buffer("A", A.clone())  # (d, D)
            self.register_buffer("b", model.b.detach().clone())
            self.register_buffer("scale_tril", torch.linalg.cholesky(cov))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            loc = (x - self.b) @ self.A.T
            return pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=self.scale_tril))


class HierarchicalLinearGaussian(LocalPyroModule):
    """Two linear-Gaussian layers, z2 → z1 → x — exact log p(x) and posterior:

        z2 ~ N(0, I),  z1 | z2 ~ N(V z2 + c, τ² I),  x | z1 ~ N(W z1 + b, σ² I),

    sites ``"z2"``, ``"z1"``, ``"x"`` (drawn top down) in plate ``"data"``; V (d1, d2), c (d1,),
    W (D, d1), b (D,), τ, σ > 0. The ground truth for estimators on a guide whose sites depend on
    each other: its exact posterior p(z1|x) p(z2|z1) is such a guide.
    """

    def __init__(
        self,
        V: torch.Tensor,
        c: torch.Tensor,
        tau: float | torch.Tensor,
        W: torch.Tensor,
        b: torch.Tensor,
        sigma: float | torch.Tensor,
    ) -> None:
        super().__init__()
        # z1 | z2 is itself probabilistic PCA with latent z2: its marginal and posterior are those
        self.top = LinearGaussian(V, c, tau)
        self.W = nn.Parameter(W.clone())
        self.b = nn.Parameter(b.clone())
        self.log_sigma = nn.Parameter(torch.as_tensor(sigma, dtype=W.dtype).log().clone())

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = self.top
        with pyro.plate("data", x.shape[0]):
            d2 = top.W.shape[1]
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(d2), x.new_ones(d2)).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ top.W.T + top.b, top.sigma).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.W.T + self.b, self.sigma).to_event(1), obs=x)
        return z1

    def marginal(self) -> dist.MultivariateNormal:
        """p(x) = N(W c + b, W S Wᵀ + σ² I), S = V Vᵀ + τ² I the covariance of z1."""
        z1 = self.top.marginal()  # N(c, S)
        cov = self.W @ z1.covariance_matrix @ self.W.T
        eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
        return dist.MultivariateNormal(z1.loc @ self.W.T + self.b, cov + self.sigma**2 * eye)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per datapoint, shape (B,)."""
        return self.marginal().log_prob(x)

    def posterior_maps(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """((A1, m1, Σ1), (A2, m2, Σ2)) with p(z1|x) = N(A1 x + m1, Σ1) and
        p(z2|z1, x) = p(z2|z1) = N(A2 z1 + m2, Σ2) (x depends on z2 only through z1).

        Σ1 = (S⁻¹ + WᵀW/σ²)⁻¹, A1 = Σ1 Wᵀ/σ², m1 = c − A1 (W c + b); (A2, Σ2) is the top
        layer's posterior map (M = VᵀV + τ² I), m2 = −A2 c.
        """
        z1 = self.top.marginal()  # N(c, S)
        s2 = self.sigma**2
        precision = torch.linalg.inv(z1.covariance_matrix) + self.W.T @ self.W / s2
        cov1 = torch.linalg.inv(precision)
        A1 = cov1 @ self.W.T / s2
        m1 = z1.loc - A1 @ (self.W @ z1.loc + self.b)
        A2, cov2 = self.top.posterior_map()
        return (A1, m1, cov1), (A2, -A2 @ self.top.b, cov2)


class HierarchicalLinearGuide(LocalPyroModule):
    """q(z1|x) q(z2|z1) = N(A1 x + m1, L1 L1ᵀ) N(A2 z1 + m2, L2 L2ᵀ), sites ``"z1"``, ``"z2"``
    in plate ``"data"``; every map is a parameter (L1, L2 through their lower triangles).

    :meth:`exact` starts it at a :class:`HierarchicalLinearGaussian`'s exact posterior, where
    log w = log p(x) for every (z1, z2): every bound is exact and the STL / DReG encoder
    gradients are zero for every draw.
    """

    def __init__(
        self,
        A1: torch.Tensor,
        m1: torch.Tensor,
        L1: torch.Tensor,
        A2: torch.Tensor,
        m2: torch.Tensor,
        L2: torch.Tensor,
    ) -> None:
        super().__init__()
        self.A1, self.m1, self.L1 = (nn.Parameter(t.detach().clone()) for t in (A1, m1, L1))
        self.A2, self.m2, self.L2 = (nn.Parameter(t.detach().clone()) for t in (A2, m2, L2))

    @classmethod
    def exact(cls, model: HierarchicalLinearGaussian) -> HierarchicalLinearGuide:
        with torch.no_grad():
            (A1, m1, cov1), (A2, m2, cov2) = model.posterior_maps()
            chol = torch.linalg.cholesky
            return cls(A1, m1, chol(cov1), A2, m2, chol(cov2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            q1 = dist.MultivariateNormal(x @ self.A1.T + self.m1, scale_tril=self.L1.tril())
            z1 = pyro.sample("z1", q1)  # (…, B, d1)
            q2 = dist.MultivariateNormal(z1 @ self.A2.T + self.m2, scale_tril=self.L2.tril())
            return pyro.sample("z2", q2)
