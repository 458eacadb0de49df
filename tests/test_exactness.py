"""Pyro's losses on our model and guide equal a hand-written loss that uses the same noise."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyrovae import TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.guides.families import MIN_SCALE

B, D_LATENT, SEED = 16, 4, 123
LOG_2PI = math.log(2 * math.pi)


def _setup(device, seed=0):
    set_seed(seed)
    model, guide = build_model_and_guide(TrainConfig(hidden=(32, 24), latent_dim=D_LATENT), 784)
    model.to(device)
    guide.to(device)
    x = torch.bernoulli(torch.rand(B, 784, device=device))
    return model, guide, x


def hand_loss(model, guide, x, particles, analytic_kl, detach_z=False):
    """−ELBO summed over the batch, averaged over K particles; eps drawn as Pyro draws it."""
    loc, rho = guide.encoder(x).chunk(2, dim=-1)  # (B, d)
    scale = F.softplus(rho) + MIN_SCALE
    shape = (particles, *loc.shape) if particles > 1 else loc.shape
    eps = torch.randn(shape, device=x.device)
    z = loc + scale * eps  # (K, B, d) or (B, d)
    z_in = z.detach() if detach_z else z
    logits = model.decoder(z_in)
    log_lik = -F.binary_cross_entropy_with_logits(
        logits, x.expand_as(logits), reduction="none"
    ).sum(-1)
    if analytic_kl:
        kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)  # (B,)
    else:
        log_prior = -0.5 * (z_in**2 + LOG_2PI).sum(-1)
        log_q = (-0.5 * eps**2 - scale.log() - 0.5 * LOG_2PI).sum(-1)
        kl = log_q - log_prior
    per_particle = -(log_lik - kl).sum(-1)  # sum over the batch
    return per_particle.mean() if particles > 1 else per_particle, log_lik, kl


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("name,analytic", [("elbo", False), ("analytic-kl", True)])
def test_loss_equals_hand_written(device, particles, name, analytic):
    model, guide, x = _setup(device)
    estimator = make_estimator(name, particles)
    set_seed(SEED)
    pyro_loss = estimator.loss(model, guide, x)
    set_seed(SEED)
    with torch.no_grad():
        expected = hand_loss(model, guide, x, particles, analytic)[0].item()
    assert pyro_loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,analytic", [("elbo", False), ("analytic-kl", True)])
def test_gradients_equal_hand_written(device, name, analytic):
    model, guide, x = _setup(device)
    params = [*model.parameters(), *guide.parameters()]
    set_seed(SEED)
    make_estimator(name).loss_and_grads(model, guide, x)
    pyro_grads = [p.grad.clone() for p in params]
    set_seed(SEED)
    loss = hand_loss(model, guide, x, 1, analytic)[0]
    hand_grads = torch.autograd.grad(loss, params)
    for got, want in zip(pyro_grads, hand_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_encoder_gradient_flows_through_z():
    """∇_φ of the reconstruction term is pathwise (through z = μ + σε), and Pyro includes it."""
    model, guide, x = _setup("cpu")
    enc = list(guide.encoder.parameters())
    set_seed(SEED)
    make_estimator("analytic-kl").loss_and_grads(model, guide, x)
    pyro_enc = torch.cat([p.grad.flatten() for p in enc])

    def enc_grad(term: str, detach_z: bool = False) -> torch.Tensor:
        set_seed(SEED)
        _, log_lik, kl = hand_loss(model, guide, x, 1, True, detach_z)
        target = -log_lik.sum() if term == "recon" else kl.sum()
        grads = torch.autograd.grad(target, enc, allow_unused=True)
        return torch.cat(
            [
                (g if g is not None else torch.zeros_like(p)).flatten()
                for g, p in zip(grads, enc, strict=True)
            ]
        )

    recon, kl = enc_grad("recon"), enc_grad("kl")
    assert recon.norm() > 0.1 * kl.norm() > 0  # the reconstruction term reaches the encoder
    torch.testing.assert_close(pyro_enc, recon + kl, rtol=1e-4, atol=1e-5)
    # with z detached the encoder would see the KL alone: Pyro's gradient is not that
    assert enc_grad("recon", detach_z=True).norm() == 0
    assert (pyro_enc - kl).norm() > 0.5 * recon.norm()


def test_guide_sample_is_reparameterized():
    model, guide, x = _setup("cpu")
    tr = poutine.trace(guide).get_trace(x)
    site = tr.nodes["z"]
    assert site["fn"].has_rsample and site["value"].requires_grad
    (g,) = torch.autograd.grad(site["value"].sum(), guide.encoder.net[0].weight)
    assert g.abs().sum() > 0


def test_parameters_stay_out_of_the_param_store():
    pyro.clear_param_store()
    model_a, guide_a, x = _setup("cpu", seed=1)
    model_b, guide_b, _ = _setup("cpu", seed=2)
    for m, g in ((model_a, guide_a), (model_b, guide_b)):
        make_estimator("elbo").loss_and_grads(m, g, x)
    assert len(pyro.get_param_store()) == 0
    # same attribute names, yet the two models keep their own weights
    wa, wb = model_a.decoder.net[0].weight, model_b.decoder.net[0].weight
    assert not torch.equal(wa, wb)
    assert not pyro.settings.get("module_local_params")  # the user's setting is left alone


def test_elbo_module_with_plain_torch_optimizer():
    """Pyro's ELBOModule interface: ``Trace_ELBO()(model, guide)`` is an nn.Module loss."""
    model, guide, x = _setup("cpu")
    elbo = Trace_ELBO()(model, guide)
    params = list(elbo.parameters())
    assert len(params) == len(list(model.parameters())) + len(list(guide.parameters()))
    opt = torch.optim.Adam(params, lr=1e-2)
    set_seed(0)
    before = sum(elbo(x).item() for _ in range(20)) / 20
    for _ in range(100):
        opt.zero_grad()
        elbo(x).backward()
        opt.step()
    after = sum(elbo(x).item() for _ in range(20)) / 20
    assert after < before - 100  # per batch of 16: > 6 nats per image better
