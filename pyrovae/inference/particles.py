"""K particles per datapoint in one vectorized pass, and the per-datapoint log-weights.

log w_k = log p(x, z_k) − log q(z_k|x), shape (K, B): unlike Pyro's
``vectorized_importance_weights`` the data plate is kept, so bounds are formed per datapoint.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites
from torch import nn
from torch.distributions import Distribution

from pyrovae.core.errors import PyroVAEError

PARTICLE_PLATE = "num_particles_vectorized"


def detach_distribution(d: Distribution) -> Distribution:
    """A copy of ``d`` whose parameters are cut from the graph.

    Every tensor the distribution holds (including cached ones, such as a Cholesky factor) is
    detached, recursively through wrappers (Independent, expanded, masked); the value z keeps
    its own path, so ∂ log q(z)/∂z still flows. This is log q_φ̄(z) only where the distribution's
    tensors depend on φ alone: the single site of a one-layer guide. For q(z2|z1) it would also
    cut z1's path through the loc (see :meth:`Particles.log_q_stop`).
    """
    out = copy.copy(d)
    for name, value in vars(d).items():
        if isinstance(value, torch.Tensor):
            setattr(out, name, value.detach())
        elif isinstance(value, Distribution):
            setattr(out, name, detach_distribution(value))
        elif _is_module(value):
            raise PyroVAEError(
                f"cannot detach {type(d).__name__}'s learned transforms from its tensors; "
                "re-run the guide with its parameters detached instead"
            )
    return out


def _is_module(value: Any) -> bool:
    return isinstance(value, nn.Module) or (
        isinstance(value, (list, tuple)) and any(isinstance(v, nn.Module) for v in value)
    )


def holds_only_tensors(d: Distribution) -> bool:
    """Whether ``d`` (through its wrappers) holds no modules, so :func:`detach_distribution`
    applies."""
    return not any(
        _is_module(v) or (isinstance(v, Distribution) and not holds_only_tensors(v))
        for v in vars(d).values()
    )


@contextmanager
def parameters_detached(modules: Sequence[Any]) -> Iterator[None]:
    """Inside the block every parameter of ``modules`` is a detached copy: φ̄ = stop-grad(φ).

    Only the parameters are cut; tensors computed from other inputs (a sampled z with its path
    to φ) keep their graph. A parameter shared by several modules gets one copy. The parameters
    are put back on leaving. (``torch.func.functional_call`` does the same swap but refuses to
    run under ``torch.jit.trace``; the compiled path swaps parameters itself too.)
    """
    for m in modules:
        if not isinstance(m, nn.Module):
            raise PyroVAEError(
                "stop-gradient on the guide's parameters (elbo-stl, iwae-dreg with several "
                f"latent sites or a flow) needs the guide as a torch module, got {type(m).__name__}"
            )
    copies: dict[int, torch.Tensor] = {}
    swapped: list[tuple[nn.Module, str, nn.Parameter]] = []
    for sub in {id(s): s for m in modules for s in m.modules()}.values():
        for name, param in sub._parameters.items():
            if param is not None:
                swapped.append((sub, name, param))
                sub._parameters[name] = copies.setdefault(id(param), param.detach())
    try:
        yield
    finally:
        for sub, name, param in swapped:
            sub._parameters[name] = param


@dataclass
class Particles:
    """Traces of K vectorized particles and their per-datapoint log-densities, each (K, B).

    Model, guide and their arguments are kept so that :attr:`log_q_stop` can re-run the guide.
    ``inputs`` lists (site, tensor) pairs at which a gradient of the densities computed here is
    the partial derivative in that site's z, the others held fixed (see :func:`density_inputs`).
    """

    model_trace: poutine.Trace
    guide_trace: poutine.Trace
    num_particles: int
    log_p: torch.Tensor  # log p(x, z_k)
    log_q: torch.Tensor  # log q_φ(z_k|x)
    model: Any = field(default=None, repr=False)
    guide: Any = field(default=None, repr=False)
    args: tuple = field(default=(), repr=False)
    kwargs: dict = field(default_factory=dict, repr=False)
    max_plate_nesting: int = 1
    inputs: list[tuple[str, torch.Tensor]] = field(default_factory=list, repr=False)
    _log_q_stop: torch.Tensor | None = field(default=None, repr=False)

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_p - self.log_q  # (K, B)

    @property
    def latents(self) -> dict[str, torch.Tensor]:
        """The guide's sampled values z_k by site, each with its path to φ (if any)."""
        return {s["name"]: s["value"] for s in _sample_sites(self.guide_trace)}

    @property
    def log_q_stop(self) -> torch.Tensor:
        """log q_φ̄(z_k|x), (K, B): the guide's parameters φ detached, every z_k not (STL, DReG).

        The guide is re-run with detached parameters, replaying the sampled z's: each z keeps
        its whole path, z2 = g(ε2, z1(ε1, φ), φ), and log q_φ̄(z2|z1) still depends on z1. A
        flow's transforms are modules and get the detached parameters too (scoring then inverts
        them). Fast path for a single site whose distribution holds plain tensors: these depend
        on (x, φ) only, so detaching them is the same thing, without re-running the encoder.
        """
        if self._log_q_stop is None:
            sites = _sample_sites(self.guide_trace)
            if len(sites) == 1 and holds_only_tensors(sites[0]["fn"]):
                site = sites[0]
                lp = detach_distribution(site["fn"]).log_prob(site["value"])
                lp = scale_and_mask(lp, site["scale"], site["mask"])
                self._log_q_stop = _per_datapoint(lp, self.num_particles, site)
            else:
                self._log_q_stop = self.replayed_log_q_stop()
        return self._log_q_stop

    def replayed_log_q_stop(self) -> torch.Tensor:
        """log q_φ̄(z_k|x), (K, B), always by re-running the guide (what :attr:`log_q_stop` does
        but for its one-site fast path). With several sites the views it replays join
        ``inputs``; with one, the site's z is the input already (the views depend on it)."""
        replay, views = replay_views(self.guide_trace)  # fresh: no cache may answer
        replayed = poutine.replay(
            vectorized(self.guide, self.num_particles, self.max_plate_nesting), trace=replay
        )
        with parameters_detached((self.guide,)):
            trace = prune_subsample_sites(
                poutine.trace(replayed).get_trace(*self.args, **self.kwargs)
            )
            trace.compute_log_prob()  # inside: a flow's density runs its detached layers
        if len(views) > 1:
            self.inputs.extend(views)
        return _sum_log_probs(trace, self.num_particles)


def replay_views(trace: poutine.Trace) -> tuple[poutine.Trace, list[tuple[str, torch.Tensor]]]:
    """A trace to replay: ``trace``'s latent sites with each value z replaced by a fresh view of
    it (same values, same path), and the (site, view) pairs.

    A density that reads z only through its view has, at the view, its partial derivative in z.
    Freshness also keeps a transform's cache, keyed on the tensor, from handing back the
    forward pass's intermediate values (computed with φ, where φ̄ is wanted).
    """
    replay, views = poutine.Trace(), []
    for site in _sample_sites(trace):
        view = site["value"].view_as(site["value"])
        replay.add_node(site["name"], **{**site, "value": view})
        views.append((site["name"], view))
    return replay, views


def density_inputs(
    trace: poutine.Trace, views: bool = False
) -> tuple[poutine.Trace, list[tuple[str, torch.Tensor]]]:
    """What the model replays, and the (site, tensor) pairs at which the densities' partial
    derivatives in each z are taken (DReG's encoder term).

    One latent site: the trace itself and its z, since only the densities depend on it. Several
    (or ``views``): fresh views of each z (:func:`replay_views`), since z2 = g(ε2, z1, φ) depends
    on z1, and a gradient at z1 itself would count the path through z2 a second time. With
    ``views`` the model alone reads the views, log q the z's themselves (PIWAE reweights the
    model's partial derivatives only).
    """
    sites = _sample_sites(trace)
    if len(sites) == 1 and not views:
        return trace, [(sites[0]["name"], sites[0]["value"])]
    return replay_views(trace)


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
    views: bool = False,
) -> Particles:
    """z_k ~ q(z|x) for k = 1…K (one pass), then the model replayed at those z_k (at views of
    them with several latent sites or ``views``, see :func:`density_inputs`).

    ``detach_latents`` cuts z_k from φ (for score-function gradients: no reparameterization).
    """
    guide_trace = poutine.trace(vectorized(guide, num_particles, max_plate_nesting)).get_trace(
        *args, **kwargs
    )
    if detach_latents:
        for site in _sample_sites(guide_trace):
            site["value"] = site["value"].detach()
    guide_trace = prune_subsample_sites(guide_trace)  # drop the plates' own bookkeeping sites
    replay, inputs = density_inputs(guide_trace, views)
    replayed = poutine.replay(vectorized(model, num_particles, max_plate_nesting), trace=replay)
    model_trace = prune_subsample_sites(poutine.trace(replayed).get_trace(*args, **kwargs))
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    return Particles(
        model_trace,
        guide_trace,
        num_particles,
        log_p=_sum_log_probs(model_trace, num_particles),
        log_q=_sum_log_probs(guide_trace, num_particles),
        model=model,
        guide=guide,
        args=args,
        kwargs=kwargs,
        max_plate_nesting=max_plate_nesting,
        inputs=inputs,
    )


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) Σ_k exp(log_w_k), stably."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])
