"""The annealing path of AIS and one run along it, every datapoint and chain at once.

From a start distribution q₀(z) (the guide q(z|x), or the prior p(z)) to the posterior
p(z|x) ∝ π(z) = p(z) p_θ(x|z) through the geometric bridges

    f_β(z) = q₀(z)^{1−β} π(z)^β,   0 = β₀ < β₁ < … < β_T = 1 (a sigmoid schedule),

each chain's weight being

    log ŵ = Σ_{t=1..T} (β_t − β_{t−1}) [log π(z_{t−1}) − log q₀(z_{t−1})],

z₀ ~ q₀, z_t an HMC transition from z_{t−1} leaving f_{β_t} invariant. A site whose
distribution is a transformed one (the ``flow`` guide, z = T(u), u ~ base) is annealed in its
base coordinates u: there f_β(u) = base(u)^{1−β} [π(T(u)) |det ∂T/∂u|]^β, the same path pulled
back, with no inverse of T to run. The estimators built on it are in
:mod:`pyrovae.inference.ais`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro import poutine
from pyro.distributions import Delta
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch.distributions import Distribution, TransformedDistribution
from torch.distributions.utils import _sum_rightmost

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import get_rng_state, set_rng_state
from pyrovae.inference.hmc import Noise, StepSize, hmc_transition
from pyrovae.inference.particles import _sum_log_probs, vectorized

STEP_SIZE = 0.1  # every pilot chain's first leapfrog step size, adapted from there
SHARPNESS = 4.0  # the sigmoid schedule's δ


def sigmoid_schedule(steps: int, sharpness: float = SHARPNESS) -> torch.Tensor:
    """β₀ = 0 < … < β_T = 1 (T = ``steps``), float64: β̃_t = σ(δ(2t/T − 1)),
    β_t = (β̃_t − β̃_0)/(β̃_T − β̃_0), δ = ``sharpness`` (Grosse et al. 2015). Dense near both
    ends, where the bridges change fastest."""
    if steps < 1:
        raise PyroVAEError(f"AIS needs at least 1 step, got {steps}")
    s = torch.sigmoid(torch.linspace(-sharpness, sharpness, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def _innermost(fn: Distribution) -> Distribution:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


class _Coordinates(Messenger):
    """At each latent sample site: the value from the chain's coordinates u (or a fresh draw of
    them when ``values`` is None), through the site's transforms when its distribution is a
    transformed one; adds up log q₀(u) (the site's density, or its base's) and log |det ∂z/∂u|.

    ``inverse``: ``values`` are z's, and u is recovered by inverting the transforms.
    """

    def __init__(self, values: dict[str, torch.Tensor] | None = None, inverse: bool = False):
        super().__init__()
        self.values, self.inverse = values, inverse
        self.u: dict[str, torch.Tensor] = {}
        self.z: dict[str, torch.Tensor] = {}
        self.log_q0: torch.Tensor | float = 0.0
        self.log_det: torch.Tensor | float = 0.0

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        if msg["is_observed"] or site_is_subsample(msg):
            return
        fn, name = msg["fn"], msg["name"]
        inner = _innermost(fn)
        if fn.support.is_discrete or inner.support.is_discrete:
            raise PyroVAEError(
                f"AIS anneals continuous latents; site {name!r} is discrete "
                f"({type(inner).__name__}): use importance sampling (--method is)"
            )
        if isinstance(inner, Delta):
            raise PyroVAEError(
                f"site {name!r} is a point mass, which has no density to anneal from: "
                "start AIS from the prior (--ais-from prior)"
            )
        base, transforms = (
            (fn.base_dist, fn.transforms) if isinstance(fn, TransformedDistribution) else (fn, [])
        )
        event_dim = len(fn.event_shape)
        if self.values is None:
            u = base.sample()
        elif self.inverse:
            u = self.values[name]
            for t in reversed(transforms):
                u = t.inv(u)
        else:
            u = self.values[name]
        z = u
        for t in transforms:
            out = t(z)
            ldj = t.log_abs_det_jacobian(z, out)
            self.log_det = self.log_det + _sum_rightmost(ldj, event_dim - t.codomain.event_dim)
            z = out
        self.log_q0 = self.log_q0 + base.log_prob(u)
        self.u[name], self.z[name] = u, z
        msg["value"] = z


@dataclass
class Parts:
    """log q₀(u), log π(u) per chain (C, B) and their gradients in u (C, B, D)."""

    log_q0: torch.Tensor
    log_pi: torch.Tensor
    grad_q0: torch.Tensor
    grad_pi: torch.Tensor

    def at(self, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        """log f_β = (1 − β) log q₀ + β log π and its gradient."""
        return (
            (1 - beta) * self.log_q0 + beta * self.log_pi,
            (1 - beta) * self.grad_q0 + beta * self.grad_pi,
        )

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.log_q0, self.log_pi, self.grad_q0, self.grad_pi


START = ("guide", "prior")


@dataclass
class AnnealingPath:
    """The path from q₀ to p(z|x) for a batch of datapoints ``args`` = (x,) or (x, y), with
    ``chains`` chains each: coordinates u (C, B, D), the latent sites' coordinates side by
    side in the start distribution's site order (bottom first for the guide).

    ``start``: ``"guide"`` (q₀ = q(z|x), all its sites) or ``"prior"`` (q₀ = p(z), the model's
    own latent sites; every guide, the point mass included, then works).
    """

    model: Any
    guide: Any
    args: tuple
    chains: int
    start: str = "guide"
    sites: dict[str, int] = field(default_factory=dict)  # name → its size in u

    def __post_init__(self) -> None:
        if self.start not in START:
            raise PyroVAEError(f"unknown AIS start {self.start!r}: one of {', '.join(START)}")

    def _run_start(self, coords: _Coordinates) -> tuple[_Coordinates, poutine.Trace | None]:
        """Run q₀'s program under ``coords``: the guide, or the model (whose trace then also
        holds x's density)."""
        program = self.guide if self.start == "guide" else self.model
        with coords:
            trace = poutine.trace(vectorized(program, self.chains)).get_trace(*self.args)
        return coords, trace

    def _flat(self, by_site: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.sites:
            self.sites = {name: v.shape[-1] for name, v in by_site.items()}
        return torch.cat([by_site[name] for name in self.sites], dim=-1)

    def _split(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.sites:  # learn the sites from a draw that leaves every random stream as is
            state = get_rng_state()
            self.draw()
            set_rng_state(state)
        return dict(zip(self.sites, u.split(list(self.sites.values()), dim=-1), strict=True))

    def draw(self) -> torch.Tensor:
        """u ~ q₀, (C, B, D)."""
        coords, _ = self._run_start(_Coordinates())
        return self._flat({k: v.detach() for k, v in coords.u.items()})

    def from_latents(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """The coordinates u of given latents z (each (B, d) or (C, B, d)), as (C, B, D)."""
        z = {k: v.expand(self.chains, *v.shape[-2:]) for k, v in z.items()}
        coords, _ = self._run_start(_Coordinates(z, inverse=True))
        return self._flat({k: v.detach() for k, v in coords.u.items()})

    def latents(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """The latents z(u) by site, each (C, B, d)."""
        coords, _ = self._run_start(_Coordinates(self._split(u)))
        return coords.z

    def log_densities(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log q₀(u), log π(u)), each (C, B): π = p(z, x) |det ∂z/∂u| at z = z(u)."""
        coords, trace = self._run_start(_Coordinates(self._split(u)))
        if self.start == "guide":
            conditioned = poutine.condition(vectorized(self.model, self.chains), data=coords.z)
            trace = poutine.trace(conditioned).get_trace(*self.args)
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        log_p = _sum_log_probs(trace, self.chains)
        return _as_tensor(coords.log_q0, u), log_p + coords.log_det

    def parts(self, u: torch.Tensor) -> Parts:
        """log q₀, log π at u and their gradients in u (two backward passes, one graph)."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            log_q0, log_pi = self.log_densities(u)
            grad_q0 = _grad(log_q0, u, retain=True)
            grad_pi = _grad(log_pi, u, retain=False)
        return Parts(log_q0.detach(), log_pi.detach(), grad_q0, grad_pi)


def _as_tensor(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else like.new_zeros(like.shape[:-1])


def _grad(out: torch.Tensor, u: torch.Tensor, retain: bool) -> torch.Tensor:
    if not out.requires_grad:  # q₀ does not depend on u (cannot happen for a density)
        return torch.zeros_like(u)
    (g,) = torch.autograd.grad(out.sum(), u, retain_graph=retain)
    return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class Annealed:
    """One annealing run: log ŵ per chain (C, B), the last states, each chain's mean
    acceptance probability over the transitions (C, B), and ``schedule`` (T − 1, B): the step
    size each transition used, per datapoint (the geometric mean over chains where they
    adapted their own)."""

    log_w: torch.Tensor
    state: torch.Tensor
    acceptance: torch.Tensor
    schedule: torch.Tensor


def anneal(
    parts: Callable[[torch.Tensor], Parts],
    state: torch.Tensor,
    betas: torch.Tensor,
    num_leapfrog: int,
    step_size: float | torch.Tensor = STEP_SIZE,
    noise: Noise | None = None,
    on_transition: Callable[[], None] | None = None,
) -> Annealed:
    """Anneal the chains at ``state`` (C, B, D) along ``betas`` (β₀ … β_T, in the order
    walked): log ŵ += (β_t − β_{t−1}) [log π − log q₀](z_{t−1}), then an HMC transition of
    f_{β_t} for t < T (the last one would not change the weight). ``betas`` from 1 down to 0
    is reverse AIS: exp(log ŵ) then estimates 1/p(x) from an exact posterior sample.

    ``step_size``: a float starts every chain there and adapts each chain's own
    (:class:`~pyrovae.inference.hmc.StepSize`) — a pilot run: a step size that follows the
    chain's own acceptances depends on its state, so the transitions no longer leave f_β
    invariant and the weights are biased (on probabilistic PCA, +0.10 ± 0.035 nats above the
    exact log p(x) at T = 300). A (T − 1, B) tensor (a pilot's ``schedule``) fixes every
    transition's step size per datapoint in advance, which keeps AIS exact.
    """
    current = parts(state)
    log_w = torch.zeros_like(current.log_q0, dtype=torch.float64)
    fixed = isinstance(step_size, torch.Tensor)
    eps = None if fixed else StepSize(state.new_full((*state.shape[:-1], 1), step_size))
    accepted = torch.zeros_like(log_w)
    used = []
    transitions = len(betas) - 2
    for t in range(1, len(betas)):
        log_w += (betas[t] - betas[t - 1]).item() * (current.log_pi - current.log_q0).double()
        if t == len(betas) - 1:
            break
        beta = betas[t].item()

        def density(u, beta=beta):
            evaluated = parts(u)
            return (*evaluated.at(beta), evaluated.tensors())

        size = step_size[t - 1].to(state)[None, :, None] if fixed else eps.value
        evaluated = (*current.at(beta), current.tensors())
        step = hmc_transition(density, state, evaluated, size, num_leapfrog, noise)
        state, current = step.state, Parts(*step.evaluated[2])
        used.append(size.log().mean(0).squeeze(-1).exp())
        if not fixed:
            eps.update(step.acceptance)
        accepted += step.acceptance.double()
        if on_transition is not None:
            on_transition()
    schedule = torch.stack(used) if used else state.new_empty(0, state.shape[1])
    return Annealed(log_w, state, accepted / max(transitions, 1), schedule)
