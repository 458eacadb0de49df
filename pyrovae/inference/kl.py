"""Closed-form KL(q ‖ p) between a guide's and a prior's distributions, when one is known.

Nothing is registered with ``torch.distributions.kl`` (no global side effects): Gaussian pairs,
diagonal or full covariance in either argument, and discrete codes (categorical or binary, also
through a relaxation) are computed here; everything else is asked of the KLs that torch and Pyro
already register.
"""

from __future__ import annotations

import pyro.distributions.kl  # noqa: F401  (Pyro registers its KLs with torch on import)
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import ExpandedDistribution
from torch.distributions import (
    Distribution,
    Independent,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from pyrovae.guides.discrete import Bernoullis, Categoricals, Relaxed


class _Gaussian:
    """N(loc, S Sᵀ) over the last dim: ``scale`` (…, d) is S's diagonal when ``diagonal``, else
    ``scale`` (…, d, d) is a lower Cholesky factor S. Tensors broadcast to the batch shape."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, diagonal: bool) -> None:
        self.loc, self.scale, self.diagonal = loc, scale, diagonal

    def tril(self) -> torch.Tensor:
        return torch.diag_embed(self.scale) if self.diagonal else self.scale

    def log_det_scale(self) -> torch.Tensor:
        """log |S| = ½ log |Σ|."""
        diag = self.scale if self.diagonal else self.scale.diagonal(dim1=-2, dim2=-1)
        return diag.log().sum(-1)

    def whiten(self, v: torch.Tensor) -> torch.Tensor:
        """S⁻¹ v for v (…, d, n)."""
        if self.diagonal:
            return v / self.scale.unsqueeze(-1)
        return torch.linalg.solve_triangular(self.scale, v, upper=False)


def _unexpand(d: Distribution) -> Distribution:
    while isinstance(d, ExpandedDistribution):
        d = d.base_dist
    return d


def _as_gaussian(d: Distribution) -> _Gaussian | None:
    """``d`` as a multivariate Gaussian over one event dim, through Pyro's expansion wrappers
    (a plate expands a site's distribution to batch (K, B)), or None."""
    shape = d.batch_shape + d.event_shape  # what the parameters must broadcast to
    if len(d.event_shape) != 1:
        return None
    inner = _unexpand(d)
    if isinstance(inner, MultivariateNormal):
        d_ = shape[-1]
        tril = inner.scale_tril.expand(*shape[:-1], d_, d_)
        return _Gaussian(inner.loc.expand(shape), tril, diagonal=False)
    if isinstance(inner, Independent) and inner.reinterpreted_batch_ndims == 1:
        base = _unexpand(inner.base_dist)
        if isinstance(base, Normal):
            return _Gaussian(base.loc.expand(shape), base.scale.expand(shape), diagonal=True)
    return None


def _gaussian_kl(q: _Gaussian, p: _Gaussian) -> torch.Tensor:
    """KL(N(μ_q, Σ_q) ‖ N(μ_p, Σ_p)) = ½[tr(Σ_p⁻¹Σ_q) + (μ_p − μ_q)ᵀΣ_p⁻¹(μ_p − μ_q) − d
    + log |Σ_p| − log |Σ_q|], with Σ = S Sᵀ: tr(Σ_p⁻¹Σ_q) = ‖S_p⁻¹ S_q‖²_F."""
    if q.diagonal and p.diagonal:  # ½ Σ_j (r_j + t_j − 1 − log r_j), r = σ_q²/σ_p², t = Δ²/σ_p²
        ratio = (q.scale / p.scale) ** 2
        maha = ((q.loc - p.loc) / p.scale) ** 2
        return 0.5 * (ratio + maha - 1 - ratio.log()).sum(-1)
    d = q.loc.shape[-1]
    trace = p.whiten(q.tril()).pow(2).sum((-2, -1))
    maha = p.whiten((p.loc - q.loc).unsqueeze(-1)).pow(2).sum((-2, -1))
    return 0.5 * (trace + maha - d) + p.log_det_scale() - q.log_det_scale()


def _as_code(d: Distribution) -> Distribution:
    """A discrete code through its expansion and relaxation wrappers (else ``d`` unexpanded)."""
    d = _unexpand(d)
    return _unexpand(d.base) if isinstance(d, Relaxed) else d


def _code_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL between two discrete codes of one kind, summed over the event:

    categorical, per group g: Σ_c π^q_gc (log π^q_gc − log π^p_gc);
    binary, per unit j, a = logit q_j, b = logit p_j:
    σ(a)(log σ(a) − log σ(b)) + σ(−a)(log σ(−a) − log σ(−b)).
    """
    q, p = _as_code(q), _as_code(p)
    if isinstance(q, Categoricals) and isinstance(p, Categoricals) and q.groups == p.groups:
        return (q.probs * (q.logits - p.logits)).sum(-1)
    if isinstance(q, Bernoullis) and isinstance(p, Bernoullis):
        a, b = q.logits, p.logits
        on = torch.sigmoid(a) * (F.logsigmoid(a) - F.logsigmoid(b))
        off = torch.sigmoid(-a) * (F.logsigmoid(-a) - F.logsigmoid(-b))
        return (on + off).sum(-1)
    return None


def analytic_kl(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """KL(q ‖ p) in closed form per batch element (the broadcast batch shape), or None.

    Gaussian pairs (diagonal ``Independent(Normal)`` or ``MultivariateNormal``, either way round,
    also when a plate has expanded them) use :func:`_gaussian_kl`; other pairs use a KL registered
    with torch/Pyro when there is one (e.g. Laplace ‖ Normal elementwise). For a ``Delta`` guide
    that is Pyro's convention −log p(v): the −∞ entropy dropped, as Trace_ELBO's log q = 0 does.
    Discrete codes of one kind (categorical with categorical, binary with binary, a relaxed
    one as its discrete code) use :func:`_code_kl`.
    """
    if q.event_shape != p.event_shape:
        raise ValueError(
            f"KL between distributions over different events: {tuple(q.event_shape)} and "
            f"{tuple(p.event_shape)}"
        )
    batch_shape = torch.broadcast_shapes(q.batch_shape, p.batch_shape)
    gq, gp = _as_gaussian(q), _as_gaussian(p)
    code = _code_kl(q, p)
    if gq is not None and gp is not None:
        kl = _gaussian_kl(gq, gp)
    elif code is not None:
        kl = code
    else:
        try:
            kl = kl_divergence(q, p)
        except NotImplementedError:
            return None
    return torch.as_tensor(kl).expand(batch_shape)


def describe(d: Distribution) -> str:
    """A distribution's type through its wrappers, e.g. ``Independent(Normal)``."""
    inner = _unexpand(d)
    base = getattr(inner, "base_dist", None)
    if base is not None and not isinstance(base, Distribution):
        base = None
    name = type(inner).__name__.lstrip("_")
    return f"{name}({describe(base)})" if base is not None else name
