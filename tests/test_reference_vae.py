"""benchmarks/reference_vae.py's hand-written losses: IWAE with one particle is the ELBO, and
DReG has IWAE's value and decoder gradient but the w̃²-weighted encoder path gradient."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "reference_vae", ROOT / "benchmarks" / "reference_vae.py"
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

K = 5


def _vae_and_batch() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    vae = ref.ReferenceVAE(784, (32, 32), 4).double()
    return vae, torch.bernoulli(torch.full((8, 784), 0.3, dtype=torch.float64))


def _loss_and_grads(vae, x, name: str, k: int) -> tuple[torch.Tensor, list, list]:
    """The loss of ``LOSSES[name]`` under seed 1, and its gradient (decoder, encoder)."""
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss = ref.LOSSES[name](vae, x, k)
    loss.backward()
    grads = [[p.grad.clone() for p in net.parameters()] for net in (vae.decoder, vae.encoder)]
    return loss.detach(), *grads


def _close(a: list, b: list) -> bool:
    return all(torch.allclose(u, v, rtol=1e-5, atol=1e-9) for u, v in zip(a, b, strict=True))


def test_iwae_with_one_particle_is_the_elbo():
    vae, x = _vae_and_batch()
    elbo, *elbo_grads = _loss_and_grads(vae, x, "elbo", 1)
    iwae, *iwae_grads = _loss_and_grads(vae, x, "iwae", 1)
    torch.testing.assert_close(iwae, elbo, rtol=1e-12, atol=0)
    assert all(_close(a, b) for a, b in zip(iwae_grads, elbo_grads, strict=True))


def test_dreg_has_iwaes_value_and_decoder_gradient_and_the_dreg_encoder_gradient():
    vae, x = _vae_and_batch()
    iwae, iwae_dec, iwae_enc = _loss_and_grads(vae, x, "iwae", K)
    dreg, dreg_dec, dreg_enc = _loss_and_grads(vae, x, "iwae-dreg", K)
    torch.testing.assert_close(dreg, iwae, rtol=1e-10, atol=0)
    assert _close(dreg_dec, iwae_dec)
    assert not _close(dreg_enc, iwae_enc)

    # independently: −Σ_k w̃_k² ∂log w_k/∂z_k ∂z_k/∂φ, log q at stop-grad(μ, σ)
    torch.manual_seed(1)
    loc, scale = vae.posterior(x)
    z = loc + scale * torch.randn((K, *loc.shape), dtype=loc.dtype)
    q = torch.distributions.Normal(loc.detach(), scale.detach())
    prior = torch.distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
    log_w = vae.log_likelihood(x, z) + (prior.log_prob(z) - q.log_prob(z)).sum(-1)
    (dlogw_dz,) = torch.autograd.grad(log_w.sum(), z, retain_graph=True)
    w = torch.softmax(log_w.detach(), dim=0).unsqueeze(-1)
    path = -(w**2 * dlogw_dz * z).sum()
    expected = torch.autograd.grad(path, list(vae.encoder.parameters()))
    assert _close(dreg_enc, list(expected))
