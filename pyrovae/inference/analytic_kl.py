"""The ELBO with the KL term in closed form (L^B of Kingma & Welling 2014)."""

from __future__ import annotations

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import is_recording
from pyrovae.inference.kl import analytic_kl, describe
from pyrovae.inference.particle_elbo import ParticleELBO, require_reparameterized
from pyrovae.inference.particles import Particles


class AnalyticKL(ParticleELBO):
    """``analytic-kl``: L^B = (1/K) Σ_k Σ_x log p(x|z_k) − Σ_z s_z KL(q(z|x) ‖ p(z)), per datapoint.

    x runs over the observed sites, z over the latent ones. Each latent site's KL comes from
    :func:`~pyrovae.inference.kl.analytic_kl`, times the site's scale s_z (a β-VAE puts β there);
    guide and model must scale a site alike. Where no closed form is known this refuses with one
    line instead of falling back to a Monte-Carlo KL, as Pyro's ``TraceMeanField_ELBO`` silently
    does; with a closed form it gives the same number under the same seed. The gradient is
    pathwise (the surrogate is the bound), so guide sites must be reparameterized.
    """

    description = "ELBO with KL(q ‖ p) in closed form: lower variance; an error where it has none"
    name = "analytic-kl"

    def per_particle(self, p: Particles) -> torch.Tensor:
        """Σ log p(x|z_k) − Σ s_z KL per particle and datapoint, (K, B)."""
        return kl_form(p, "analytic-kl")

    def bound(self, p: Particles) -> torch.Tensor:
        return self.per_particle(p).mean(0).sum()

    def surrogate(self, p: Particles, bound: torch.Tensor) -> torch.Tensor:
        require_reparameterized(p, "analytic-kl")
        return bound


def kl_form(p: Particles, name: str) -> torch.Tensor:
    """L^B per particle and datapoint, (K, B): Σ_x log p(x|z_k) − Σ_z s_z KL(q(z|x) ‖ p(z)),
    each latent site's KL in closed form (:func:`~pyrovae.inference.kl.analytic_kl`), s_z its
    scale; ``name`` is the estimator's, for the one-line errors."""
    _check_order(p, name)
    total = 0.0
    for site_name, site in p.model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            total = total + site["log_prob"]  # (K, B), scaled and masked
            continue
        guide_site = p.guide_trace.nodes.get(site_name)
        if guide_site is None or guide_site["type"] != "sample":
            raise PyroVAEError(
                f"{name} needs a guide site for every latent site; {site_name!r} has none"
            )
        total = total - _site_kl(name, site_name, guide_site, site)
    for site_name, site in p.guide_trace.nodes.items():
        if site["type"] == "sample" and site_name not in p.model_trace.nodes:
            raise PyroVAEError(f"{name}: guide site {site_name!r} is not in the model")
    if not isinstance(total, torch.Tensor) or total.dim() != 2:
        raise PyroVAEError(
            f"{name} needs every sample site inside one 'data' plate (local latents only)"
        )
    return total


def _site_kl(estimator: str, name: str, guide_site: dict, model_site: dict) -> torch.Tensor:
    q, prior = guide_site["fn"], model_site["fn"]
    kl = analytic_kl(q, prior)
    if kl is None:
        raise PyroVAEError(
            f"{estimator} has no closed-form KL between the guide's {describe(q)} and the "
            f"prior's {describe(prior)} at site {name!r}; use --estimator elbo"
        )
    scale = guide_site["scale"]
    if not _same_scale(scale, model_site["scale"]):
        raise PyroVAEError(
            f"{estimator} needs site {name!r} scaled alike in model and guide (a β on the "
            "latent site scales both)"
        )
    mask = guide_site["mask"]
    kl = kl * scale
    if mask is not None:
        kl = torch.where(mask, kl, kl.new_zeros(()))
    return kl.expand(guide_site["log_prob"].shape)  # (K, B): the same KL for every particle


def _check_order(p: Particles, estimator: str = "analytic-kl") -> None:
    """Each site's KL integrates z out given the z's the guide drew before it, so the model may
    condition a site only on those: with p(z1|z2) p(z2) and the guide drawing z1 before z2 (a
    hierarchical VAE), KL(q(z1|x) ‖ p(z1|z2)) has z2 depend on z1 itself, and no closed form."""
    guide_order = [
        name
        for name, site in p.guide_trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    ]
    drawn_before: list[str] = []
    for name, site in p.model_trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or name not in guide_order:
            continue
        later = [m for m in drawn_before if guide_order.index(m) > guide_order.index(name)]
        if later:
            raise PyroVAEError(
                f"{estimator} has no closed form for site {name!r}: the model draws it after "
                f"{later[0]!r} (p({name}|{later[0]})) but the guide draws {later[0]!r} after it "
                "(a hierarchical model); use --estimator elbo"
            )
        drawn_before.append(name)


def _same_scale(a, b) -> bool:
    if is_recording():  # a value check: it was made on the eager warm-up step of this graph
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return bool(torch.all(torch.as_tensor(a) == torch.as_tensor(b)))
    return a == b
