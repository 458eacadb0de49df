"""NVIL (Mnih & Gregor 2014): the score function with a learned, input-dependent baseline.

Learning signal of particle k: l_k = log p(x, z_k) − log q(z_k|x); its baseline
c + b_ψ(x), c a running (decaying) average of l over steps and b_ψ a small network regressed on
l − c. The φ-gradient (1/K) Σ_k (l_k − c − b_ψ(x)) ∇_φ log q(z_k|x) is unbiased because neither
c (earlier batches only) nor b_ψ(x) depends on z_k.

Pyro's ``TraceGraph_ELBO`` with ``infer={"baseline": {...}}`` does the same for one particle,
but does not fit here: it has no ``differentiable_loss`` (so no compiled step, no
``ELBOModule``), it keeps the decaying average in Pyro's global param store with the shape of
the batch (one average per position in the batch, an error on a short last batch), and it
loops over particles instead of vectorizing them. So NVIL is built on
:class:`~pyrovae.inference.particle_elbo.ParticleELBO`; with K = 1 and the same baseline its
gradient is ``TraceGraph_ELBO``'s up to the mean-zero term −∇_φ log q (tested).

Mnih & Gregor also divide the centred signal by a running standard deviation; that is not done
here: it rescales the φ-gradient by a factor that changes from step to step, so the estimate
would no longer be one of ∇_φ of the ELBO, and Adam's per-parameter scaling already does what the
division was for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.particle_elbo import ParticleELBO
from pyrovae.inference.particles import Particles
from pyrovae.inference.score_function import score_surrogate
from pyrovae.nets.dense import mlp

BASELINE_HIDDEN = (100,)  # Mnih & Gregor: one hidden layer of 100 tanh units
BASELINE_DECAY = 0.9  # the running average's decay per step


class NVILBaseline(nn.Module):
    """c + b_ψ(x): a running average c of the learning signal and an MLP b_ψ: (B, D) → (B,).

    c is kept as a bias-corrected exponential moving average in two buffers (saved with the
    guide): ``total`` ← β·total + (1 − β)·mean l, ``weight`` ← β·weight + (1 − β), c =
    total / weight (0 before the first step). It moves only in training mode and while
    gradients are recorded, in place (the compiled step records the update with the rest).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = BASELINE_HIDDEN,
        activation: str = "tanh",
        decay: float = BASELINE_DECAY,
    ) -> None:
        super().__init__()
        if not 0 <= decay < 1:
            raise PyroVAEError(f"the running average's decay must be in [0, 1), got {decay}")
        self.net = mlp([in_dim, *hidden, 1], activation)
        self.decay = decay
        self.register_buffer("total", torch.zeros(()))
        self.register_buffer("weight", torch.zeros(()))

    def average(self) -> torch.Tensor:
        """c, the running average of the learning signal (a scalar, no gradient)."""
        return torch.where(self.weight > 0, self.total / self.weight.clamp_min(1e-30), 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """b_ψ(x), (B,), from x (B, …) flattened."""
        return self.net(x.reshape(x.shape[0], -1)).squeeze(-1)

    def update(self, signal: torch.Tensor) -> None:
        """One step of the running average towards the mean of ``signal`` (training only)."""
        if not (self.training and torch.is_grad_enabled()):
            return
        with torch.no_grad():
            mean = signal.mean().to(self.total.dtype)
            self.total.mul_(self.decay).add_((1 - self.decay) * mean)
            self.weight.mul_(self.decay).add_(1 - self.decay)


def guide_baseline(guide) -> NVILBaseline:
    """The guide's ``baseline`` (an :class:`NVILBaseline`), or a one-line error."""
    baseline = getattr(guide, "baseline", None)
    if not isinstance(baseline, NVILBaseline):
        raise PyroVAEError(
            "nvil needs the learned baseline network that a guide gets when its run is trained "
            "with --estimator nvil; this guide has none (train with --estimator nvil)"
        )
    return baseline


class NVIL(ParticleELBO):
    """``nvil``: the ELBO by the score function, baseline c + b_ψ(x) (Mnih & Gregor 2014).

    Surrogate per datapoint, averaged over K: log w_k + (l_k − c − b_ψ(x))·log q(z_k) − ½(l_k −
    c − b_ψ(x))², signal and l held constant: θ gets E[∇_θ log p], φ the centred score function,
    ψ the gradient of the squared error of b_ψ(x) as a prediction of l − c. The squared error's
    value is not in the loss (its gradient only). c is updated after it is used.
    """

    description = "ELBO by the score function with NVIL's learned baseline (discrete latents)"

    latent_kinds = frozenset({"continuous", "discrete"})
    detach_latents = True
    needs_baseline_net = True  # the guide gets an NVILBaseline (runs/build.py), trained with φ

    def bound(self, p: Particles) -> torch.Tensor:
        return p.log_w.mean(0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        baseline = guide_baseline(p.guide)
        f = p.log_w.detach()  # (K, B)
        residual = f - baseline.average() - baseline(p.args[0])  # (K, B); b_ψ(x) broadcast
        surrogate = score_surrogate(p, residual) - 0.5 * residual.pow(2).mean(0).sum()
        baseline.update(f)
        return surrogate
