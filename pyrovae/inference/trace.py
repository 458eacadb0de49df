"""The trace of a Hessian ∇²f(x) by autograd, row by row: exactly, or by Hutchinson's estimator.

Each takes g = ∇_x f(x) (computed with ``create_graph=True``) and x, both (B, D), rows
independent (f = Σ_b f_b(x_b)), and returns tr ∇²f_b(x_b) per row, (B,), differentiable.

- :func:`exact_trace`: Σ_i ∂g_i/∂x_i by D Hessian-vector products H e_i in one batched pass; with
  ``diagonal=True`` (f separable in the coordinates, so H is diagonal) by one pass, ∇(1ᵀg) = H1.
- :func:`hutchinson_trace`: (1/N) Σ_n v_nᵀ H v_n with Rademacher v_n (Hutchinson 1989):
  unbiased, E[v vᵀ] = I, and of variance 2 Σ_{i≠j} H_ij² per probe, so exact when H is diagonal.
"""

from __future__ import annotations

import torch

from pyrovae.core.errors import PyroVAEError


def exact_trace(g: torch.Tensor, x: torch.Tensor, diagonal: bool = False) -> torch.Tensor:
    """tr ∂g/∂x per row of ``x`` (B, D); ``diagonal``: ∂g_i/∂x_j = 0 for i ≠ j is known."""
    if diagonal:
        (h1,) = torch.autograd.grad(g.sum(), x, create_graph=True)
        return h1.sum(-1)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    probes = eye[:, None, :].expand(x.shape[-1], *x.shape).contiguous()  # (D, B, D): e_i per row
    (hv,) = torch.autograd.grad(g, x, probes, create_graph=True, is_grads_batched=True)
    return torch.diagonal(hv, dim1=0, dim2=-1).sum(-1)  # Σ_i (H e_i)_i, (B,)


def hutchinson_trace(
    g: torch.Tensor, x: torch.Tensor, probes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(1/N) Σ_n v_nᵀ (∂g/∂x) v_n per row, N = ``probes`` Rademacher vectors (B, D) each."""
    if probes < 1:
        raise PyroVAEError(f"Hutchinson's estimator needs at least 1 probe, got {probes}")
    signs = torch.randint(0, 2, (probes, *x.shape), generator=generator, device=x.device)
    v = (2 * signs - 1).to(x.dtype)  # ±1
    (hv,) = torch.autograd.grad(g, x, v, create_graph=True, is_grads_batched=True)
    return (v * hv).sum(-1).mean(0)
