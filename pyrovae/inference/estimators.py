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
- ``miwae:M``, ``ciwae:β``, ``piwae:M`` (Rainforth et al. 2018,
  :mod:`~pyrovae.inference.iwae_variants`): MIWAE(M, K), CIWAE(β), PIWAE(M, K) with
  K = ``--num-particles``; a parameter follows the name after a colon (``miwae:4``).
- ``fisher`` (:mod:`~pyrovae.inference.fisher`): the Fisher auto-encoder's objective, the Fisher
  divergence of p_θ(x, z) from p_d(x) q_φ(z|x) by Hyvärinen's score; not a bound.
- for discrete codes: ``enumerate`` (the exact sum over the code's states), ``gumbel-softmax``
  and ``straight-through`` (relaxed draws at an annealed temperature).

Each entry declares in ``latent_kinds`` the kinds of latent site it applies to
(:mod:`~pyrovae.inference.kinds`; continuous alone when it does not say): the pathwise ones
refuse a discrete guide site, the discrete ones a continuous site, the score function takes both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyro.infer import ELBO, Trace_ELBO

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.inference.analytic_kl import AnalyticKL
from pyrovae.inference.enumerate import Enumerate
from pyrovae.inference.fisher import Fisher
from pyrovae.inference.iwae import IWAE, DReG
from pyrovae.inference.iwae_variants import CIWAE, MIWAE, PIWAE
from pyrovae.inference.kinds import CONTINUOUS, DEFAULT_KINDS, DISCRETE, check_sites
from pyrovae.inference.nvil import NVIL
from pyrovae.inference.relaxed import GumbelSoftmax, StraightThrough
from pyrovae.inference.rws import RWS
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
    "miwae": MIWAE,
    "ciwae": CIWAE,
    "piwae": PIWAE,
    "fisher": Fisher,
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
"""Estimators by name (``--estimator``): name ↦ the class (or function) making its Pyro ELBO."""


def parse_estimator(spec: str) -> tuple[Callable[..., ELBO], dict[str, Any]]:
    """The registry entry that ``spec`` names and its keyword options: ``name`` or
    ``name:PARAMETER`` for an entry that declares one (``option``, its keyword, and ``parse``,
    which checks it: ``miwae:8``, ``ciwae:0.5``)."""
    name, colon, text = spec.partition(":")
    entry = lookup(ESTIMATORS, name, "estimator")
    if not colon:
        return entry, {}
    option = getattr(entry, "option", None)
    if option is None:
        takes = ", ".join(n for n, e in ESTIMATORS.items() if getattr(e, "option", None))
        raise PyroVAEError(
            f"estimator {name!r} takes no parameter ({spec!r}); those that do: {takes}"
        )
    return entry, {option: entry.parse(text)}


def estimator_entry(spec: str) -> Callable[..., ELBO]:
    """The registry entry of ``spec`` (``name`` or ``name:PARAMETER``), its parameter checked."""
    return parse_estimator(spec)[0]


def make_estimator(name: str, num_particles: int = 1, **options: Any) -> ELBO:
    """Estimator ``name`` (``name:PARAMETER`` where it takes one) with K = ``num_particles``
    samples per datapoint (per bound for ``miwae``/``piwae``), vectorized for K > 1;
    ``options``: keywords of the estimator's own (``fisher``'s ``probes``).

    The losses are summed over the data plate: divide by the batch size for per-datapoint nats.
    """
    factory, spec_options = parse_estimator(name)
    if num_particles < 1:
        raise PyroVAEError(f"--num-particles must be at least 1, got {num_particles}")
    return factory(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=1,  # the "data" plate; particles go in dim -2
        **spec_options,
        **options,
    )
