"""Estimators on guides whose sites depend on each other: q(z1|x) q(z2|z1).

Stop-gradient on φ alone (log q_φ̄ with every z keeping its path through the earlier z's) and
DReG's total derivative, checked against the exact hierarchical linear-Gaussian model, against
IWAE on paired draws, and against textbook STL / DReG written out here; and the flow guide,
whose transforms are modules. float64 except for the flow (Pyro's IAF inverts in float32).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_linear_gaussian import Z, _replicated_bound
from torch import nn
from torch.distributions import Normal

from pyrovae import TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.core.modules import LocalPyroModule
from pyrovae.guides.families import loc_and_scale
from pyrovae.inference import draw_particles
from pyrovae.inference.iwae import IWAE, DReG
from pyrovae.inference.particles import detach_distribution
from pyrovae.models.linear_gaussian import HierarchicalLinearGaussian, HierarchicalLinearGuide

F64 = torch.float64
D, D1, D2 = 4, 2, 2
# the unbiasedness check: |mean paired difference| < Z_PAIRED s.e. for every parameter
Z_PAIRED = 3.5


def hierarchical_model(seed: int = 0) -> HierarchicalLinearGaussian:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)

    return HierarchicalLinearGaussian(randn(D1, D2), randn(D1), 0.6, randn(D, D1), randn(D), 0.5)


def data(model: HierarchicalLinearGaussian, n: int, seed: int = 1) -> torch.Tensor:
    """n draws from p(x), from their own generator."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        px = model.marginal()
        return px.loc + torch.randn(n, D, generator=g, dtype=F64) @ px.scale_tril.T


def zero_grads(*modules) -> None:
    for m in modules:
        for p in m.parameters():
            p.grad = None


# ---- the model and its exact two-site posterior ---------------------------------------------


def test_log_marginal_and_posterior_are_those_of_the_joint_gaussian():
    """x = W(V z2 + c + τ e1) + b + σ e2: the joint Gaussian of (z2, z1, x) built here from the
    structural equations gives log p(x) and, by conditioning, p(z1|x) and p(z2|z1)."""
    model = hierarchical_model()
    x = data(model, 7)
    V, c, tau = model.top.W, model.top.b, model.top.sigma
    W, b, sigma = model.W, model.b, model.sigma

    # (z2, e1, e2) ~ N(0, I); (z2, z1, x) = M (z2, e1, e2) + offset
    def eye(n):
        return torch.eye(n, dtype=F64)

    def zero(*shape):
        return torch.zeros(*shape, dtype=F64)

    M = torch.cat(
        [
            torch.cat([eye(D2), zero(D2, D1), zero(D2, D)], 1),
            torch.cat([V, tau * eye(D1), zero(D1, D)], 1),
            torch.cat([W @ V, tau * W, sigma * eye(D)], 1),
        ]
    ).detach()
    offset = torch.cat([zero(D2), c, W @ c + b]).detach()
    cov = M @ M.T
    sx, s1 = slice(D2 + D1, None), slice(D2, D2 + D1)
    expected = dist.MultivariateNormal(offset[sx], cov[sx, sx]).log_prob(x)
    torch.testing.assert_close(model.log_marginal(x).detach(), expected)
    (A1, m1, cov1), (A2, m2, cov2) = [[t.detach() for t in m] for m in model.posterior_maps()]
    gain = cov[s1, sx] @ torch.linalg.inv(cov[sx, sx])
    torch.testing.assert_close(x @ A1.T + m1, offset[s1] + (x - offset[sx]) @ gain.T)
    torch.testing.assert_close(cov1, cov[s1, s1] - gain @ cov[sx, s1])
    s2 = slice(0, D2)
    gain2 = cov[s2, s1] @ torch.linalg.inv(cov[s1, s1])
    torch.testing.assert_close(A2, gain2)
    torch.testing.assert_close(m2, -gain2 @ offset[s1])
    torch.testing.assert_close(cov2, cov[s2, s2] - gain2 @ cov[s1, s2])


def test_the_exact_guide_makes_log_w_log_px_at_any_point():
    """log p(x, z1, z2) − log q(z1, z2|x) = log p(x) for arbitrary (z1, z2), not only draws."""
    model = hierarchical_model()
    guide = HierarchicalLinearGuide.exact(model)
    x = data(model, 5)
    g = torch.Generator().manual_seed(3)
    z1 = 3 * torch.randn(5, D1, generator=g, dtype=F64)
    z2 = 3 * torch.randn(5, D2, generator=g, dtype=F64)
    data_ = {"z1": z1, "z2": z2}
    model_tr = pyro.poutine.trace(pyro.poutine.condition(model, data_)).get_trace(x)
    guide_tr = pyro.poutine.trace(pyro.poutine.condition(guide, data_)).get_trace(x)
    log_w = model_tr.log_prob_sum() - guide_tr.log_prob_sum()
    assert log_w.item() == pytest.approx(model.log_marginal(x).sum().item(), rel=1e-12)


@pytest.mark.parametrize("name", ["elbo", "iwae", "elbo-stl", "iwae-dreg"])
def test_exact_two_site_posterior_makes_the_estimators_exact(name):
    """Every bound is log p(x) with zero variance; STL's and DReG's encoder gradients are zero
    for every draw (log w = log p(x) at φ̄ for every z), while the score term left in the
    ELBO's / IWAE's gradient is not (mean zero only)."""
    model = hierarchical_model()
    guide = HierarchicalLinearGuide.exact(model)
    x = data(model, 6)
    exact = -model.log_marginal(x).sum().item()
    losses, encoder = [], []
    for seed in range(3):
        zero_grads(model, guide)
        set_seed(seed)
        losses.append(make_estimator(name, 5).loss_and_grads(model, guide, x))
        encoder.append(max(p.grad.abs().max().item() for p in guide.parameters()))
    assert losses == pytest.approx([exact] * 3, rel=1e-10)
    if name in ("elbo-stl", "iwae-dreg"):
        assert max(encoder) < 1e-9
    else:
        assert min(encoder) > 1e-2


def test_bounds_are_ordered_with_an_imperfect_two_site_guide():
    """ELBO < L_5 < L_50 < log p(x), each gap many standard errors wide."""
    model = hierarchical_model()
    guide = HierarchicalLinearGuide.exact(model)
    with torch.no_grad():  # off the posterior in both sites
        guide.m1 += 0.4
        guide.L1 *= 1.6
        guide.A2 *= 0.7
        guide.L2 *= 1.5
    x = data(model, 10)
    log_px = model.log_marginal(x).sum().item()
    bounds = {k: _replicated_bound(model, guide, x, k, reps) for k, reps in ((1, 4000), (5, 800))}
    bounds[50] = _replicated_bound(model, guide, x, 50, 200)
    (m1, se1), (m5, se5), (m50, se50) = bounds[1], bounds[5], bounds[50]
    assert m5 - m1 > Z * math.hypot(se1, se5)
    assert m50 - m5 > Z * math.hypot(se5, se50)
    assert log_px - m50 > Z * se50


# ---- DReG against IWAE on paired draws ---------------------------------------------------------


class LocalTwoSiteGuide(LocalPyroModule):
    """q(z1|x) q(z2|z1) = N(μ, s1²) N(a ⊙ z1 + m, s2²) per dimension, s = exp(log s).

    Each of the R datapoints has its own copy of the parameters, all equal: row r of each
    parameter's gradient is then the gradient of datapoint r alone, R independent draws from
    one call (given R copies of one x).
    """

    def __init__(self, rows: int, mu, log_s1, a, m, log_s2) -> None:
        super().__init__()
        values = (mu, log_s1, a, m, log_s2)
        self.mu, self.log_s1, self.a, self.m, self.log_s2 = (
            nn.Parameter(torch.as_tensor(v, dtype=F64).expand(rows, -1).clone()) for v in values
        )

    def q1(self) -> dist.Distribution:
        return dist.Normal(self.mu, self.log_s1.exp()).to_event(1)

    def q2(self, z1: torch.Tensor) -> dist.Distribution:
        return dist.Normal(self.a * z1 + self.m, self.log_s2.exp()).to_event(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", self.q1())  # (K, R, d1)
            return pyro.sample("z2", self.q2(z1))


def local_setup(rows: int):
    """The model, R copies of one x, and a two-site guide well off its posterior (so that the
    encoder gradient is large and the biased variants below are visibly biased)."""
    model = hierarchical_model()
    x = data(model, 1).expand(rows, -1)
    (A1, m1, cov1), (A2, m2, cov2) = [[t.detach() for t in m] for m in model.posterior_maps()]
    mu = (x[0] @ A1.T + m1) + 0.5
    log_s1 = 0.5 * cov1.diagonal().log() + 0.4
    a = A2.diagonal() * 0.5
    log_s2 = 0.5 * cov2.diagonal().log() + 0.3
    guide = LocalTwoSiteGuide(rows, mu, log_s1, a, m2 + 0.3, log_s2)
    return model, guide, x


def per_row_grads(estimator, model, guide, x, seed: int):
    """(R, P): datapoint r's gradient of every guide parameter component; and θ's gradients."""
    zero_grads(model, guide)
    set_seed(seed)
    estimator.loss_and_grads(model, guide, x)
    rows = torch.cat([p.grad for p in guide.parameters()], dim=1)
    return rows, [p.grad.clone() for p in model.parameters()]


class WrongWeights(DReG):
    """A deliberately wrong DReG: w̃ where the unbiased estimator has w̃² (the path gradient of
    IWAE without its score term, which is not zero in expectation for K > 1)."""

    @staticmethod
    def encoder_weights(w: torch.Tensor) -> torch.Tensor:
        return w


class PerSiteDetached(IWAE):
    """DReG as it was before: each site's distribution detached, which cuts z1's path into
    log q(z2|z1) (its loc a z1 + m), and each site's gradient taken at the sampled z (a total
    derivative: z1's includes the path through z2, which ⟨g2, z2⟩ counts again)."""

    def surrogate(self, p, bound):
        sites = [s for s in p.guide_trace.nodes.values() if s["type"] == "sample"]
        log_q = sum(detach_distribution(s["fn"]).log_prob(s["value"]) for s in sites)
        log_w = p.log_p - log_q
        w = torch.softmax(log_w.detach(), dim=0)
        zs = [s["value"] for s in sites]
        grads = torch.autograd.grad(((w * w - w) * log_w).sum(), zs, retain_graph=True)
        pairs = zip(grads, zs, strict=True)
        return (w * log_w).sum() + sum((g.detach() * z).sum() for g, z in pairs)


def paired_z_scores(variant, rows: int = 2000, k: int = 5, seed: int = 0) -> torch.Tensor:
    """|mean_r (g_variant − g_iwae)| / s.e. per guide parameter component, over R paired draws
    (the same noise for both, by seed), with s.e. = std_r(difference) / √R."""
    model, guide, x = local_setup(rows)
    iwae, _ = per_row_grads(make_estimator("iwae", k), model, guide, x, seed)
    other, _ = per_row_grads(variant(num_particles=k, max_plate_nesting=1), model, guide, x, seed)
    diff = other - iwae  # (R, P)
    return diff.mean(0).abs() / (diff.std(0) / math.sqrt(rows))


def test_dreg_encoder_gradient_is_unbiased_for_iwaes_on_a_two_site_guide():
    """Every parameter within Z_PAIRED s.e. over 2000 paired draws; the same check rejects the
    deliberately wrong w̃ weights (by tens of standard errors)."""
    z = paired_z_scores(DReG)
    assert (z < Z_PAIRED).all(), z
    wrong = paired_z_scores(WrongWeights)
    assert (wrong > Z_PAIRED).any(), wrong


def test_per_site_detaching_is_not_the_stop_gradient():
    """At the exact posterior DReG's encoder gradient is zero for every draw (see above); the
    per-site-detached DReG it replaced is not, because it cuts z1's path into log q(z2|z1).
    (Its bias against IWAE is small in the paired setup above: about 6 s.e. over 10⁵ draws.)"""
    model = hierarchical_model()
    guide = HierarchicalLinearGuide.exact(model)
    x = data(model, 6)
    zero_grads(model, guide)
    set_seed(0)
    PerSiteDetached(num_particles=5, max_plate_nesting=1).loss_and_grads(model, guide, x)
    assert max(p.grad.abs().max().item() for p in guide.parameters()) > 1e-2


def test_dreg_decoder_gradient_is_iwaes_on_the_same_noise():
    model, guide, x = local_setup(64)
    _, theta_iwae = per_row_grads(make_estimator("iwae", 5), model, guide, x, seed=4)
    rows_dreg, theta_dreg = per_row_grads(make_estimator("iwae-dreg", 5), model, guide, x, 4)
    rows_iwae, _ = per_row_grads(make_estimator("iwae", 5), model, guide, x, seed=4)
    for a, b in zip(theta_dreg, theta_iwae, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert (rows_dreg - rows_iwae).abs().max() > 1e-3  # the encoder's gradient does differ


# ---- STL and DReG written out by hand --------------------------------------------------------


def textbook_log_p(model: HierarchicalLinearGaussian, x, z1, z2) -> torch.Tensor:
    """log p(z2) + log p(z1|z2) + log p(x|z1), (K, B)."""
    top = model.top
    return (
        Normal(0.0, 1.0).log_prob(z2).sum(-1)
        + Normal(z2 @ top.W.T + top.b, top.sigma).log_prob(z1).sum(-1)
        + Normal(z1 @ model.W.T + model.b, model.sigma).log_prob(x).sum(-1)
    )


def test_stl_equals_a_textbook_stl_on_the_same_noise():
    """z1 = μ + s1 ε1, z2 = a z1 + m + s2 ε2 drawn as Pyro draws them; log q at the guide's
    parameters detached, z1 and z2 not: L = (1/K) Σ_k Σ_b [log p(x, z) − log q_φ̄(z1, z2)]."""
    k, rows = 3, 6
    model, guide, x = local_setup(rows)
    zero_grads(model, guide)
    set_seed(9)
    loss = make_estimator("elbo-stl", k).loss_and_grads(model, guide, x)
    pyro_grads = [p.grad.clone() for p in [*model.parameters(), *guide.parameters()]]
    set_seed(9)
    s1, s2 = guide.log_s1.exp(), guide.log_s2.exp()
    z1 = guide.mu + s1 * torch.randn(k, rows, D1, dtype=F64)
    z2 = guide.a * z1 + guide.m + s2 * torch.randn(k, rows, D2, dtype=F64)
    mu, a, m = guide.mu.detach(), guide.a.detach(), guide.m.detach()
    log_q_stop = Normal(mu, s1.detach()).log_prob(z1).sum(-1) + Normal(
        a * z1 + m, s2.detach()
    ).log_prob(z2).sum(-1)
    surrogate = (textbook_log_p(model, x, z1, z2) - log_q_stop).mean(0).sum()
    assert loss == pytest.approx(-surrogate.item(), rel=1e-12)
    params = [*model.parameters(), *guide.parameters()]
    for got, want in zip(pyro_grads, torch.autograd.grad(-surrogate, params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_dreg_equals_a_textbook_dreg_on_the_same_noise():
    """θ: Σ_k w̃_k ∇_θ log w_k; φ: Σ_k w̃_k² d log w̄_k/dφ along z = (z1(ε1, φ), z2(ε2, z1, φ)),
    log q at φ̄, written as two separate gradients."""
    k, rows = 4, 5
    model, guide, x = local_setup(rows)
    zero_grads(model, guide)
    set_seed(2)
    make_estimator("iwae-dreg", k).loss_and_grads(model, guide, x)
    theta_got = [p.grad.clone() for p in model.parameters()]
    phi_got = [p.grad.clone() for p in guide.parameters()]
    set_seed(2)
    s1, s2 = guide.log_s1.exp(), guide.log_s2.exp()
    z1 = guide.mu + s1 * torch.randn(k, rows, D1, dtype=F64)
    z2 = guide.a * z1 + guide.m + s2 * torch.randn(k, rows, D2, dtype=F64)
    log_q_stop = Normal(guide.mu.detach(), s1.detach()).log_prob(z1).sum(-1) + Normal(
        guide.a.detach() * z1 + guide.m.detach(), s2.detach()
    ).log_prob(z2).sum(-1)
    log_w_stop = textbook_log_p(model, x, z1, z2) - log_q_stop
    w = torch.softmax(log_w_stop.detach(), dim=0)
    theta_want = torch.autograd.grad(
        -(w * log_w_stop).sum(), list(model.parameters()), retain_graph=True
    )
    phi_want = torch.autograd.grad(-(w * w * log_w_stop).sum(), list(guide.parameters()))
    for got, want in zip([*theta_got, *phi_got], [*theta_want, *phi_want], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ---- the flow guide: its transforms are modules --------------------------------------------------


def flow_vae(seed: int = 0):
    set_seed(seed)
    config = TrainConfig(guide="flow", hidden=(16,), latent_dim=3)
    model, guide = build_model_and_guide(config, 784)
    with torch.no_grad():  # off the identity start, so every layer matters
        for p in guide.family.parameters():
            p.add_(0.3 * torch.randn_like(p))
    twin = build_model_and_guide(config, 784)[1]
    twin.load_state_dict(guide.state_dict())
    twin.requires_grad_(False)  # the guide's parameters, detached, in modules of their own
    return model, guide, twin, torch.bernoulli(torch.rand(5, 784))


def by_hand(model, guide, twin, x, k: int):
    """z drawn through the guide's flow (base noise as Pyro draws it), log p(x, z), and
    log q at the twin's detached parameters, scoring z by inverting the twin's layers."""
    loc, scale = loc_and_scale(guide.encoder(x))
    z = loc + scale * torch.randn(k, *loc.shape)
    for layer in guide.family.layers:
        z = layer(z)
    z = z.clone()  # a fresh tensor: nothing cached for it anywhere
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1) + model.likelihood(model.decoder(z)).log_prob(x)
    return log_p, twin.posterior(x).log_prob(z)


@pytest.mark.parametrize("name", ["elbo-stl", "iwae-dreg"])
def test_flow_guide_gradients_equal_a_reference_with_detached_modules(name):
    k = 4
    model, guide, twin, x = flow_vae()
    params = [*model.parameters(), *guide.parameters()]
    zero_grads(model, guide)
    set_seed(6)
    make_estimator(name, k).loss_and_grads(model, guide, x)
    got = [p.grad.clone() for p in params]
    set_seed(6)
    log_p, log_q_stop = by_hand(model, guide, twin, x, k)
    if name == "elbo-stl":
        want = torch.autograd.grad(-(log_p - log_q_stop).mean(0).sum(), params)
    else:
        w = torch.softmax((log_p - log_q_stop).detach(), dim=0)
        theta = torch.autograd.grad(-(w * log_p).sum(), list(model.parameters()), retain_graph=True)
        phi = torch.autograd.grad(-(w * w * (log_p - log_q_stop)).sum(), list(guide.parameters()))
        want = [*theta, *phi]
    for g, w_ in zip(got, want, strict=True):
        torch.testing.assert_close(g, w_, rtol=1e-4, atol=1e-5 * (w_.abs().max().item() + 1e-6))
    assert max(g.abs().max().item() for g in got[len(list(model.parameters())) :]) > 1e-3


def test_one_site_fast_path_equals_the_replayed_guide():
    """log q_φ̄ from the detached distribution equals re-running the guide with detached
    parameters: values and gradients."""
    set_seed(0)
    model, guide = build_model_and_guide(TrainConfig(hidden=(16,), latent_dim=3), 784)
    x = torch.bernoulli(torch.rand(6, 784))
    set_seed(1)
    p = draw_particles(model, guide, (x,), {}, 4)
    fast, replayed = p.log_q_stop, p.replayed_log_q_stop()
    torch.testing.assert_close(fast, replayed, rtol=0, atol=1e-5)
    params = list(guide.parameters())
    for a, b in zip(
        torch.autograd.grad(fast.sum(), params, retain_graph=True),
        torch.autograd.grad(replayed.sum(), params),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(p_.grad is None for p_ in params)
