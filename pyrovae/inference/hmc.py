"""Hamiltonian Monte Carlo transitions for many independent chains at once, each chain with its
own step size adapted towards a target acceptance rate (the AIS transitions of
:mod:`pyrovae.inference.ais`).

A chain's state u (…, D) has a log-density log f(u) (…,) and its gradient; every leading index is
an independent chain, so one autograd call on Σ log f gives every chain's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# (log f(u), ∇_u log f(u), aux) for a batch of states u (…, D): shapes (…,), (…, D), and
# tensors of either shape that the caller wants kept for the chains' current states
Density = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]]


class Noise:
    """Where the transitions' randomness comes from: torch's global generator by default
    (``pyrovae.set_seed`` reproduces it). A test replaces it to run chains on given noise."""

    def momentum(self, like: torch.Tensor) -> torch.Tensor:
        """p ~ N(0, I), shaped like the state."""
        return torch.randn_like(like)

    def uniform(self, like: torch.Tensor) -> torch.Tensor:
        """U(0, 1) per chain, shaped like the log-densities (…,)."""
        return torch.rand_like(like)


@dataclass
class StepSize:
    """Per-chain leapfrog step sizes ε (…, 1), adapted after each transition towards
    ``target`` acceptance by a stochastic approximation on log ε:
    log ε ← log ε + r (a − target), a the transition's acceptance probability, r = ``rate``,
    kept within [``low``, ``high``]. At a fixed point E[a] = target. Each transition leaves its
    target invariant at the ε it was given; ε depends on the chain's past acceptances only."""

    value: torch.Tensor
    target: float = 0.65
    rate: float = 0.5
    low: float = 1e-4
    high: float = 1.0

    def update(self, acceptance: torch.Tensor) -> None:
        """Adapt every chain's ε to its acceptance probability ``acceptance`` (…,)."""
        step = self.rate * (acceptance.detach().unsqueeze(-1) - self.target)
        self.value = (self.value * step.exp()).clamp(self.low, self.high)


# what a Density returned at a state: (log f, ∇ log f, aux)
Evaluated = tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]


@dataclass
class Transition:
    """One HMC transition's outcome: the new states, what the density returned there (kept so
    that the next transition need not recompute it) and each chain's acceptance probability
    min(1, exp(H₀ − H₁)) (0 where the proposal's energy is not finite)."""

    state: torch.Tensor
    evaluated: Evaluated
    acceptance: torch.Tensor


def hmc_transition(
    density: Density,
    state: torch.Tensor,
    evaluated: Evaluated,
    step_size: torch.Tensor,
    num_leapfrog: int,
    noise: Noise | None = None,
) -> Transition:
    """One HMC transition leaving f invariant, for every chain: momentum p ~ N(0, I), L leapfrog
    steps of size ε (the chain's own), then Metropolis: accept with probability
    min(1, exp(H₀ − H₁)), H = −log f(u) + ½‖p‖². A proposal whose energy is NaN or infinite
    (a decoder overflowing far out) is rejected.

    ``evaluated`` is ``density(state)``; ``step_size`` is (…, 1).
    """
    noise = noise or Noise()
    log_f, grad, _ = evaluated
    p0 = noise.momentum(state)
    u, g = state, grad
    p = p0 + 0.5 * step_size * g
    for step in range(num_leapfrog):
        u = u + step_size * p
        proposed = density(u)
        g = proposed[1]
        if step < num_leapfrog - 1:
            p = p + step_size * g
    p = p + 0.5 * step_size * g
    h0 = -log_f + 0.5 * (p0**2).sum(-1)
    h1 = -proposed[0] + 0.5 * (p**2).sum(-1)
    log_ratio = torch.nan_to_num(h0 - h1, nan=-torch.inf, posinf=-torch.inf)
    acceptance = log_ratio.clamp(max=0.0).exp()
    accept = noise.uniform(acceptance) < acceptance
    kept = (
        _where(accept, proposed[0], log_f),
        _where(accept, proposed[1], grad),
        tuple(_where(accept, new, old) for new, old in zip(proposed[2], evaluated[2], strict=True)),
    )
    return Transition(_where(accept, u, state), kept, acceptance)


def _where(accept: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for the accepted chains, ``old`` elsewhere (``accept`` (…,) broadcast right)."""
    return torch.where(accept.view(*accept.shape, *[1] * (new.dim() - accept.dim())), new, old)
