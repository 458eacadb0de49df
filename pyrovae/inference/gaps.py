"""The inference gap split (Cremer, Li & Duvenaud 2018):

    log p(x) − L[q_φ] = (log p(x) − L[q*]) + (L[q*] − L[q_φ])
                      =   approximation gap  +  amortization gap,

L[q] = E_q[log p(x, z) − log q(z|x)] the ELBO of one datapoint, q_φ the trained amortized guide
and q* the best q of the guide's own family for that datapoint alone (what the encoder could
output for it). log p(x) is estimated by AIS.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import torch
from pyro import poutine
from torch import nn
from tqdm import tqdm

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import joined
from pyrovae.core.ranges import SIZE
from pyrovae.core.runtime import get_rng_state, seeded, set_rng_state
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.inference.ais import ais_log_marginal
from pyrovae.inference.evaluate import batch_args
from pyrovae.inference.marginal import BATCH_SIZE, EVAL_SEED, chunk_sizes
from pyrovae.inference.particles import (
    Particles,
    draw_particles,
    holds_only_tensors,
    parameters_detached,
)

ELBO_SAMPLES = 100  # S: particles per datapoint for each ELBO estimate
CHUNK_SIZE = 100  # particles per datapoint drawn at a time (memory: CHUNK_SIZE × batch)
# The figures of the split, in the order printed: (key, label)
FIGURES = (
    ("log_px", "log p̂(x) (AIS)"),
    ("elbo_local", "L[q*]"),
    ("elbo_amortized", "L[q_φ]"),
    ("approximation_gap", "approximation gap"),
    ("amortization_gap", "amortization gap"),
)


class FreeParameters(nn.Module):
    """Stands in for an encoder: returns the per-datapoint parameters ``raw`` (B, num_params)
    whatever its input (B, D) or (B, D + C), whose batch size must be B.

    ``raw`` is registered as it is when it is an ``nn.Parameter`` (so an optimizer over it
    updates what the guide reads, and :func:`~pyrovae.inference.particles.parameters_detached`
    cuts it where the path-derivative gradient re-runs the guide); any other tensor is held as
    a parameter without gradient.
    """

    def __init__(self, raw: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(raw, nn.Parameter):
            raw = nn.Parameter(raw.detach(), requires_grad=False)
        self.raw = raw  # (B, num_params)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[:-1] != self.raw.shape[:-1]:
            raise PyroVAEError(
                f"local parameters are for {self.raw.shape[0]} datapoints; the guide was called "
                f"on {h.shape[0]}"
            )
        return self.raw


def check_gaps_apply(guide: Any) -> None:
    """Refuse, in one line, a guide the split does not apply to: it needs an amortized guide
    family(encoder(x)) with a density over continuous codes (so L[q] and AIS from q exist, and
    q* can be searched by gradient)."""
    if not getattr(guide, "sites", ("z",)):  # the deterministic baseline's empty guide
        raise PyroVAEError(
            "the inference gap needs a latent variable; this model has none (a "
            "--conditional-model baseline, whose log p(x_miss|x_obs) is exact)"
        )
    if not isinstance(guide, AmortizedGuide):
        raise PyroVAEError(
            f"the inference gap needs an amortized guide q(z|x) = family(encoder(x)), got "
            f"{type(guide).__name__} (M2's q(y|x) q(z|x,y) has a discrete site y)"
        )
    family = guide.family
    if not family.has_density:
        raise PyroVAEError(
            f"the inference gap does not apply to a point-mass guide ({type(family).__name__}): "
            "it has no density, so no ELBO and no AIS from q"
        )
    if family.latent_kind != "continuous":
        raise PyroVAEError(
            f"the inference gap does not apply to a discrete code ({type(family).__name__}): "
            "q* is searched by gradient over continuous codes, and AIS needs them too"
        )


def local_guide(guide: AmortizedGuide, raw: torch.Tensor) -> AmortizedGuide:
    """The guide with its bottom family's per-datapoint parameters free: family(raw) in place
    of family(encoder(x)), raw (B, family.num_params) for the B datapoints it is called on.

    This defines the search space of q*: what the encoder outputs — μ, σ (through ρ) for
    ``normal``; μ and the Cholesky entries for ``full-covariance``; the base distribution's μ, σ
    for ``flow``. The family's global parameters (the flow's layers) and the upper layers
    q(z_l|z_{l−1}) of a hierarchical guide are the trained guide's own modules, shared, not
    copies: they stay as trained. A conditional guide keeps its condition (the stand-in
    encoder ignores [x, c]).
    """
    check_gaps_apply(guide)
    return AmortizedGuide(
        FreeParameters(raw), guide.family, layers=list(guide.layers), condition=guide.condition
    )


def encoder_output(
    guide: AmortizedGuide, x: torch.Tensor, y: torch.Tensor | None = None
) -> torch.Tensor:
    """The raw parameters the encoder gives for x (and its context c = [onehot(y)] or x_obs,
    for a conditional guide), (B, P)."""
    h = x if guide.condition is None else joined(x, guide.condition.context(x, y))
    return guide.encoder(h)


@contextmanager
def _evaluating(*modules: nn.Module) -> Iterator[None]:
    """The modules in eval mode for the block (no dropout; a sum over datapoints that
    separates), their modes restored on leaving."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


class _Moments:
    """Running mean and sum of squared deviations along dim 0 of the chunks it is given
    (Chan et al.'s pairwise update: stable whatever the offset of log w)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | float = 0.0
        self.m2: torch.Tensor | float = 0.0

    def add(self, values: torch.Tensor) -> None:
        k = values.shape[0]
        mean = values.mean(0)
        m2 = ((values - mean) ** 2).sum(0)
        total = self.count + k
        delta = mean - self.mean
        self.mean = self.mean + delta * k / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * k / total
        self.count = total

    def stderr(self) -> torch.Tensor:
        """std / √S (unbiased variance; NaN from one sample)."""
        return (self.m2 / (self.count - 1)).sqrt() / math.sqrt(self.count)


@torch.no_grad()
def _paired_moments(
    model, guides: Sequence[Any], args: tuple, samples: int, chunk: int
) -> list[_Moments]:
    """Moments over S = ``samples`` draws of log w per datapoint for each guide, each chunk of
    draws made from the same random state for every guide (common random numbers: the same
    ε through each guide's reparameterization); with two guides also of the difference
    log w₂ − log w₁, whose spread is the paired Monte-Carlo error of L[q₂] − L[q₁]."""
    moments = [_Moments() for _ in range(len(guides) + (len(guides) == 2))]
    for k in chunk_sizes(samples, chunk):
        state = get_rng_state()
        log_w = []
        for guide in guides:
            set_rng_state(state)
            with poutine.block():
                log_w.append(draw_particles(model, guide, args, {}, k).log_w.double())  # (k, B)
        if len(guides) == 2:
            log_w.append(log_w[1] - log_w[0])
        for m, values in zip(moments, log_w, strict=True):
            m.add(values)
    return moments


def elbo_per_datapoint(
    model,
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    samples: int = ELBO_SAMPLES,
    chunk: int = CHUNK_SIZE,
    batch_size: int = BATCH_SIZE,
    seed: int = EVAL_SEED,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L̂(x_i) = (1/S) Σ_s log w_is, z_is ~ q(z|x_i), and its Monte-Carlo standard error
    std_s(log w_is) / √S, each (n,) float64; S = ``samples``.

    Memory is bounded by ``chunk`` × ``batch_size`` particles (a running mean and variance).
    Seeded; every global random stream is restored afterwards. A guide from
    :func:`local_guide` holds parameters for exactly its own B datapoints: pass x of those
    and ``batch_size`` ≥ B.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    means, errors = [], []
    with seeded(seed):
        for start in range(0, x.shape[0], batch_size):
            args = batch_args(x, y, start, batch_size)
            (m,) = _paired_moments(model, [guide], args, samples, chunk)
            means.append(m.mean)
            errors.append(m.stderr())
    return torch.cat(means), torch.cat(errors)


@dataclass(frozen=True)
class LocalSettings:
    """How q* is searched for, per datapoint (see :func:`optimize_local`): at most
    ``max_steps`` Adam steps of learning rate ``lr``, each on ``samples`` particles per
    datapoint; every ``check_every`` steps the ELBO is estimated on fixed noise
    (``check_samples`` particles, the same draws each check), and the search stops when the
    mean over datapoints of each one's best so far has not risen by more than ``tolerance``
    nats for ``patience`` checks in a row."""

    max_steps: int = 2000
    lr: float = 1e-2
    samples: int = 10
    check_every: int = 50
    check_samples: int = 100
    tolerance: float = 0.01
    patience: int = 3

    def __post_init__(self) -> None:
        for name, flag in (
            ("max_steps", "--local-steps"),
            ("samples", "--local-samples"),
            ("check_every", "check_every"),
            ("check_samples", "check_samples"),
            ("patience", "patience"),
        ):
            SIZE.check(flag, getattr(self, name))
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise PyroVAEError(f"--local-lr must be a positive number, got {self.lr}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise PyroVAEError(f"--tolerance must be a number ≥ 0, got {self.tolerance}")


LOCAL = LocalSettings()


@dataclass(frozen=True)
class LocalResult:
    """What :func:`optimize_local` found: ``raw`` (B, P) the parameters of q* (each datapoint's
    best checked point), ``elbo`` (B,) their fixed-noise ELBO estimates, ``start_elbo`` (B,)
    the encoder's on the same noise, the Adam ``steps`` taken and whether the search stopped
    on the ``plateau`` (else at ``max_steps``)."""

    raw: torch.Tensor
    elbo: torch.Tensor
    start_elbo: torch.Tensor
    steps: int
    plateau: bool


def optimize_local(
    model,
    guide: AmortizedGuide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    max_steps: int = LOCAL.max_steps,
    lr: float = LOCAL.lr,
    samples: int = LOCAL.samples,
    check_every: int = LOCAL.check_every,
    check_samples: int = LOCAL.check_samples,
    tolerance: float = LOCAL.tolerance,
    patience: int = LOCAL.patience,
    seed: int = EVAL_SEED,
    chunk: int = CHUNK_SIZE,
) -> LocalResult:
    """q*(z|x_i) = argmax over raw_i of L[family(raw_i)] for each of the B datapoints, the
    family's global parameters and the upper layers as trained (:func:`local_guide`).

    raw starts at encoder(x) (a detached copy); Adam minimizes −Σ_i L̂_i, which separates over
    datapoints, so each raw_i gets only its own datapoint's gradient (Adam is per coordinate).
    L̂_i = (1/K) Σ_k [log p(x_i, z_k) − log q(z_k|x_i)], K = ``samples`` reparameterized
    particles per step. Its gradient is the path-derivative one (STL, Roeder et al. 2017:
    log q at detached parameters; unbiased, zero at an exact posterior, lower variance near
    one) where every site's distribution holds plain tensors (:func:`_path_derivative`); a
    flow's is the full reparameterized gradient, also unbiased: the path-derivative one would
    invert the flow at every step, d sequential passes per layer (4.5 s a step instead of
    0.4 s, measured on 20 MNIST images with d = 50 on 2 CPU cores).

    Plateau: every ``check_every`` steps each datapoint's ELBO is estimated on fixed noise
    (``check_samples`` particles from seed + 1, the same at every check, so checks differ by
    the parameters only) and each keeps its best checked point (the start included, so q* is
    never worse than the encoder on that noise). The search stops once the mean of the best
    values has not risen by more than ``tolerance`` nats above its level at the last rise
    for ``patience`` checks, or after ``max_steps``.

    The model's and guide's weights are not changed (they are detached in the block: no
    gradient reaches them). Steps draw from ``seed``; global random streams are restored.
    """
    LocalSettings(max_steps, lr, samples, check_every, check_samples, tolerance, patience)
    check_gaps_apply(guide)
    args = (x,) if y is None else (x, y)
    with _evaluating(model, guide), parameters_detached((model, guide)), seeded(seed):
        raw = nn.Parameter(encoder_output(guide, x, y).detach().clone())  # (B, P)
        local = local_guide(guide, raw)

        def checked() -> torch.Tensor:
            return elbo_per_datapoint(
                model, local, x, y, check_samples, chunk, x.shape[0], seed + 1
            )[0]

        best_raw, best = raw.detach().clone(), checked()
        start_elbo, level = best.clone(), best.mean().item()
        optimizer = torch.optim.Adam([raw], lr=lr)
        steps = stale = 0
        path_derivative = None
        while steps < max_steps and stale < patience:
            for _ in range(min(check_every, max_steps - steps)):
                with poutine.block():
                    particles = draw_particles(model, local, args, {}, samples)
                if path_derivative is None:
                    path_derivative = _path_derivative(particles)
                log_q = particles.log_q_stop if path_derivative else particles.log_q
                loss = -(particles.log_p - log_q).mean(0).sum()  # separates over datapoints
                raw.grad = torch.autograd.grad(loss, raw)[0]
                optimizer.step()
                steps += 1
            elbo = checked()
            better = elbo > best
            best_raw[better] = raw.detach()[better]
            best = torch.where(better, elbo, best)
            if best.mean().item() > level + tolerance:
                level, stale = best.mean().item(), 0
            else:
                stale += 1
    return LocalResult(best_raw, best, start_elbo, steps, stale >= patience)


def _path_derivative(particles: Particles) -> bool:
    """Whether log q at detached parameters is cheap here: every latent site's distribution
    holds plain tensors (no flow to invert when re-scoring a draw)."""
    sites = particles.guide_trace.nodes.values()
    return all(
        holds_only_tensors(site["fn"])
        for site in sites
        if site["type"] == "sample" and not site["is_observed"]
    )


def _summary(values: torch.Tensor, mc_stderr: torch.Tensor) -> dict[str, float]:
    """Mean over datapoints, its standard error over them (NaN from one) and the Monte-Carlo
    error of the mean, √(Σ_i mc_i²) / n."""
    n = values.shape[0]
    return {
        "mean": values.mean().item(),
        "stderr": (values.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
        "mc_stderr": (mc_stderr.pow(2).sum().sqrt() / n).item(),
    }


LogPx = Callable[..., dict[str, Any]]


def inference_gaps(
    model,
    guide: AmortizedGuide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    samples: int = ELBO_SAMPLES,
    local: LocalSettings = LOCAL,
    ais_steps: int = 100,
    chains: int = 16,
    leapfrog: int = 10,
    batch_size: int = BATCH_SIZE,
    seed: int = EVAL_SEED,
    progress: bool = False,
    log_px_fn: LogPx | None = None,
) -> dict[str, Any]:
    """log p̂(x), L[q*], L[q_φ] and the two gaps, per datapoint and their means.

    log p̂(x): AIS from q_φ (:func:`~pyrovae.inference.ais.ais_log_marginal` with ``ais_steps``
    T, ``chains`` C, ``leapfrog`` L), or ``log_px_fn(model, guide, x, y)``, which returns the
    same keys (``per_datapoint``, ``per_datapoint_mc_stderr``): exact log p(x) in tests.
    q*: :func:`optimize_local` with ``local``'s settings, ``batch_size`` datapoints at a time.
    L[q*], L[q_φ]: :func:`elbo_per_datapoint`-style estimates with S = ``samples`` particles
    on common noise, so the amortization gap's Monte-Carlo error is that of the paired
    differences; the approximation gap's combines AIS's and L[q*]'s (independent noise).

    Returns, for each of :data:`FIGURES`, ``{"mean", "stderr", "mc_stderr"}`` (standard error
    over datapoints; Monte-Carlo error of the mean); ``per_datapoint`` and
    ``per_datapoint_mc_stderr`` (dicts of (n,) float64 tensors); ``local_raw`` (n, P), the
    parameters of each q* (what :func:`local_guide` takes); ``local_steps`` and
    ``local_plateau`` per batch; ``acceptance`` (AIS's HMC, None without AIS); ``seconds``
    (local search, ELBOs, log p̂(x)); and the ``settings``.
    """
    check_gaps_apply(guide)
    SIZE.check("--samples", samples)
    ais_settings = {"steps": ais_steps, "chains": chains, "leapfrog": leapfrog}
    if log_px_fn is not None:
        ais_settings = None  # log p(x) from elsewhere: no AIS setting applies
    else:
        log_px_fn = partial(
            ais_log_marginal, **ais_settings, batch_size=batch_size, seed=seed, progress=progress
        )
    n = x.shape[0]
    per: dict[str, list[torch.Tensor]] = {key: [] for key, _ in FIGURES}
    raws = []
    mc: dict[str, list[torch.Tensor]] = {key: [] for key, _ in FIGURES}
    steps, plateau = [], []
    seconds = {"local": 0.0, "elbo": 0.0, "log_px": 0.0}
    bar = tqdm(total=n, disable=not progress, desc="q*(z|x)")
    with _evaluating(model, guide):
        for start in range(0, n, batch_size):
            args = batch_args(x, y, start, batch_size)
            clock = time.perf_counter()
            found = optimize_local(model, guide, *args, **asdict(local), seed=seed + 1)
            seconds["local"] += time.perf_counter() - clock
            raws.append(found.raw)
            steps.append(found.steps)
            plateau.append(found.plateau)
            clock = time.perf_counter()
            with seeded(seed):
                amortized, star, gap = _paired_moments(
                    model, [guide, local_guide(guide, found.raw)], args, samples, CHUNK_SIZE
                )
            seconds["elbo"] += time.perf_counter() - clock
            for key, m in (("elbo_amortized", amortized), ("elbo_local", star)):
                per[key].append(m.mean)
                mc[key].append(m.stderr())
            per["amortization_gap"].append(gap.mean)
            mc["amortization_gap"].append(gap.stderr())
            bar.update(args[0].shape[0])
        bar.close()
        clock = time.perf_counter()
        ais = log_px_fn(model, guide, x, y)
        seconds["log_px"] = time.perf_counter() - clock
    values = {key: torch.cat(v) for key, v in per.items() if v}
    errors = {key: torch.cat(v) for key, v in mc.items() if v}
    values["log_px"] = ais["per_datapoint"].double().to(values["elbo_local"].device)
    errors["log_px"] = ais["per_datapoint_mc_stderr"].double().to(values["elbo_local"].device)
    values["approximation_gap"] = values["log_px"] - values["elbo_local"]
    errors["approximation_gap"] = (errors["log_px"] ** 2 + errors["elbo_local"] ** 2).sqrt()
    result: dict[str, Any] = {key: _summary(values[key], errors[key]) for key, _ in FIGURES}
    result.update(
        per_datapoint={key: values[key] for key, _ in FIGURES},
        per_datapoint_mc_stderr={key: errors[key] for key, _ in FIGURES},
        local_raw=torch.cat(raws),
        local_steps=steps,
        local_plateau=plateau,
        acceptance=ais.get("acceptance"),
        seconds=seconds,
        settings={
            "num_test": n,
            "samples": samples,
            "seed": seed,
            "batch_size": batch_size,
            "ais": ais_settings,
            "local": asdict(local),
        },
    )
    return result
