"""Gradient variance and signal-to-noise ratio at fixed parameters (Rainforth et al. 2018).

SNR of a gradient component: |E[g]| / std[g], from M independent estimates on one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from pyro.infer import ELBO

from pyrovae.core.modules import buffers_kept


def default_groups(model, guide) -> dict[str, list[torch.nn.Parameter]]:
    """``encoder`` = the guide's parameters (φ), ``decoder`` = the model's other ones (θ);
    ``baseline`` = those of the guide's baseline network b_ψ (NVIL's), when it has one: not part
    of q, so not in ``encoder``.

    With several stochastic layers also ``encoder/z1``, ``encoder/z2``, … (the parameters of
    q(z_l|·)) and ``decoder/z1``, … (those of what z_l feeds: p(x|z1), p(z1|z2), …; the top
    one's include the prior), from the modules' ``layer_parameters()``.
    """
    baseline = getattr(guide, "baseline", None)
    psi = list(baseline.parameters()) if isinstance(baseline, torch.nn.Module) else []
    encoder = [p for p in guide.parameters() if id(p) not in {id(q) for q in psi}]
    shared = {id(p) for p in encoder}  # a VampPrior uses the encoder too: count it once
    groups = {
        "encoder": encoder,
        "decoder": [p for p in model.parameters() if id(p) not in shared],
    }
    if psi:
        groups["baseline"] = psi
    if len(getattr(guide, "sites", ())) > 1:
        for kind, module in (("encoder", guide), ("decoder", model)):
            for site, params in module.layer_parameters().items():
                groups[f"{kind}/{site}"] = params
    return groups


def gradient_statistics(
    model,
    guide,
    x: torch.Tensor,
    estimator: ELBO,
    num_samples: int = 100,
    groups: Mapping[str, Iterable[torch.nn.Parameter]] | None = None,
    y: torch.Tensor | None = None,
    on_sample: Callable[[], object] | None = None,
) -> dict[str, dict[str, float | torch.Tensor]]:
    """Draw ``num_samples`` gradients of ``estimator``'s loss on ``x`` and summarize each group.

    Per group: ``mean`` and ``variance`` (per component, flattened), ``snr`` (mean over
    components of abs(mean) / std), ``variance_mean`` (mean over components of the variance) and
    ``mean_norm`` ‖E[g]‖. Streaming (Welford) in float64; parameters are not changed, and
    buffers a step updates (NVIL's running average) are put back after each draw, so every draw
    is at the same state. Labels
    ``y`` go to a conditional model and guide; ``on_sample()`` is called after each draw
    (a progress bar's update).
    """
    if num_samples < 2:
        raise ValueError("gradient statistics need at least 2 samples")
    groups = {k: list(v) for k, v in (groups or default_groups(model, guide)).items()}
    params = list({id(p): p for ps in groups.values() for p in ps}.values())
    args = (x,) if y is None else (x, y)
    count, mean, m2 = 0, {}, {}
    for _ in range(num_samples):
        for p in params:
            p.grad = None
        with buffers_kept(m for m in (model, guide) if isinstance(m, torch.nn.Module)):
            estimator.loss_and_grads(model, guide, *args)
        count += 1
        for name, ps in groups.items():
            g = torch.cat(
                [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in ps]
            ).double()
            if name not in mean:
                mean[name], m2[name] = torch.zeros_like(g), torch.zeros_like(g)
            delta = g - mean[name]
            mean[name] += delta / count
            m2[name] += delta * (g - mean[name])
        if on_sample is not None:
            on_sample()
    for p in params:
        p.grad = None
    out = {}
    for name in groups:
        var = m2[name] / (count - 1)
        std = var.sqrt()
        keep = std > 0
        snr = (mean[name].abs()[keep] / std[keep]).mean().item() if keep.any() else float("inf")
        out[name] = {
            "mean": mean[name],
            "variance": var,
            "snr": snr,
            "variance_mean": var.mean().item(),
            "mean_norm": mean[name].norm().item(),
        }
    return out
