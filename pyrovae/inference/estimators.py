"""ELBO estimators by name. Each keeps Pyro's contract: ``loss``, ``differentiable_loss``,
``loss_and_grads`` (so SVI-style steps, ``ELBOModule`` and plain torch loops all work).

- ``elbo`` (Trace_ELBO, L^A): (1/K) Σ_k [log p(x, z_k) − log q(z_k|x)], z_k = g_φ(ε_k, x).
- ``analytic-kl`` (L^B, Pyro's TraceMeanField_ELBO without its silent Monte-Carlo fallback):
  (1/K) Σ_k log p(x|z_k) − KL(q(z|x) ‖ p(z)), an error where no closed-form KL exists.
- ``iwae``: L_K = log (1/K) Σ_k w_k per datapoint; ``iwae-dreg``: its doubly-reparameterized
  encoder gradient; ``elbo-stl``: L^A with the sticking-the-landing gradient;
  ``score-function`` (``-loo``: leave-one-out baseline): L^A by the log-derivative trick.
- For discrete latents (score-function style, any guide site with sample and log_prob):
  ``nvil`` (L^A, learned baseline c + b_ψ(x)), ``vimco`` (L_K, K ≥ 2, leave-one-out baselines),
  ``rws`` (reweighted wake-sleep, K ≥ 2: θ on L_K, φ by the wake-φ update).
- for discrete codes: ``enumerate`` (the exact sum over the code's states), ``gumbel-softmax``
  and ``straight-through`` (relaxed draws at an annealed temperature).

Each entry declares in ``latent_kinds`` the kinds of latent site it applies to
(:mod:`~pyrovae.inference.kinds`; continuous alone when it does not say): the pathwise ones
refuse a discrete guide site, the discrete ones a continuous site, the score function takes both.
"""

from __future__ import annotations

from collections.abc import Callable

from pyro.infer import ELBO, Trace_ELBO

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.inference.analytic_kl import AnalyticKL
from pyrovae.inference.enumerate import Enumerate
from pyrovae.inference.iwae import IWAE, DReG
from pyrovae.inference.nvil import NVIL
from pyrovae.inference.rws import RWS
from pyrovae.inference.kinds import CONTINUOUS, DEFAULT_KINDS, DISCRETE, check_sites
from pyrovae.inference.relaxed import GumbelSoftmax, StraightThrough
from pyrovae.inference.score_function import ScoreFunctionELBO
from pyrovae.inference.stl import STL
from pyrovae.inference.vimco import VIMCO


class PathwiseTraceELBO(Trace_ELBO):
    """Pyro's Trace_ELBO that refuses a discrete guide site in one line: Trace_ELBO itself
    would differentiate one by an unbaselined score function, silently."""

    name = "elbo"
    latent_kinds = DEFAULT_KINDS

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        check_sites(guide_trace, self.latent_kinds, self.name)
        return model_trace, guide_trace


def trace_elbo(**kwargs) -> Trace_ELBO:
    """ELBO (1/K) Σ_k log w_k with pathwise gradients: Pyro's Trace_ELBO, the default."""
    return PathwiseTraceELBO(**kwargs)


trace_elbo.latent_kinds = DEFAULT_KINDS


def score_function_loo(**kwargs) -> ScoreFunctionELBO:
    """score-function with the leave-one-out baseline (K ≥ 2): much lower variance."""
    return ScoreFunctionELBO(baseline="leave-one-out", **kwargs)


score_function_loo.latent_kinds = frozenset({CONTINUOUS, DISCRETE})

ESTIMATORS: dict[str, Callable[..., ELBO]] = {
    "elbo": trace_elbo,
    "analytic-kl": AnalyticKL,
    "iwae": IWAE,
    "iwae-dreg": DReG,
    "elbo-stl": STL,
    "score-function": ScoreFunctionELBO,
    "score-function-loo": score_function_loo,
    "nvil": NVIL,
    "vimco": VIMCO,
    "rws": RWS,
    "enumerate": Enumerate,
    "gumbel-softmax": GumbelSoftmax,
    "straight-through": StraightThrough,
}


def make_estimator(name: str, num_particles: int = 1) -> ELBO:
    """Estimator ``name`` with K = ``num_particles`` samples per datapoint, vectorized for K > 1.

    The losses are summed over the data plate: divide by the batch size for per-datapoint nats.
    """
    factory = lookup(ESTIMATORS, name, "estimator")
    if num_particles < 1:
        raise PyroVAEError(f"--num-particles must be at least 1, got {num_particles}")
    return factory(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=1,  # the "data" plate; particles go in dim -2
    )
