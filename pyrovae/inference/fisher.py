"""The Fisher auto-encoder's objective (Elkhalil, Hasan, Ding, Farsiu & Tarokh, AISTATS 2021).

It minimizes the Fisher divergence between the data-and-encoder joint q(x, z) = p_d(x) q_φ(z|x)
and the model's joint p_θ(x, z) = p(z) p_θ(x|z), over both blocks of coordinates:

    F = ½ E_q ‖∇_(x,z) log q(x, z) − ∇_(x,z) log p_θ(x, z)‖².

The z-block holds no p_d: ∇_z log q(x, z) = ∇_z log q_φ(z|x). The x-block's unknown data score
∇_x log p_d goes by Hyvärinen's integration by parts, E_pd[∇ log p_d · s] = −E_pd[∇ · s] (the
density vanishing at the boundary), and E_q(z|x)[Δ_x log q + ‖∇_x log q‖²] = 0 (∫ q(z|x) dz = 1
for every x). Up to the constant ½ E‖∇_x log p_d‖², per datapoint and z ~ q_φ(z|x):

    J = ½ ‖∇_z log q_φ(z|x) − ∇_z log p_θ(x, z)‖²
      + ½ ‖∇_x log p_θ(x|z)‖² + Δ_x log p_θ(x|z)
      + ½ ‖∇_x log q_φ(z|x)‖²

(each gradient a partial derivative at the other variable held fixed; the authors' code has the
three terms, with Δ_x log p_θ(x|z) = −D for its N(x̂, I) decoder). The Laplacian is the trace of
a Hessian by autograd (:mod:`~pyrovae.inference.trace`): exact, in one extra pass when p_θ(x|z)
factorizes over pixels (every registered likelihood: H is then diagonal) and by D
Hessian-vector products otherwise, or by Hutchinson's estimator with ``probes`` Rademacher vectors.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions import Independent, MaskedDistribution
from pyro.infer import ELBO
from pyro.poutine.util import prune_subsample_sites

from pyrovae.core.errors import PyroVAEError
from pyrovae.inference.kinds import DEFAULT_KINDS, check_sites
from pyrovae.inference.trace import exact_trace, hutchinson_trace

TERMS = ("z_score", "x_score", "laplacian", "stability")


def factorizes(fn) -> bool:
    """Whether a likelihood's log-density is a sum of one term per coordinate of x (a univariate
    distribution reinterpreted as one event of D pixels): its Hessian in x is diagonal."""
    while isinstance(fn, MaskedDistribution):
        fn = fn.base_dist
    return isinstance(fn, Independent) and fn.base_dist.event_shape == torch.Size()


class Fisher(ELBO):
    """``fisher``: the Fisher AE's J, averaged over K = ``num_particles`` draws of z per
    datapoint, summed over the batch; ``probes``: Hutchinson's estimator of Δ_x with that many
    Rademacher vectors (None: exact). Not a bound: the loss is J, and training reports −J."""

    description = "Fisher AE (Elkhalil et al. 2021): Fisher divergence of the joints, not a bound"
    name = "fisher"
    objective = "−J (Fisher)"
    latent_kinds = DEFAULT_KINDS

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: int = 1,
        probes: int | None = None,
        **kwargs,
    ) -> None:
        if num_particles < 1:
            raise PyroVAEError(f"--num-particles must be at least 1, got {num_particles}")
        if probes is not None and probes < 1:
            raise PyroVAEError(f"--hutchinson-probes must be at least 1, got {probes}")
        kwargs.pop("vectorize_particles", None)  # the batch is repeated K times instead
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **kwargs)
        self.probes = probes

    def terms(self, model, guide, *args, **kwargs) -> dict[str, torch.Tensor]:
        """J's four terms, one value per datapoint and draw: (K·B,), the batch repeated K times
        (draw k of datapoint b at row k·B + b). Differentiable in θ and φ, z by its path."""
        k = self.num_particles
        args = tuple(_repeat(a, k) for a in args)
        kwargs = {name: _repeat(a, k) for name, a in kwargs.items()}
        x, rest = args[0], args[1:]
        with torch.enable_grad():
            guide_trace = prune_subsample_sites(  # z ~ q_φ(z|x)
                poutine.trace(guide).get_trace(x, *rest, **kwargs)
            )
            check_sites(guide_trace, self.latent_kinds, self.name)
            data = x.detach().requires_grad_(True)  # x as a variable: z is held fixed in it
            q_trace, p_trace = (
                prune_subsample_sites(
                    poutine.trace(poutine.replay(fn, trace=guide_trace)).get_trace(
                        data, *rest, **kwargs
                    )
                )
                for fn in (guide, model)
            )
            q_trace.compute_log_prob()
            p_trace.compute_log_prob()
            latents = [s for s in q_trace.nodes.values() if _latent(s)]
            observed = [s for s in p_trace.nodes.values() if _is_sample(s) and s["is_observed"]]
            for site in observed:
                _check_density(site)
            zs = [s["value"] for s in latents]
            log_q = _total(latents)
            log_p = _total([s for s in p_trace.nodes.values() if _is_sample(s)])
            log_lik = _total(observed)
            score_q = _grad(log_q, zs)
            score_p = _grad(log_p, zs)
            z_score = sum(
                0.5 * (a - b).pow(2).flatten(1).sum(-1)
                for a, b in zip(score_q, score_p, strict=True)
            )
            (dx_p,) = _grad(log_lik, [data])
            (dx_q,) = _grad(log_q, [data])
            if self.probes is None:
                diagonal = all(factorizes(s["fn"]) for s in observed)
                laplacian = exact_trace(dx_p, data, diagonal=diagonal)
            else:
                laplacian = hutchinson_trace(dx_p, data, self.probes)
        return {
            "z_score": z_score,
            "x_score": 0.5 * dx_p.pow(2).sum(-1),
            "laplacian": laplacian,
            "stability": 0.5 * dx_q.pow(2).sum(-1),
        }

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """Σ_b (1/K) Σ_k J(x_b, z_bk), differentiable in θ and φ."""
        return sum(self.terms(model, guide, *args, **kwargs).values()).sum() / self.num_particles

    def _get_trace(self, model, guide, args, kwargs):
        """(model trace, guide trace) of one draw z ~ q_φ(z|x), the model replayed at it."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        replayed = poutine.replay(model, trace=guide_trace)
        return poutine.trace(replayed).get_trace(*args, **kwargs), guide_trace

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def _repeat(a, k: int):
    """A batch tensor stacked k times along its first dimension (other arguments as they are)."""
    if k == 1 or not isinstance(a, torch.Tensor) or a.dim() == 0:
        return a
    return a.repeat(k, *([1] * (a.dim() - 1)))


def _is_sample(site) -> bool:
    return site["type"] == "sample"


def _latent(site) -> bool:
    return _is_sample(site) and not site["is_observed"]


def _total(sites) -> torch.Tensor:
    """Σ of the sites' log-densities, one per datapoint (B,)."""
    if not sites:
        raise PyroVAEError("the Fisher objective needs a latent site and an observed one")
    return sum(s["log_prob"] for s in sites)


def _grad(y: torch.Tensor, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """∂(Σ y)/∂x for each x (zeros where y does not depend on it), graph kept."""
    grads = torch.autograd.grad(y.sum(), xs, create_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads, strict=True)]


def _check_density(site) -> None:
    fn = site["fn"]
    try:
        discrete = fn.support.is_discrete
    except NotImplementedError:
        discrete = False
    if discrete:
        raise PyroVAEError(
            f"the Fisher objective needs a density in x, and the observed site {site['name']!r} "
            f"is {type(fn).__name__} over a discrete support: use a continuous likelihood "
            "(gaussian, gaussian-learned, continuous-bernoulli) on --pixels grey"
        )
