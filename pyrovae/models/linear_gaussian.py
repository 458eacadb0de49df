"""Probabilistic PCA: z ~ N(0, I_d), x|z ~ N(Wz + b, σ² I_D) — exact log p(x) and posterior.

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
