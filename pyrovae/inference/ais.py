"""Annealed importance sampling (Neal 2001) and bidirectional Monte Carlo (Grosse, Ghahramani &
Adams 2015) for log p(x) of a trained model, every datapoint and chain at once.

The path runs from a start distribution q₀(z) (the guide q(z|x), or the prior p(z)) to the
posterior p(z|x) ∝ π(z) = p(z) p_θ(x|z) through the geometric bridges

    f_β(z) = q₀(z)^{1−β} π(z)^β,   0 = β₀ < β₁ < … < β_T = 1 (a sigmoid schedule),

and each chain's weight is

    log ŵ = Σ_{t=1..T} (β_t − β_{t−1}) [log π(z_{t−1}) − log q₀(z_{t−1})],

z₀ ~ q₀, z_t an HMC transition from z_{t−1} leaving f_{β_t} invariant. E[ŵ] = p(x), so
log p̂(x) = log (1/C) Σ_c ŵ_c over C chains is a stochastic lower bound of log p(x). With T = 1 it
is importance sampling with K = C. A site whose distribution is a transformed one (the ``flow``
guide, z = T(u), u ~ base) is annealed in its base coordinates u: there f_β(u) =
base(u)^{1−β} [π(T(u)) |det ∂T/∂u|]^β, the same path pulled back, with no inverse of T to run.

BDMC simulates (z, x) from the model: forward AIS on x gives a stochastic lower bound and reverse
AIS, started at that z (an exact posterior sample) and annealed from β = 1 to 0, an estimate of
1/p(x) whose log, negated, is a stochastic upper bound. Their gap bounds the error of both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro import poutine
from pyro.distributions import Delta
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch.distributions import Distribution, TransformedDistribution
from torch.distributions.utils import _sum_rightmost
from tqdm import tqdm

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.memory import available_bytes, format_bytes
from pyrovae.core.runtime import get_rng_state, seeded, set_rng_state
from pyrovae.inference.evaluate import batch_args, bits_per_dim
from pyrovae.inference.hmc import Noise, StepSize, hmc_transition
from pyrovae.inference.particles import _sum_log_probs, parameters_detached, vectorized

EVAL_SEED = 4321
BATCH_SIZE = 100  # datapoints annealed together: C × B chains at a time
STEP_SIZE = 0.1  # every pilot chain's first leapfrog step size, adapted from there
PILOT_CHAINS = 4  # chains of the pilot run that sets the step sizes
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


def _log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def _mc_variance(log_w: torch.Tensor) -> torch.Tensor:
    """Var[log (1/C) Σ ŵ_c] ≈ 1/ESS − 1/C by the delta method, ESS = (Σŵ)²/Σŵ² (B,)."""
    ess = torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0))
    return (1 / ess - 1 / log_w.shape[0]).clamp_min(0)


@contextmanager
def _frozen(model, guide):
    """Evaluation mode, parameters cut from the graph (gradients are in z only)."""
    modes = model.training, guide.training
    model.eval()
    guide.eval()
    try:
        with parameters_detached((model, guide)):
            yield
    finally:
        model.train(modes[0])
        guide.train(modes[1])


@dataclass
class Settings:
    """AIS's settings: T annealing steps (T − 1 HMC transitions of L leapfrog steps each),
    C chains per datapoint, the start distribution, datapoints per batch, the first step size
    and the pilot's chains (see :func:`anneal`)."""

    steps: int = 100
    chains: int = 16
    leapfrog: int = 10
    start: str = "guide"
    batch_size: int = BATCH_SIZE
    step_size: float = STEP_SIZE
    pilot_chains: int = PILOT_CHAINS

    def check(self) -> None:
        for name, value in (
            ("--ais-steps", self.steps),
            ("--chains", self.chains),
            ("--leapfrog", self.leapfrog),
            ("pilot_chains", self.pilot_chains),
            ("batch_size", self.batch_size),
        ):
            if value < 1:
                raise PyroVAEError(f"{name} must be at least 1, got {value}")
        if not self.step_size > 0:
            raise PyroVAEError(f"the first step size must be positive, got {self.step_size}")
        if self.start not in START:
            raise PyroVAEError(f"unknown AIS start {self.start!r}: one of {', '.join(START)}")

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`ais_log_marginal`, :func:`bdmc`, :func:`ais_cost`."""
        return {
            "steps": self.steps,
            "chains": self.chains,
            "leapfrog": self.leapfrog,
            "start": self.start,
            "batch_size": self.batch_size,
        }

    def transitions(self, num_data: int, directions: int = 1) -> int:
        """HMC transitions of the whole run per chain, the pilot's included."""
        batches = -(-num_data // self.batch_size)
        return batches * max(self.steps - 1, 0) * (1 + directions)

    def pilot(self, model, guide, args: tuple, betas: torch.Tensor, on) -> torch.Tensor:
        """The per-datapoint step sizes (T − 1, B) of a pilot run of ``pilot_chains`` chains,
        each adapting its own; the run itself then uses them fixed."""
        path = AnnealingPath(model, guide, args, min(self.pilot_chains, self.chains), self.start)
        return anneal(
            path.parts, path.draw(), betas, self.leapfrog, self.step_size, None, on
        ).schedule


def _bar(total: int, progress: bool, what: str) -> tqdm:
    return tqdm(total=total, disable=not progress, desc=what, unit="transition")


def ais_log_marginal(
    model,
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    steps: int = 100,
    chains: int = 16,
    leapfrog: int = 10,
    start: str = "guide",
    batch_size: int = BATCH_SIZE,
    step_size: float = STEP_SIZE,
    pilot_chains: int = PILOT_CHAINS,
    seed: int = EVAL_SEED,
    progress: bool = False,
) -> dict[str, Any]:
    """log p(x) per datapoint by AIS: log p̂(x_i) = log (1/C) Σ_c ŵ_ic (a stochastic lower
    bound), with T = ``steps`` annealing steps, C = ``chains``, L = ``leapfrog`` (module
    docstring), after a pilot run of ``pilot_chains`` chains that sets each datapoint's step
    sizes. Labels ``y`` go to a conditional model and guide (then it is log p(x|y)).

    Returns ``log_px`` (mean over datapoints), ``bits_per_dim``, ``stderr`` (over datapoints),
    ``mc_stderr`` (of the mean, from each datapoint's Monte-Carlo variance over chains,
    1/ESS − 1/C by the delta method), ``per_datapoint`` and ``per_datapoint_mc_stderr`` (n,)
    float64, ``acceptance`` (mean acceptance probability) and ``step_size`` (mean step size of
    the last transition), and the settings.
    """
    settings = Settings(steps, chains, leapfrog, start, batch_size, step_size, pilot_chains)
    settings.check()
    betas = sigmoid_schedule(steps)
    n = x.shape[0]
    log_px = x.new_empty(n, dtype=torch.float64)
    mc_var = x.new_empty(n, dtype=torch.float64)
    acceptance, final_eps = [], []
    bar = _bar(settings.transitions(n), progress, "AIS")
    with seeded(seed), _frozen(model, guide):
        for begin in range(0, n, batch_size):
            args = batch_args(x, y, begin, batch_size)
            schedule = settings.pilot(model, guide, args, betas, bar.update)
            path = AnnealingPath(model, guide, args, chains, start)
            run = anneal(path.parts, path.draw(), betas, leapfrog, schedule, None, bar.update)
            sl = slice(begin, begin + args[0].shape[0])
            log_px[sl] = _log_mean_exp(run.log_w)
            mc_var[sl] = _mc_variance(run.log_w)
            acceptance.append(run.acceptance.mean(0))
            final_eps.append(run.schedule[-1:].mean(0))
    bar.close()
    return {
        "log_px": log_px.mean().item(),
        "bits_per_dim": bits_per_dim(log_px.mean().item(), x.shape[-1]),
        "stderr": (log_px.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
        "mc_stderr": (mc_var.sum().sqrt() / n).item(),
        "per_datapoint": log_px,
        "per_datapoint_mc_stderr": mc_var.sqrt(),
        "acceptance": torch.cat(acceptance).mean().item(),
        "step_size": torch.cat(final_eps).mean().item() if steps > 1 else float("nan"),
        "steps": steps,
        "chains": chains,
        "leapfrog": leapfrog,
        "start": start,
    }


@torch.no_grad()
def simulate(model, x: torch.Tensor, y: torch.Tensor | None = None):
    """(x̃, z̃) drawn from the model, as many as ``x`` has rows (``x`` gives the shape only; ``y``
    the labels of a conditional model): z̃ ~ p(z), x̃ ~ p_θ(x|z̃). z̃ is an exact sample of
    p(z|x̃)."""
    args = (x,) if y is None else (x, y)
    trace = poutine.trace(poutine.uncondition(model)).get_trace(*args)
    latents = {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name != "x" and not site_is_subsample(site)
    }
    return trace.nodes["x"]["value"].detach(), latents


def bdmc(
    model,
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    steps: int = 100,
    chains: int = 16,
    leapfrog: int = 10,
    start: str = "guide",
    batch_size: int = BATCH_SIZE,
    step_size: float = STEP_SIZE,
    pilot_chains: int = PILOT_CHAINS,
    seed: int = EVAL_SEED,
    progress: bool = False,
) -> dict[str, Any]:
    """Bidirectional Monte Carlo on data simulated from the model, as many datapoints as ``x``
    has rows (and ``y``'s labels for a conditional model): forward AIS gives a stochastic lower
    bound of each log p(x̃), reverse AIS from the z̃ that generated x̃ a stochastic upper bound,
    −log (1/C) Σ_c exp(log ŵ_c^rev). Their gap (upper − lower, ≥ 0 in expectation) bounds
    how far either is from log p(x̃) at these T, C, L. Both directions use the forward pilot's
    step sizes (the reverse walks them backwards): they depend on x̃ alone, not on z̃.

    Returns ``lower``, ``upper``, ``gap`` (means over datapoints), ``gap_stderr`` (over
    datapoints), ``per_datapoint_lower`` / ``_upper`` (n,), the ``simulated`` x̃, mean
    ``acceptance`` of each direction, and the settings.
    """
    settings = Settings(steps, chains, leapfrog, start, batch_size, step_size, pilot_chains)
    settings.check()
    betas = sigmoid_schedule(steps)
    n = x.shape[0]
    lower = x.new_empty(n, dtype=torch.float64)
    upper = x.new_empty(n, dtype=torch.float64)
    simulated = torch.empty_like(x)
    accept: dict[str, list[torch.Tensor]] = {"forward": [], "reverse": []}
    bar = _bar(settings.transitions(n, directions=2), progress, "BDMC")
    with seeded(seed), _frozen(model, guide):
        for begin in range(0, n, batch_size):
            x_sim, z_sim = simulate(model, *batch_args(x, y, begin, batch_size))
            args = (x_sim,) if y is None else (x_sim, y[begin : begin + x_sim.shape[0]])
            schedule = settings.pilot(model, guide, args, betas, bar.update)
            path = AnnealingPath(model, guide, args, chains, start)
            forward = anneal(path.parts, path.draw(), betas, leapfrog, schedule, None, bar.update)
            exact = path.from_latents(z_sim)
            reverse = anneal(
                path.parts, exact, betas.flip(0), leapfrog, schedule.flip(0), None, bar.update
            )
            sl = slice(begin, begin + x_sim.shape[0])
            simulated[sl] = x_sim
            lower[sl] = _log_mean_exp(forward.log_w)
            upper[sl] = -_log_mean_exp(reverse.log_w)
            accept["forward"].append(forward.acceptance.mean(0))
            accept["reverse"].append(reverse.acceptance.mean(0))
    bar.close()
    gap = upper - lower
    return {
        "lower": lower.mean().item(),
        "upper": upper.mean().item(),
        "gap": gap.mean().item(),
        "gap_stderr": (gap.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
        "per_datapoint_lower": lower,
        "per_datapoint_upper": upper,
        "simulated": simulated,
        "acceptance_forward": torch.cat(accept["forward"]).mean().item(),
        "acceptance_reverse": torch.cat(accept["reverse"]).mean().item(),
        "steps": steps,
        "chains": chains,
        "leapfrog": leapfrog,
        "start": start,
    }


@dataclass(frozen=True)
class AISCost:
    """What an AIS run will take: ``seconds`` (one gradient evaluation of the first batch,
    timed, times the run's evaluations) and ``bytes`` held at a time (the autograd graph of one
    evaluation, measured, plus the chains' states)."""

    seconds: float
    bytes: int


def ais_cost(
    model,
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    steps: int = 100,
    chains: int = 16,
    leapfrog: int = 10,
    start: str = "guide",
    batch_size: int = BATCH_SIZE,
    seed: int = EVAL_SEED,
    directions: int = 1,
    pilot_chains: int = PILOT_CHAINS,
) -> AISCost:
    """Time one gradient evaluation at the first batch's size and count the bytes its graph
    saves (every random stream restored afterwards); ``directions`` = 2 for BDMC. The pilot
    runs are counted at ``pilot_chains``/C of a run's time."""
    settings = Settings(steps, chains, leapfrog, start, batch_size, pilot_chains=pilot_chains)
    settings.check()
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with seeded(seed), _frozen(model, guide):
        path = AnnealingPath(model, guide, batch_args(x, y, 0, batch_size), chains, start)
        u = path.draw()
        path.parts(u)  # warm up (first calls allocate)
        with ExitStack() as stack:
            stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
            begin = time.perf_counter()
            path.parts(u).log_pi.sum().item()
            seconds = time.perf_counter() - begin
    per_batch = seconds * x.shape[0] / min(batch_size, x.shape[0])
    runs = directions + min(pilot_chains, chains) / chains
    total = per_batch * ((steps - 1) * leapfrog + 1) * runs
    held = sum(saved.values()) + 6 * u.numel() * u.element_size()  # u, p, grads, proposal
    return AISCost(total, held)


def check_memory(cost: AISCost, device: torch.device, what: str) -> None:
    """A one-line refusal when ``cost.bytes`` exceed the memory free on ``device``."""
    free = available_bytes(device)
    if free is not None and cost.bytes > free:
        raise PyroVAEError(
            f"{what} needs about {format_bytes(cost.bytes)} at a time, more than the "
            f"{format_bytes(free)} free on {device}: use fewer --chains (C chains of up to "
            f"{BATCH_SIZE} images are annealed at once)"
        )
