"""Importance-sampled log p(x) (Burda et al. 2015), what it will cost, and the number of active
latent units."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import Distribution
from tqdm import tqdm  # text bars: tqdm.auto warns in a notebook without ipywidgets

from pyrovae.core.runtime import seeded
from pyrovae.inference.evaluate import batch_args, bits_per_dim
from pyrovae.inference.particles import draw_particles, vectorized

EVAL_SEED = 4321
BATCH_SIZE, CHUNK_SIZE = 100, 500  # images per batch, particles per chunk: memory at a time


def chunk_sizes(total: int, size: int) -> Iterator[int]:
    """``total`` in chunks of at most ``size``, made one at a time: a list of them would hold
    total / size numbers (2·10¹⁸ for K = 10²¹)."""
    for start in range(0, total, size):
        yield min(size, total - start)


@torch.no_grad()
def log_marginal_likelihood(
    model,
    guide,
    x: torch.Tensor,
    num_samples: int = 5000,
    y: torch.Tensor | None = None,
    batch_size: int = BATCH_SIZE,
    chunk_size: int = CHUNK_SIZE,
    seed: int = EVAL_SEED,
    progress: bool = False,
) -> dict[str, float | torch.Tensor]:
    """log p(x) ≈ log (1/K) Σ_k w_k per datapoint, z_k ~ q(z|x), K = ``num_samples``.

    Streams over the data in batches of ``batch_size`` and over K in chunks of ``chunk_size``
    (a running log-sum-exp), so memory is bounded by chunk_size × batch_size particles.
    With K samples this is also the IWAE bound L_K's estimate. Labels ``y`` go to a
    conditional model and guide (then it estimates log p(x|y)).

    Returns ``log_px`` (mean over datapoints), ``bits_per_dim`` (−log_px / (D ln 2), D the
    values per datapoint), ``stderr`` (its standard error over datapoints),
    ``mc_stderr`` (the Monte-Carlo error of the estimate itself, by the delta method:
    Var[log p̂(x_i)] ≈ 1/ESS_i − 1/K with ESS = (Σw)²/Σw²), ``ess`` (mean effective sample size)
    and ``per_datapoint`` (B,).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    n = x.shape[0]
    log_px = x.new_empty(n, dtype=torch.float64)
    mc_var = x.new_empty(n, dtype=torch.float64)
    ess = x.new_empty(n, dtype=torch.float64)
    bar = tqdm(total=n * num_samples, disable=not progress, desc="log p(x)", unit_scale=True)
    with seeded(seed):
        for start in range(0, n, batch_size):
            args = batch_args(x, y, start, batch_size)
            xb = args[0]
            lse_w = lse_w2 = xb.new_full((xb.shape[0],), -math.inf, dtype=torch.float64)
            for k in chunk_sizes(num_samples, chunk_size):
                with poutine.block():
                    log_w = draw_particles(model, guide, args, {}, k).log_w.double()  # (k, B)
                lse_w = torch.logaddexp(lse_w, torch.logsumexp(log_w, 0))
                lse_w2 = torch.logaddexp(lse_w2, torch.logsumexp(2 * log_w, 0))
                bar.update(k * xb.shape[0])
            sl = slice(start, start + xb.shape[0])
            log_px[sl] = lse_w - math.log(num_samples)
            ess[sl] = torch.exp(2 * lse_w - lse_w2)
            mc_var[sl] = (1 / ess[sl] - 1 / num_samples).clamp_min(0)
    bar.close()
    return {
        "log_px": log_px.mean().item(),
        "bits_per_dim": bits_per_dim(log_px.mean().item(), x.shape[-1]),
        "stderr": (log_px.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
        "mc_stderr": (mc_var.sum().sqrt() / n).item(),
        "ess": ess.mean().item(),
        "num_samples": num_samples,
        "per_datapoint": log_px,
    }


@dataclass(frozen=True)
class Cost:
    """What :func:`log_marginal_likelihood` will take: ``draws`` of z (images × K), about
    ``seconds`` (one chunk timed, scaled to every draw) and ``chunk_bytes``, the tensors one
    chunk of particles holds (the memory at a time, whatever K)."""

    draws: int
    seconds: float
    chunk_bytes: int


@torch.no_grad()
def estimate_cost(
    model,
    guide,
    x: torch.Tensor,
    num_samples: int,
    y: torch.Tensor | None = None,
    batch_size: int = BATCH_SIZE,
    chunk_size: int = CHUNK_SIZE,
    seed: int = EVAL_SEED,
) -> Cost:
    """Time the first chunk :func:`log_marginal_likelihood` would draw (same sizes, same seed;
    every random stream is restored afterwards, so its figures do not change) and measure what
    its traces hold."""
    k, b = min(chunk_size, num_samples), min(batch_size, x.shape[0])
    with seeded(seed):
        start = time.perf_counter()
        with poutine.block():
            particles = draw_particles(model, guide, batch_args(x, y, 0, b), {}, k)
        particles.log_w.sum().item()  # waits for a device that runs asynchronously
        seconds = time.perf_counter() - start
    draws = x.shape[0] * num_samples
    held = _held_bytes(particles.model_trace, particles.guide_trace)
    return Cost(draws, seconds * draws / (k * b), held)


def _held_bytes(*traces) -> int:
    """Bytes of the distinct storages that the sample sites of ``traces`` hold: values,
    densities and their distributions' tensors (the decoder's output among them)."""
    storages: dict[int, int] = {}

    def visit(obj) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, Distribution):
            for value in vars(obj).values():
                visit(value)

    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] == "sample":
                for key in ("value", "fn", "log_prob", "unscaled_log_prob"):
                    visit(site.get(key))
    return sum(storages.values())


MEAN_SAMPLES = 256


def posterior_mean(q, num_samples: int = MEAN_SAMPLES, chunk: int = 32) -> torch.Tensor:
    """E_q[z]: exact where the family knows it, else (a flow, say) the average of
    ``num_samples`` draws, ``chunk`` at a time (bounded memory), whose error per component is
    std_q(z_j) / √num_samples."""
    try:
        return q.mean
    except NotImplementedError:
        total = 0.0
        for start in range(0, num_samples, chunk):
            total = total + q.sample((min(chunk, num_samples - start),)).sum(0)
        return total / num_samples


@torch.no_grad()
def posterior_means(
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    num_samples: int = MEAN_SAMPLES,
    chunk: int = 32,
) -> dict[str, torch.Tensor]:
    """E_q[z_l|x] for each latent site l of the guide, (B, d_l) each, by site name.

    One site: :func:`posterior_mean` of q(z|x). Several (q(z1|x) q(z2|z1) …): z2's mean
    integrates over z1, so each site's is the average over ``num_samples`` draws of the
    z's below it of its conditional mean E[z_l|z_{l−1}] (exact where the family knows it, else
    the draw itself), ``chunk`` draws at a time.
    """
    args = (x,) if y is None else (x, y)
    with poutine.block():
        trace = poutine.trace(guide).get_trace(*args)
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]]
    sites = [n for n in sites if not site_is_subsample(trace.nodes[n])]
    if len(sites) == 1:
        return {sites[0]: posterior_mean(trace.nodes[sites[0]]["fn"]).reshape(x.shape[0], -1)}
    totals: dict[str, torch.Tensor] = {}
    for start in range(0, num_samples, chunk):
        k = min(chunk, num_samples - start)
        with poutine.block():
            draws = poutine.trace(vectorized(guide, k)).get_trace(*args)
        for name in sites:
            site = draws.nodes[name]
            try:
                mean = site["fn"].mean
            except NotImplementedError:
                mean = site["value"]
            totals[name] = totals.get(name, 0.0) + mean.expand_as(site["value"]).sum(0)
    return {name: total / num_samples for name, total in totals.items()}


@torch.no_grad()
def active_units_by_site(
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    threshold: float = 0.01,
    batch_size: int = 1000,
) -> dict[str, int]:
    """Per latent site (layer), how many dimensions j have Cov_x(E_q[z_j|x]) > ``threshold``
    (Burda et al.); the means from :func:`posterior_means`."""
    means: dict[str, list[torch.Tensor]] = {}
    for start in range(0, x.shape[0], batch_size):
        args = batch_args(x, y, start, batch_size)
        for name, mu in posterior_means(guide, *args).items():
            means.setdefault(name, []).append(mu)
    return {
        name: int((torch.cat(mus).var(0) > threshold).sum().item()) for name, mus in means.items()
    }


def active_units(
    guide,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    threshold: float = 0.01,
    batch_size: int = 1000,
) -> int:
    """How many latent dimensions j have Cov_x(E_q[z_j|x]) > ``threshold`` (Burda et al.),
    over all layers (:func:`active_units_by_site` counts each); E_q[z|x] by 256 samples where
    the guide has no closed-form mean (flows)."""
    return sum(active_units_by_site(guide, x, y, threshold, batch_size).values())
