"""Guide families (every registry entry), closed-form KLs, and the analytic-KL estimator.

Closed forms are checked in float64 to 1e-10 (they differ from the references only by rounding);
Monte-Carlo checks allow 5 standard errors estimated from the draws themselves (a 6·10⁻⁷ chance
of a false failure per comparison, and all draws are seeded).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from torch import nn

from pyrovae import set_seed
from pyrovae.core.errors import PyroVAEError
from pyrovae.guides import (
    GUIDES,
    MIN_SCALE,
    AmortizedGuide,
    DiagonalNormal,
    FullCovarianceNormal,
    InverseAutoregressiveFlow,
)
from pyrovae.inference import draw_particles
from pyrovae.inference.analytic_kl import AnalyticKL
from pyrovae.inference.kl import analytic_kl
from pyrovae.models.likelihoods import BernoulliLikelihood
from pyrovae.models.linear_gaussian import LinearGaussian
from pyrovae.models.prior import StandardNormalPrior
from pyrovae.models.vae import VAE
from pyrovae.nets import MLP

B, LATENT = 6, 3
Z = 5.0
# the reparameterized families; the discrete codes are tested in test_discrete_codes.py
CONTINUOUS = sorted(name for name, family in GUIDES.items() if family.latent_kind == "continuous")
F64 = torch.float64


def make_guide(name: str, latent_dim: int = LATENT) -> AmortizedGuide:
    family = GUIDES[name](latent_dim)
    return AmortizedGuide(MLP(784, (32,), family.num_params, "relu"), family)


def standard_normal(d: int, dtype=F64) -> dist.Distribution:
    return dist.Normal(torch.zeros(d, dtype=dtype), torch.ones(d, dtype=dtype)).to_event(1)


def as_mvn(q: dist.Distribution) -> dist.MultivariateNormal:
    """The same Gaussian as a torch MultivariateNormal (the reference implementation's input)."""
    if isinstance(q, dist.MultivariateNormal):
        return q
    tril = torch.diag_embed(q.stddev)
    return dist.MultivariateNormal(q.mean, scale_tril=tril, validate_args=False)


# --- every family --------------------------------------------------------------------------------


@pytest.mark.parametrize("particles", [None, 4], ids=["(B,d)", "(K,B,d)"])
@pytest.mark.parametrize("name", CONTINUOUS)
def test_family_samples_scores_and_differentiates(name, particles):
    set_seed(0)
    guide = make_guide(name)
    x = torch.rand(B, 784)
    if particles is None:
        trace = poutine.trace(guide).get_trace(x)
        shape = (B,)
    else:
        with pyro.plate("p", particles, dim=-2):
            trace = poutine.trace(guide).get_trace(x)
        shape = (particles, B)
    trace.compute_log_prob()
    site = trace.nodes["z"]
    z, q = site["value"], site["fn"]
    assert z.shape == (*shape, LATENT)
    assert q.has_rsample and q.batch_shape == shape and q.event_shape == (LATENT,)
    assert site["log_prob"].shape == shape and torch.isfinite(site["log_prob"]).all()
    if particles is not None and name != "delta":
        assert not torch.equal(z[0], z[1])  # the particles are independent draws
    (grad,) = torch.autograd.grad(z.sum(), guide.encoder.net[0].weight)
    assert grad.abs().sum() > 0  # pathwise: z reaches the encoder's first layer


@pytest.mark.parametrize("name", CONTINUOUS)
def test_family_parameters_are_trained_and_checkpointed_with_the_guide(name):
    set_seed(0)
    guide = make_guide(name)
    params = {id(p) for p in guide.parameters()}
    assert all(id(p) in params for p in guide.family.parameters())
    if name == "flow":
        assert len(list(guide.family.parameters())) > 0
    # a guide rebuilt from the state_dict scores a draw identically
    set_seed(1)
    clone = make_guide(name)
    clone.load_state_dict(guide.state_dict())
    x = torch.rand(B, 784)
    q, q_clone = guide.posterior(x), clone.posterior(x)
    z = q.rsample()
    torch.testing.assert_close(q_clone.log_prob(z.clone()), q.log_prob(z), rtol=1e-5, atol=1e-5)


def test_diagonal_normal_keeps_its_parameterization():
    raw = torch.randn(B, 2 * LATENT, dtype=F64)
    q = DiagonalNormal(LATENT)(raw)
    loc, rho = raw.chunk(2, -1)
    torch.testing.assert_close(q.mean, loc, rtol=0, atol=0)
    torch.testing.assert_close(q.stddev, F.softplus(rho) + MIN_SCALE, rtol=0, atol=0)


def test_nan_from_the_encoder_becomes_a_nan_log_density():
    for name in CONTINUOUS:
        family = GUIDES[name](LATENT)
        q = family(torch.full((B, family.num_params), math.nan))
        assert torch.isnan(q.log_prob(q.rsample())).all() or name == "delta"


def test_logistic_draws_stay_finite_at_the_edge_of_the_uniform():
    """Pyro's own Logistic gives z = −∞ when its uniform draw is exactly 0 (2⁻²⁴ in float32)."""
    q = GUIDES["logistic"](1)(torch.zeros(1, 2))
    u = torch.zeros(1, 1)
    with torch.no_grad(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "rand", lambda *a, **k: u.clone())
        z = q.rsample()
    assert torch.isfinite(z).all() and torch.isfinite(q.log_prob(z)).all()


# --- closed-form KL -------------------------------------------------------------------------------


def random_gaussian(kind: str, batch: int, d: int, seed: int) -> dist.Distribution:
    g = torch.Generator().manual_seed(seed)
    if kind == "diag":
        raw = torch.randn(batch, 2 * d, generator=g, dtype=F64)
        return DiagonalNormal(d)(raw)
    raw = torch.randn(batch, d + d * (d + 1) // 2, generator=g, dtype=F64)
    return FullCovarianceNormal(d)(raw)


def test_full_covariance_kl_to_the_standard_normal():
    d, n = 3, 5
    torch.manual_seed(0)
    raw = torch.randn(n, d + d * (d + 1) // 2, dtype=F64)
    q = FullCovarianceNormal(d)(raw)
    # L by hand from the documented layout: cat(μ, ρ, strictly-lower entries row-major)
    loc, rho, off = raw[:, :d], raw[:, d : 2 * d], raw[:, 2 * d :]
    L = torch.zeros(n, d, d, dtype=F64)
    L[:, [1, 2, 2], [0, 0, 1]] = off
    L[:, range(d), range(d)] = F.softplus(rho) + MIN_SCALE
    torch.testing.assert_close(q.scale_tril, L, rtol=0, atol=0)
    cov = L @ L.mT
    # ½[tr Σ + μᵀμ − d − log|Σ|]
    expected = 0.5 * (cov.diagonal(dim1=-2, dim2=-1).sum(-1) + (loc**2).sum(-1) - d)
    expected = expected - 0.5 * torch.logdet(cov)
    prior = standard_normal(d)
    kl = analytic_kl(q, prior)
    assert kl.shape == (n,)
    torch.testing.assert_close(kl, expected, rtol=1e-10, atol=0)
    reference = torch.distributions.kl_divergence(q, as_mvn(prior.expand((n,))))
    torch.testing.assert_close(kl, reference, rtol=1e-10, atol=0)
    # Monte Carlo: KL = E_q[log q(z) − log p(z)]
    draws = 200_000
    z = q.sample((draws,))  # (N, n, d)
    f = q.log_prob(z) - prior.log_prob(z)  # (N, n)
    mean, se = f.mean(0), f.std(0) / math.sqrt(draws)
    assert ((mean - kl).abs() < Z * se).all()


def test_diagonal_normal_kl_is_the_reference_formula():
    raw = torch.randn(B, 2 * LATENT, dtype=F64, generator=torch.Generator().manual_seed(3))
    q = DiagonalNormal(LATENT)(raw)
    loc, rho = raw.chunk(2, -1)
    scale = F.softplus(rho) + MIN_SCALE
    expected = 0.5 * (loc**2 + scale**2 - 1 - torch.log(scale**2)).sum(-1)
    torch.testing.assert_close(
        analytic_kl(q, standard_normal(LATENT)), expected, rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("q_kind", ["diag", "full"])
@pytest.mark.parametrize("p_kind", ["diag", "full"])
def test_gaussian_kl_equals_torchs_full_covariance_kl(q_kind, p_kind):
    """Every Gaussian pair (general means and covariances) against torch's MVN ‖ MVN."""
    q = random_gaussian(q_kind, B, 4, seed=1)
    p = random_gaussian(p_kind, B, 4, seed=2)
    reference = torch.distributions.kl_divergence(as_mvn(q), as_mvn(p))
    torch.testing.assert_close(analytic_kl(q, p), reference, rtol=1e-10, atol=0)


@pytest.mark.parametrize("q_kind", ["diag", "full"])
def test_kl_inside_plates_broadcasts_to_particles_and_data(q_kind):
    """A plate expands both sites' distributions to (K, B); the prior may come unexpanded."""
    K = 3
    q = random_gaussian(q_kind, B, LATENT, seed=4)
    prior = standard_normal(LATENT)  # batch ()
    once = analytic_kl(q, prior)
    assert once.shape == (B,)
    for expanded_q, expanded_p in (
        (q.expand((K, B)), prior.expand((K, B))),
        (ExpandedDistribution(q, (K, B)), ExpandedDistribution(prior, (K, B))),
        (q.expand((K, B)), prior),
    ):
        kl = analytic_kl(expanded_q, expanded_p)
        assert kl.shape == (K, B)
        torch.testing.assert_close(kl, once.expand(K, B), rtol=1e-12, atol=0)
    # and as Pyro's plates hand them over in a trace
    family = GUIDES["full-covariance"](LATENT)
    guide = AmortizedGuide(nn.Linear(5, family.num_params), family)
    model = lambda x: pyro.sample("z", StandardNormalPrior(LATENT)())  # noqa: E731
    x = torch.randn(B, 5)
    with pyro.plate("p", K, dim=-2):
        tq = poutine.trace(guide).get_trace(x)
        with pyro.plate("data", B):
            tp = poutine.trace(model).get_trace(x)
    kl = analytic_kl(tq.nodes["z"]["fn"], tp.nodes["z"]["fn"])
    assert kl.shape == (K, B)
    torch.testing.assert_close(
        kl[1], analytic_kl(guide.posterior(x), StandardNormalPrior(LATENT)())
    )


def test_kl_without_a_closed_form_is_none_and_nothing_is_registered():
    prior = standard_normal(LATENT, torch.float32)
    raw = torch.randn(B, 2 * LATENT)
    for name in ("student-t", "logistic", "flow"):
        assert analytic_kl(GUIDES[name](LATENT)(raw), prior) is None
    # torch still has no MVN ‖ Independent(Normal) KL: analytic_kl computes it without registering
    q = GUIDES["full-covariance"](LATENT)(
        torch.randn(B, GUIDES["full-covariance"](LATENT).num_params)
    )
    with pytest.raises(NotImplementedError):
        torch.distributions.kl_divergence(q, prior)
    assert analytic_kl(q, prior).shape == (B,)
    # a KL torch registers (Laplace ‖ Normal, per dimension) is used as it is
    laplace = GUIDES["laplace"](LATENT)(raw)
    per_dim = torch.distributions.kl_divergence(laplace.base_dist, prior.base_dist)
    torch.testing.assert_close(analytic_kl(laplace, prior), per_dim.sum(-1))


# --- the flow's density ---------------------------------------------------------------------------


def scrambled_flow(d: int, dtype, seed: int) -> InverseAutoregressiveFlow:
    """A flow moved away from its identity start, so every layer does something."""
    torch.manual_seed(seed)
    flow = InverseAutoregressiveFlow(d).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return flow


def test_flow_log_density_is_the_change_of_variables():
    """log q(z) = log N(z₀; μ, σ²) − Σ_l log|det ∂f_l/∂u|, each Jacobian by autograd."""
    d = 3
    flow = scrambled_flow(d, F64, seed=0)
    raw = torch.randn(B, 2 * d, dtype=F64)
    q = flow(raw)
    torch.manual_seed(1)
    z = q.rsample()  # (B, d)
    log_q = q.log_prob(z)
    # the same noise, pushed through the layers by hand: f(u) = m(u) + exp(s(u)) ⊙ u
    torch.manual_seed(1)
    eps = torch.randn(B, d, dtype=F64)
    loc, rho = raw.chunk(2, -1)
    scale = F.softplus(rho) + MIN_SCALE
    u = loc + scale * eps
    log_base = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_det = torch.zeros(B, dtype=F64)
    for layer in flow.layers:

        def step(v, layer=layer):
            m, s = layer.arn(v)
            return m + s.clamp(layer.log_scale_min_clip, layer.log_scale_max_clip).exp() * v

        for i in range(B):
            J = torch.autograd.functional.jacobian(step, u[i])  # (d, d)
            order = layer.arn.permutation
            assert torch.triu(J[order][:, order], 1).abs().max() == 0  # autoregressive
            log_det[i] += torch.linalg.slogdet(J).logabsdet
        u = step(u)
    torch.testing.assert_close(u, z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_q, log_base - log_det, rtol=1e-10, atol=1e-10)


def test_flow_density_integrates_to_one():
    """d = 2, on a grid: Σ q h² = 1. Scoring grid points (not the flow's own draws) also checks
    the sequential inverse. Tolerance: the Riemann sum of a smooth density on a 0.02 grid is
    exact to far below 10⁻³, and the mass outside the box is below 10⁻⁴ (no draw in 10⁵ there)."""
    flow = scrambled_flow(2, torch.float32, seed=2)
    q = flow(torch.tensor([[0.3, -0.2, -0.5, 0.2]]))  # batch of one
    half, h = 8.0, 0.02
    axis = torch.arange(-half + h / 2, half, h)
    grid = torch.cartesian_prod(axis, axis)  # (n², 2)
    with torch.no_grad():
        assert (q.sample((100_000,)).abs() < half).all()
        density = q.log_prob(grid.unsqueeze(1)).squeeze(1).double().exp()
    assert abs(density.sum().item() * h * h - 1) < 1e-3


# --- the linear-Gaussian model with a correlated posterior ----------------------------------------

# columns far from orthogonal: the exact posterior's correlation is 0.88
W = torch.tensor(
    [[1.0, 0.8], [0.9, 1.0], [0.5, 0.7], [0.2, 0.1], [0.4, 0.5]], dtype=F64
)  # (D=5, d=2)
BIAS = torch.tensor([0.5, -1.0, 0.2, 0.0, 1.0], dtype=F64)
SIGMA = 0.5


def closed_form_elbo(model: LinearGaussian, q: dist.Distribution, x: torch.Tensor):
    """E_q[log p(x|z)] − KL(q ‖ N(0, I)) for a Gaussian q (B,):
    −(D/2) log 2πσ² − [‖x − b − Wμ‖² + tr(W Σ_q Wᵀ)] / 2σ² − KL."""
    cov = as_mvn(q).covariance_matrix  # (B, d, d)
    D, d = model.W.shape
    s2 = model.sigma**2
    resid = x - model.b - q.mean @ model.W.T
    expected_sq = (resid**2).sum(-1) + (model.W @ cov @ model.W.T).diagonal(0, -2, -1).sum(-1)
    recon = -0.5 * D * torch.log(2 * math.pi * s2) - expected_sq / (2 * s2)
    return recon - analytic_kl(q, standard_normal(d))


def fit_linear_guide(model, x, name, steps=1000, seed=0):
    torch.manual_seed(seed)
    family = GUIDES[name](model.W.shape[1])
    guide = AmortizedGuide(nn.Linear(model.W.shape[0], family.num_params).double(), family)
    opt = torch.optim.Adam(guide.parameters(), lr=0.05)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, 0.998)
    for _ in range(steps):
        opt.zero_grad()
        loss = -closed_form_elbo(model, guide.posterior(x), x).mean()
        loss.backward()
        opt.step()
        decay.step()
    return guide


def test_full_covariance_guide_reaches_log_px_where_the_diagonal_cannot():
    model = LinearGaussian(W, BIAS, SIGMA)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z = torch.randn(200, 2, generator=g, dtype=F64)
        x = z @ W.T + BIAS + SIGMA * torch.randn(200, 5, generator=g, dtype=F64)
        log_px = model.log_marginal(x)
    # The best diagonal q (mean-field) matches the posterior precision Λ = M/σ² on its diagonal;
    # its gap KL(q ‖ p(z|x)) = ½(Σ_j log Λ_jj − log|Λ|) = ½(Σ_j log M_jj − log|M|), every x.
    M = W.T @ W + SIGMA**2 * torch.eye(2, dtype=F64)
    diagonal_gap = 0.5 * (M.diagonal().log().sum() - torch.logdet(M)).item()
    assert diagonal_gap > 0.7  # 0.752 nats: −½ log(1 − ρ²), ρ = 0.88

    # the closed form agrees with the model's own diagonal ELBO
    guide = fit_linear_guide(model, x, "normal")
    q = guide.posterior(x)
    with torch.no_grad():
        torch.testing.assert_close(
            closed_form_elbo(model, q, x), model.elbo(x, q.mean, q.stddev), rtol=1e-12, atol=0
        )
        gap = (log_px - closed_form_elbo(model, q, x)).mean().item()
    assert diagonal_gap - 1e-9 < gap < diagonal_gap + 1e-3

    guide = fit_linear_guide(model, x, "full-covariance")
    with torch.no_grad():
        gap = (log_px - closed_form_elbo(model, guide.posterior(x), x)).mean().item()
    assert -1e-9 < gap < 1e-3
    # the trained guide is the exact posterior: log w = log p(x) for every draw
    set_seed(0)
    log_w = draw_particles(model, guide, (x,), {}, 100).log_w.detach()
    assert (log_w - log_px).abs().mean() < 0.01
    # and AnalyticKL's estimate of the bound is the closed form, within its sampling error
    set_seed(0)
    per_particle = AnalyticKL(num_particles=400).per_particle(
        draw_particles(model, guide, (x,), {}, 400)
    )
    sums = per_particle.detach().sum(-1)  # (K,): the bound over the batch, per particle
    closed = closed_form_elbo(model, guide.posterior(x), x).sum().item()
    assert abs(sums.mean().item() - closed) < Z * sums.std().item() / math.sqrt(len(sums))


# --- the analytic-KL estimator --------------------------------------------------------------------


def bernoulli_vae(latent_dim: int = LATENT) -> VAE:
    return VAE(
        StandardNormalPrior(latent_dim), MLP(latent_dim, (32,), 784), BernoulliLikelihood(784)
    )


class ScaleSite(Messenger):
    """Multiplies one site's scale by ``factor`` (β on the latent site; Pyro's own
    ``poutine.scale`` refuses 0)."""

    def __init__(self, name: str, factor: float) -> None:
        super().__init__()
        self.name, self.factor = name, factor

    def _pyro_sample(self, msg) -> None:
        if msg["name"] == self.name:
            msg["scale"] = msg["scale"] * self.factor


@pytest.fixture
def vae_and_data():
    set_seed(0)
    model = bernoulli_vae()
    x = torch.bernoulli(torch.rand(16, 784))
    return model, x


@pytest.mark.parametrize("particles", [1, 3])
def test_analytic_kl_equals_trace_mean_field_for_the_normal_guide(vae_and_data, particles):
    model, x = vae_and_data
    guide = make_guide("normal")
    ours = AnalyticKL(num_particles=particles)
    pyros = TraceMeanField_ELBO(
        num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1
    )
    params = [*model.parameters(), *guide.parameters()]
    grads = []
    losses = []
    for estimator in (ours, pyros):
        set_seed(7)
        losses.append(estimator.loss_and_grads(model, guide, x))
        grads.append([p.grad.clone() for p in params])
        for p in params:
            p.grad = None
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    set_seed(7)
    assert ours.loss(model, guide, x) == pytest.approx(losses[1], rel=1e-6)


def test_analytic_kl_refuses_a_guide_without_a_closed_form(vae_and_data):
    model, x = vae_and_data
    with pytest.raises(
        PyroVAEError, match="analytic-kl.*TransformedDistribution.*--estimator elbo"
    ):
        AnalyticKL().loss(model, make_guide("flow"), x)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_beta_on_the_latent_site_scales_the_kl(vae_and_data, beta):
    """loss(β) = −(1/K) Σ_k log p(x|z_k) + β KL: with β = 0 the KL term is gone."""
    model, x = vae_and_data
    guide = make_guide("normal")
    K = 3
    set_seed(11)
    loss = AnalyticKL(num_particles=K).loss(
        ScaleSite("z", beta)(model), ScaleSite("z", beta)(guide), x
    )
    set_seed(11)
    p = draw_particles(model, guide, (x,), {}, K)
    recon = p.model_trace.nodes["x"]["log_prob"].mean(0).sum().item()
    kl = analytic_kl(guide.posterior(x), StandardNormalPrior(LATENT)()).sum().item()
    assert loss == pytest.approx(-recon + beta * kl, rel=1e-6)
    assert kl > 1.0  # so the β = 0 case tests something


def test_delta_guide_with_beta_zero_is_the_deterministic_autoencoder(vae_and_data):
    """β = 0 with z = μ(x): loss = −Σ log p(x|μ(x)), by hand; Trace_ELBO agrees."""
    model, x = vae_and_data
    guide = make_guide("delta")
    scaled = ScaleSite("z", 0.0)
    with torch.no_grad():
        expected = -model.likelihood(model.decoder(guide.encoder(x))).log_prob(x).sum().item()
    ours = AnalyticKL().loss(scaled(model), scaled(guide), x)
    pyros = Trace_ELBO().loss(scaled(model), scaled(guide), x)
    assert ours == pytest.approx(expected, rel=1e-6)
    assert pyros == pytest.approx(expected, rel=1e-6)


def test_analytic_kl_refuses_a_latent_scaled_in_the_model_only(vae_and_data):
    model, x = vae_and_data
    with pytest.raises(PyroVAEError, match="scaled alike"):
        AnalyticKL().loss(ScaleSite("z", 0.5)(model), make_guide("normal"), x)


def test_conditional_guide_sees_the_label():
    """q(z|x, y) = family(encoder([x, onehot(y)])): the label moves the posterior."""
    set_seed(0)
    family = GUIDES["normal"](LATENT)
    guide = AmortizedGuide(nn.Linear(784 + 10, family.num_params), family, num_classes=10)
    x = torch.rand(B, 784)
    y = torch.arange(B)
    q = guide.posterior(x, y)
    onehot = F.one_hot(y, 10).float()
    expected = family(guide.encoder(torch.cat([x, onehot], -1)))
    torch.testing.assert_close(q.mean, expected.mean, rtol=0, atol=0)
    assert not torch.allclose(q.mean, guide.posterior(x, (y + 1) % 10).mean)
    with pytest.raises(PyroVAEError, match="labels"):
        guide(x)
