"""Which estimators apply to which latent sites: ``continuous`` or ``discrete``.

An estimator (a class or a factory in ``ESTIMATORS``) declares the kinds of guide site it
applies to in ``latent_kinds``; one that does not say applies to continuous sites alone (a
pathwise gradient needs z = g_φ(ε, x)). A site's kind is read from its distribution: discrete
when its support is (a relaxation declares its discrete code's support). Pyro's own ELBOs would
otherwise differentiate a discrete site silently by an unbaselined score function.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch.distributions import Distribution

from pyrovae.core.errors import PyroVAEError

CONTINUOUS, DISCRETE = "continuous", "discrete"
KINDS = frozenset({CONTINUOUS, DISCRETE})
DEFAULT_KINDS = frozenset({CONTINUOUS})


def estimator_kinds(estimator: object) -> frozenset[str]:
    """The kinds of latent site ``estimator`` (a registry entry or an instance) applies to."""
    kinds = frozenset(getattr(estimator, "latent_kinds", DEFAULT_KINDS))
    unknown = kinds - KINDS
    if unknown:
        raise ValueError(f"latent_kinds holds unknown kinds {sorted(unknown)}; use {sorted(KINDS)}")
    return kinds


def site_kind(fn: Distribution) -> str:
    """``discrete`` for a distribution over a discrete support, else ``continuous``."""
    try:
        return DISCRETE if fn.support.is_discrete else CONTINUOUS
    except NotImplementedError:  # a distribution that declares no support
        return CONTINUOUS


def applicable(registry: dict[str, object], kind: str) -> list[str]:
    """The names in ``registry`` that apply to sites of ``kind``, in registry order."""
    return [name for name, entry in registry.items() if kind in estimator_kinds(entry)]


def check_sites(trace, kinds: Iterable[str], name: str) -> None:
    """Refuse, in one line, a latent site of ``trace`` whose kind ``name`` does not apply to."""
    kinds = frozenset(kinds)
    for site in trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        kind = site_kind(site["fn"])
        if kind not in kinds:
            raise PyroVAEError(refusal(name, kind, site["name"]))


def refusal(name: str, kind: str, site: str = "z") -> str:
    """The one line that says estimator ``name`` does not apply to a site of ``kind`` (the
    configuration's own check lists the registered estimators that do)."""
    why = {
        DISCRETE: "its gradient is pathwise, and a discrete z has no path to φ (use enumerate, "
        "gumbel-softmax, straight-through or a score-function estimator)",
        CONTINUOUS: "it is for discrete codes (--guide categorical or bernoulli)",
    }[kind]
    return f"{name} does not apply to the {kind} latent site {site!r}: {why}"
