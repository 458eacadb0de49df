"""K particles per datapoint in one vectorized pass, and the per-datapoint log-weights.

log w_k = log p(x, z_k) − log q(z_k|x), shape (K, B): unlike Pyro's
``vectorized_importance_weights`` the data plate is kept, so bounds are formed per datapoint.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import Distribution

from pyrovae.core.errors import PyroVAEError

PARTICLE_PLATE = "num_particles_vectorized"


def detach_distribution(d: Distribution) -> Distribution:
    """A copy of ``d`` whose parameters are cut from the graph: log q_φ̄(z) with φ̄ = stop-grad(φ).

    Every tensor the distribution holds (including cached ones, such as a Cholesky factor) is
    detached, recursively through wrappers (Independent, expanded, masked); the value z keeps
    its own path, so ∂ log q_φ̄(z)/∂z still flows.
    """
    out = copy.copy(d)
    for name, value in vars(d).items():
        if isinstance(value, torch.Tensor):
            setattr(out, name, value.detach())
        elif isinstance(value, Distribution):
            setattr(out, name, detach_distribution(value))
        elif isinstance(value, torch.nn.Module) or (
            isinstance(value, (list, tuple)) and any(isinstance(v, torch.nn.Module) for v in value)
        ):
            raise PyroVAEError(
                f"cannot stop gradients through {type(d).__name__}'s learned transforms; "
                "this estimator needs a guide whose distribution holds plain tensors"
            )
    return out


@dataclass
class Particles:
    """Traces of K vectorized particles and their per-datapoint log-densities, each (K, B)."""

    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    num_particles: int
    log_p: torch.Tensor  # log p(x, z_k)
    log_q: torch.Tensor  # log q_φ(z_k|x)
    _log_q_stop: torch.Tensor | None = field(default=None, repr=False)

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q  # (K, B)

    @property
    def latents(self) -> list[torch.Tensor]:
        """The guide's sampled values z_k (the reparameterized path to φ, if any)."""
        return [s["value"] for s in _sample_sites(self.guide_trace)]

    @property
    def log_q_stop(self) -> torch.Tensor:
        """log q_φ̄(z_k|x): parameters detached, z_k not (the STL / DReG ingredient)."""
        if self._log_q_stop is None:
            total = 0.0
            for site in _sample_sites(self.guide_trace):
                lp = detach_distribution(site["fn"]).log_prob(site["value"])
                total = total + _per_datapoint(
                    scale_and_mask(lp, site["scale"], site["mask"]), self.num_particles, site
                )
            self._log_q_stop = total
        return self._log_q_stop


def _sample_sites(trace: poutine.Trace):
    return [s for s in trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]]


def _per_datapoint(log_prob: torch.Tensor, num_particles: int, site) -> torch.Tensor:
    if log_prob.dim() != 2 or log_prob.shape[0] != num_particles:
        raise PyroVAEError(
            f"site {site['name']!r} has log-density shape {tuple(log_prob.shape)}; per-datapoint "
            "estimators need every sample site inside one 'data' plate (local latents only)"
        )
    return log_prob


def _sum_log_probs(trace: poutine.Trace, num_particles: int, observed: bool | None = None):
    total = 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or (observed is not None and site["is_observed"] != observed):
            continue
        total = total + _per_datapoint(site["log_prob"], num_particles, site)
    return total


def vectorized(fn, num_particles: int, max_plate_nesting: int = 1):
    """``fn`` run inside an outermost plate of K particles (dim −(max_plate_nesting + 1))."""

    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1)):
            return fn(*args, **kwargs)

    return wrapped


def draw_particles(
    model,
    guide,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    max_plate_nesting: int = 1,
    detach_latents: bool = False,
) -> Particles:
    """z_k ~ q(z|x) for k = 1…K (one pass), then the model replayed at those z_k.

    ``detach_latents`` cuts z_k from φ (for score-function gradients: no reparameterization).
    """
    guide_trace = poutine.trace(vectorized(guide, num_particles, max_plate_nesting)).get_trace(
        *args, **kwargs
    )
    if detach_latents:
        for site in _sample_sites(guide_trace):
            site["value"] = site["value"].detach()
    model_trace = poutine.trace(
        poutine.replay(vectorized(model, num_particles, max_plate_nesting), trace=guide_trace)
    ).get_trace(*args, **kwargs)
    model_trace = prune_subsample_sites(model_trace)  # drop the plates' own bookkeeping sites
    guide_trace = prune_subsample_sites(guide_trace)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return Particles(
        model_trace,
        guide_trace,
        num_particles,
        log_p=_sum_log_probs(model_trace, num_particles),
        log_q=_sum_log_probs(guide_trace, num_particles),
    )


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) Σ_k exp(log_w_k), stably."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])
