"""Score-function (log-derivative trick, REINFORCE) gradients: no reparameterization.

∇_φ E_q[f(z)] = E_q[(f(z) − b) ∇_φ log q_φ(z)], unbiased for any b independent of z.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.inference.kinds import CONTINUOUS, DISCRETE
from pyrovae.inference.particle_elbo import ParticleELBO
from pyrovae.inference.particles import Particles


def leave_one_out(f: torch.Tensor) -> torch.Tensor:
    """b_k = mean of the other K − 1 particles' f (independent of z_k, so still unbiased)."""
    k = f.shape[0]
    if k < 2:
        raise PyroVAEError("the leave-one-out baseline needs --num-particles of at least 2")
    return (f.sum(0, keepdim=True) - f) / (k - 1)


BASELINES: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "none": None,
    "leave-one-out": leave_one_out,
}


class ScoreFunctionELBO(ParticleELBO):
    """``score-function``: the ELBO L^A with z_k sampled without a path to φ.

    Surrogate per datapoint, averaged over K: log p(x, z) − log q(z) + (f − b)·log q(z) with
    f = log p(x, z) − log q(z) held constant: its θ-gradient is E[∇_θ log p], its φ-gradient
    E[(f − b) ∇_φ log q] − E[∇_φ log q] (the last term has mean zero).
    """

    description = "ELBO by the log-derivative trick, no reparameterization: high variance"

    name = "score-function"
    detach_latents = True
    latent_kinds = frozenset({CONTINUOUS, DISCRETE})  # no path through z is needed

    def __init__(self, num_particles: int = 1, baseline: str = "none", **kwargs) -> None:
        super().__init__(num_particles=num_particles, **kwargs)
        if baseline not in BASELINES:
            raise PyroVAEError(f"unknown baseline {baseline!r}; choose one of: none, leave-one-out")
        if BASELINES[baseline] is not None and num_particles < 2:
            raise PyroVAEError(f"the {baseline} baseline needs --num-particles of at least 2")
        self.baseline = BASELINES[baseline]

    def bound(self, p: Particles) -> torch.Tensor:
        return p.log_w.mean(0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        f = p.log_w.detach()  # (K, B)
        return score_surrogate(p, f - self.baseline(f) if self.baseline is not None else f)


def score_surrogate(p: Particles, signal: torch.Tensor) -> torch.Tensor:
    """Σ_b (1/K) Σ_k [log w_k + s_k log q(z_k)] for a learning signal s (K, B) held constant and
    z_k without a path to φ: θ-gradient Σ (1/K) Σ_k ∇_θ log p(x, z_k), φ-gradient
    Σ (1/K) Σ_k (s_k − 1) ∇_φ log q(z_k) (the −1 term has mean zero)."""
    return (p.log_w + signal.detach() * p.log_q).mean(0).sum()


def _reparam_surrogate(f, phis, eps, baseline):
    return f(phis + eps)


def _score_surrogate(f, phis, eps, baseline):
    x = (phis + eps).detach()
    return (f(x) - baseline) * torch.distributions.Normal(phis, 1.0).log_prob(x)


GRADIENT_METHODS = {"reparam": _reparam_surrogate, "score": _score_surrogate}


def gaussian_mean_gradients(
    f: Callable[[torch.Tensor], torch.Tensor],
    phi: float,
    num_samples: int,
    method: str,
    baseline: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``num_samples`` single-sample estimates of d/dφ E_{x~N(φ,1)}[f(x)], one per sample.

    ``method="score"``: (f(x) − b)(x − φ)   (∇_φ log N(x; φ, 1) = x − φ);
    ``method="reparam"``: f'(φ + ε), x = φ + ε. Each estimate has its own copy of φ, so one
    backward pass gives all of them. For f = x²: means 2φ; variances φ⁴ + 14φ² + 15 and 4.
    """
    surrogate_fn = lookup(GRADIENT_METHODS, method, "gradient method")
    phis = torch.full((num_samples,), float(phi), dtype=torch.float64, requires_grad=True)
    eps = torch.randn(num_samples, dtype=torch.float64, generator=generator)
    (grads,) = torch.autograd.grad(surrogate_fn(f, phis, eps, baseline).sum(), phis)
    return grads
