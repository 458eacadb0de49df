"""AIS and BDMC against closed forms: the exact log p(x) of probabilistic PCA (one and two
layers), HMC's invariance and acceptance rule, the vectorized run against a per-datapoint loop on
the same noise, the flow guide's base coordinates, and AIS against importance sampling at equal
compute on a small trained VAE."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import write_dataset
from torch import nn

from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.guides.families import DiagonalNormal, InverseAutoregressiveFlow, PointMass
from pyrovae.guides.guide import AmortizedGuide
from pyrovae.inference.ais import ais_log_marginal, bdmc
from pyrovae.inference.annealing import AnnealingPath, anneal, sigmoid_schedule
from pyrovae.inference.hmc import Noise, StepSize, hmc_transition
from pyrovae.inference.marginal import log_marginal_likelihood
from pyrovae.inference.particles import draw_particles
from pyrovae.models.linear_gaussian import (
    HierarchicalLinearGaussian,
    HierarchicalLinearGuide,
    LinearGaussian,
)
from pyrovae.runs.load import first_test_images, load_run

F64 = torch.float64
D, d = 6, 2


def ppca(seed: int = 0) -> LinearGaussian:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g, dtype=F64)
    return LinearGaussian(W, torch.randn(D, generator=g, dtype=F64), 0.5)


def data(model, n: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.marginal().sample((n,))


def off_guide(model, shift: float = 0.7, scale: float = 2.0) -> AmortizedGuide:
    """A diagonal guide that is wrong in every way PPCA's posterior can show: its mean is
    shifted, its scales are ``scale`` × the posterior's marginal ones, correlations ignored."""
    encoder = nn.Linear(D, 2 * d).double()
    with torch.no_grad():
        A, cov = model.posterior_map()
        rho = torch.log(torch.expm1(cov.diagonal().sqrt() * scale - 1e-4))
        encoder.weight.copy_(torch.cat([A, torch.zeros(d, D, dtype=F64)]))
        encoder.bias.copy_(torch.cat([-A @ model.b + shift, rho]))
    return AmortizedGuide(encoder, DiagonalNormal(d))


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), (values.std() / math.sqrt(values.numel())).item()


def test_the_sigmoid_schedule_runs_from_0_to_1_densest_at_the_ends():
    betas = sigmoid_schedule(10)
    assert betas[0] == 0 and betas[-1] == 1 and len(betas) == 11
    gaps = betas.diff()
    assert (gaps > 0).all()
    assert gaps[0] < gaps[5] and gaps[-1] < gaps[5]  # symmetric, smallest steps at the ends
    torch.testing.assert_close(gaps, gaps.flip(0))
    torch.testing.assert_close(sigmoid_schedule(1), torch.tensor([0.0, 1.0], dtype=F64))
    with pytest.raises(PyroVAEError, match="at least 1 step"):
        sigmoid_schedule(0)


# ------------------------------------------------------------------------------------------- HMC


def gaussian_density(mean: torch.Tensor, cov: torch.Tensor):
    precision = torch.linalg.inv(cov)

    def density(u):
        diff = u - mean
        log_f = -0.5 * ((diff @ precision) * diff).sum(-1)
        grad = -diff @ precision
        return log_f, grad, ()

    return density


def test_hmc_leaves_a_gaussian_target_invariant():
    """N = 4000 chains start at exact draws of N(m, S) and take 30 transitions: if each one
    leaves the target invariant, every chain is still an exact draw, so the sample mean has
    standard error √(S_jj/N) and the sample covariance's (i, j) entry √((S_ii S_jj + S_ij²)/N);
    both within 4 standard errors (a false alarm rate under 10⁻³ per entry). A kernel that
    skipped the Metropolis correction at this step size (ε = 0.9, L = 3: acceptance ≈ 0.7)
    would inflate the spread, which the second half checks."""
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0], dtype=F64)
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=F64)
    density = gaussian_density(mean, cov)
    n = 4000
    u = torch.distributions.MultivariateNormal(mean, cov).sample((n,))
    evaluated = density(u)
    eps = u.new_full((n, 1), 0.9)
    accepted = []
    for _ in range(30):
        step = hmc_transition(density, u, evaluated, eps, 3)
        u, evaluated = step.state, step.evaluated
        accepted.append(step.acceptance.mean().item())
    assert 0.3 < sum(accepted) / len(accepted) < 0.95  # the correction is doing work
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((u.mean(0) - mean).abs() < 4 * se_mean).all()
    sample_cov = torch.cov(u.T)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((sample_cov - cov).abs() < 4 * se_cov).all()

    # without the accept/reject step (every proposal kept) the same chains drift off
    class AlwaysAccept(Noise):
        def uniform(self, like):
            return torch.full_like(like, -1.0)

    u = torch.distributions.MultivariateNormal(mean, cov).sample((n,))
    evaluated = density(u)
    big = u.new_full((n, 1), 1.9)
    for _ in range(30):
        step = hmc_transition(density, u, evaluated, big, 3, AlwaysAccept())
        u, evaluated = step.state, step.evaluated
    assert ((torch.cov(u.T) - cov).abs() > 4 * se_cov).any()


class Given(Noise):
    """Noise from given tensors, in order (for hand computations and loops on the same noise);
    ``rows`` picks the datapoints (dim 1) a per-datapoint run sees."""

    def __init__(self, momenta, uniforms, rows=slice(None)):
        self.momenta, self.uniforms, self.rows = list(momenta), list(uniforms), rows

    def momentum(self, like):
        return self.momenta.pop(0)[:, self.rows]

    def uniform(self, like):
        return self.uniforms.pop(0)[:, self.rows]


def test_one_hmc_step_accepts_as_computed_by_hand():
    """L = 1 leapfrog step by hand: p½ = p₀ + ε/2 ∇log f(u₀), u₁ = u₀ + ε p½,
    p₁ = p½ + ε/2 ∇log f(u₁); a = min(1, exp(log f(u₁) − ½|p₁|² − log f(u₀) + ½|p₀|²)).
    A uniform just under a is accepted, just over it rejected."""
    mean = torch.tensor([0.5, -1.0], dtype=F64)
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=F64)
    density = gaussian_density(mean, cov)
    u0 = torch.tensor([[[2.0, 1.0]]], dtype=F64)  # (C=1, B=1, D=2)
    p0 = torch.tensor([[[0.3, -1.2]]], dtype=F64)
    eps = torch.tensor([[[1.0]]], dtype=F64)
    lf0, g0, _ = density(u0)
    p_half = p0 + 0.5 * g0
    u1 = u0 + 1.0 * p_half
    lf1, g1, _ = density(u1)
    p1 = p_half + 0.5 * g1
    a = min(1.0, math.exp(lf1 - 0.5 * (p1**2).sum() - lf0 + 0.5 * (p0**2).sum()))
    assert 0.05 < a < 0.95  # a real decision
    for uniform, moved in ((a - 1e-6, True), (a + 1e-6, False)):
        noise = Given([p0], [torch.tensor([[uniform]], dtype=F64)])
        step = hmc_transition(density, u0, (lf0, g0, ()), eps, 1, noise)
        assert step.acceptance.item() == pytest.approx(a, rel=1e-12)
        torch.testing.assert_close(step.state, u1 if moved else u0)
        torch.testing.assert_close(step.evaluated[0], lf1 if moved else lf0)
        torch.testing.assert_close(step.evaluated[1], g1 if moved else g0)


def test_a_non_finite_proposal_is_rejected():
    def density(u):
        log_f = torch.where(u[..., 0] > 1, torch.nan, -0.5 * (u**2).sum(-1))
        return log_f, -u, ()

    u0 = torch.zeros(1, 1, 1, dtype=F64)
    noise = Given([torch.ones(1, 1, 1, dtype=F64) * 10], [torch.zeros(1, 1, dtype=F64)])
    step = hmc_transition(density, u0, density(u0), u0 + 1, 1, noise)
    assert step.acceptance.item() == 0 and step.state.item() == 0


def test_step_sizes_adapt_towards_the_target_acceptance():
    eps = StepSize(torch.full((3, 1), 0.1))
    for _ in range(10):
        eps.update(torch.tensor([1.0, 0.65, 0.0]))
    grew, kept, shrank = eps.value.squeeze(-1).tolist()
    assert grew > 0.1 * math.exp(0.5 * 0.35 * 10) * 0.999 and kept == pytest.approx(0.1)
    assert shrank < 0.1 and shrank >= eps.low


# ------------------------------------------------------------------------------------ AIS on PPCA


def test_ais_with_one_step_is_importance_sampling_on_the_same_draws():
    """T = 1: log ŵ = log p(x, z₀) − log q(z₀|x), z₀ ~ q: importance sampling with K = C."""
    model = ppca()
    guide = off_guide(model)
    x = data(model, 5)
    torch.manual_seed(3)
    path = AnnealingPath(model, guide, (x,), 7)
    u = path.draw()
    run = anneal(path.parts, u, sigmoid_schedule(1), 3)
    particles = draw_particles(model, guide, (x,), {}, 7)
    z = particles.latents["z"]
    log_w = (path.log_densities(z)[1] - path.log_densities(z)[0]).detach()
    torch.testing.assert_close(log_w, particles.log_w.detach())  # same z, same weight
    lq, lp = path.log_densities(u)
    torch.testing.assert_close(run.log_w, (lp - lq).detach().double())


@pytest.mark.slow
def test_ais_converges_to_the_exact_log_marginal_as_t_grows():
    """PPCA, a guide off in mean, scale and correlation (IS with K = C is ~1 nat low). The
    mean error over 24 datapoints rises towards 0 with T, and at T = 200 it is within 0.05
    nats of the exact log p(x). Its standard error (paired differences over the datapoints)
    is printed and was below 0.01 at T = 200, so 0.05 is five standard errors."""
    model = ppca()
    guide = off_guide(model)
    x = data(model, 24)
    exact = model.log_marginal(x).detach()
    errors = []
    for steps in (1, 10, 40, 200):
        r = ais_log_marginal(model, guide, x, steps=steps, chains=8, leapfrog=5, seed=11)
        error, se = mean_and_stderr(r["per_datapoint"] - exact)
        print(f"T={steps}: mean error {error:.4f} ± {se:.4f}, acceptance {r['acceptance']:.2f}")
        errors.append(error)
    assert errors[0] < -0.5  # a real gap to close
    assert errors == sorted(errors)  # shrinks monotonically
    assert abs(errors[-1]) < 0.05


@pytest.mark.slow
def test_ais_on_two_stochastic_layers_converges_to_the_exact_value():
    """z2 → z1 → x with a guide q(z1|x) q(z2|z1) perturbed away from the exact posterior:
    at T = 200 the mean error is within 0.05 nats (T = 1, importance sampling, is not)."""
    g = torch.Generator().manual_seed(5)
    V, c = torch.randn(3, 2, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    W, b = torch.randn(D, 3, generator=g, dtype=F64), torch.randn(D, generator=g, dtype=F64)
    model = HierarchicalLinearGaussian(V, c, 0.6, W, b, 0.5)
    guide = HierarchicalLinearGuide.exact(model)
    with torch.no_grad():
        guide.m1.add_(0.6)
        guide.L1.mul_(1.8)
        guide.m2.sub_(0.5)
    x = data(model, 24)
    exact = model.log_marginal(x).detach()
    first = ais_log_marginal(model, guide, x, steps=1, chains=8, leapfrog=5, seed=2)
    last = ais_log_marginal(model, guide, x, steps=200, chains=8, leapfrog=5, seed=2)
    is_error, _ = mean_and_stderr(first["per_datapoint"] - exact)
    error, se = mean_and_stderr(last["per_datapoint"] - exact)
    print(f"IS error {is_error:.4f}; AIS T=200 error {error:.4f} ± {se:.4f}")
    assert is_error < -0.3
    assert abs(error) < 0.05


def test_the_vectorized_run_equals_a_per_datapoint_loop_on_the_same_noise():
    """Chains and datapoints annealed together give each datapoint exactly what annealing it
    alone gives, from the same start, step sizes, momenta and uniforms."""
    model = ppca()
    guide = off_guide(model)
    x = data(model, 4)
    chains, steps, leapfrog = 3, 6, 2
    betas = sigmoid_schedule(steps)
    torch.manual_seed(0)
    path = AnnealingPath(model, guide, (x,), chains)
    u0 = path.draw()
    schedule = 0.05 + 0.3 * torch.rand(steps - 1, 4, dtype=F64)
    momenta = [torch.randn_like(u0) for _ in range(steps - 1)]
    uniforms = [torch.rand(chains, 4, dtype=F64) for _ in range(steps - 1)]
    together = anneal(path.parts, u0, betas, leapfrog, schedule, Given(momenta, uniforms))
    for i in range(4):
        alone_path = AnnealingPath(model, guide, (x[i : i + 1],), chains)
        rows = slice(i, i + 1)
        alone = anneal(
            alone_path.parts,
            u0[:, rows],
            betas,
            leapfrog,
            schedule[:, rows],
            Given(momenta, uniforms, rows),
        )
        torch.testing.assert_close(alone.log_w, together.log_w[:, rows], rtol=0, atol=1e-10)
        torch.testing.assert_close(alone.state, together.state[:, rows], rtol=0, atol=1e-10)
    assert (together.acceptance > 0).any() and (together.acceptance < 1).any()


def test_bdmc_sandwiches_the_exact_log_marginal():
    """On data simulated from PPCA: forward AIS ≤ exact ≤ reverse AIS, each in the mean over
    the datapoints within 3 standard errors of the paired differences (a stochastic bound may
    cross by noise, not by more), and the gap closes as T grows."""
    model = ppca()
    guide = off_guide(model)
    template = torch.zeros(20, D, dtype=F64)
    gaps = []
    for steps in (5, 100):
        r = bdmc(model, guide, template, steps=steps, chains=6, leapfrog=5, seed=4)
        exact = model.log_marginal(r["simulated"]).detach()
        below, se_below = mean_and_stderr(r["per_datapoint_lower"] - exact)
        above, se_above = mean_and_stderr(r["per_datapoint_upper"] - exact)
        assert below < 3 * se_below and above > -3 * se_above
        gaps.append(r["gap"])
    assert gaps[0] > 0.2 and 0 <= gaps[1] < gaps[0] / 4


def test_ais_from_the_prior_reaches_the_exact_value_without_a_guide_density():
    """Start at p(z): a point-mass guide, which cannot start AIS, is not needed at all."""
    model = ppca()
    point = AmortizedGuide(nn.Linear(D, d).double(), PointMass(d))
    x = data(model, 12)
    exact = model.log_marginal(x).detach()
    r = ais_log_marginal(model, point, x, steps=100, chains=8, leapfrog=5, start="prior")
    error, se = mean_and_stderr(r["per_datapoint"] - exact)
    assert abs(error) < 0.1 and error < 3 * se
    with pytest.raises(PyroVAEError, match="point mass.*--ais-from prior"):
        ais_log_marginal(model, point, x, steps=2, chains=2, leapfrog=1)


def test_a_flow_guide_is_annealed_in_its_base_coordinates():
    """For z = T(u), u ~ base: log π(u) − log q₀(u) = log p(x, T(u)) + log|det ∂T/∂u| −
    log base(u) must equal log p(x, z) − log q(z|x) with q's density found by inverting the
    flow (Pyro's TransformedDistribution), at the same z: the change of variables, to 1e-8."""
    model = ppca()
    family = InverseAutoregressiveFlow(d).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in family.layers.parameters():  # away from the identity the flow starts at
            p.add_(0.3 * torch.randn_like(p))
    guide = AmortizedGuide(nn.Linear(D, 2 * d).double(), family)
    x = data(model, 5)
    path = AnnealingPath(model, guide, (x,), 4)
    u = path.draw()
    log_q0, log_pi = (t.detach() for t in path.log_densities(u))
    z = path.latents(u)["z"].detach()
    assert (z - u).abs().max() > 0.1  # the flow moved the draws
    # a fresh tensor, so no cache answers; Pyro's inverse builds float32 zeros, hence the default
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        log_q = guide.posterior(x).log_prob(z.clone()).detach()
        back = path.from_latents({"z": z.clone()})
    finally:
        torch.set_default_dtype(default)
    torch.testing.assert_close(log_pi - log_q0, _joint(model, x, z) - log_q, atol=1e-8, rtol=0)
    torch.testing.assert_close(back, u)  # and back


def _joint(model, x, z):
    """log p(x, z) per (chain, datapoint) from the model's own densities."""
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mean = z @ model.W.T + model.b
    return prior + torch.distributions.Normal(mean, model.sigma).log_prob(x).sum(-1)


def test_discrete_latents_are_refused_in_one_line():
    from pyrovae.guides.discrete import BernoulliCode

    model = ppca()
    guide = AmortizedGuide(nn.Linear(D, d).double(), BernoulliCode(d))
    with pytest.raises(PyroVAEError, match="continuous latents; site 'z' is discrete"):
        ais_log_marginal(model, guide, data(model, 3), steps=2, chains=2, leapfrog=1)


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    """A small VAE trained for 3 epochs on the tiny IDX images, and 40 of its test images."""
    root = tmp_path_factory.mktemp("ais")
    idx, run = root / "idx", root / "run"
    write_dataset(idx)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        args = ["train", "--dataset", "mnist", "--data-dir", str(idx), "--run-dir", str(run)]
        args += ["--hidden", "32", "--latent-dim", "4", "--epochs", "3", "--batch-size", "50"]
        args += ["--device", "cpu", "--no-progress", "--no-figures", "--no-download"]
        assert main(args) == 0
        loaded = load_run(run, "cpu", str(idx), download=False)
    return loaded.model, loaded.guide, first_test_images(loaded.data, 40, "--test-subset")


def test_ais_is_not_below_importance_sampling_at_equal_compute(trained_vae):
    """On a small trained VAE, AIS (C = 4 chains, T = 10, L = 4, and its pilot of 4 chains:
    2 × 4 × (9 × 4 + 1) = 296 model evaluations per image) against importance sampling with
    K = 296 on the same images. AIS's mean may fall short of IS's by at most 3 standard
    errors of the paired per-image differences."""
    model, guide, x = trained_vae
    is_est = log_marginal_likelihood(model, guide, x, 296)["per_datapoint"]
    ais = ais_log_marginal(model, guide, x, steps=10, chains=4, leapfrog=4)["per_datapoint"]
    diff, se = mean_and_stderr(ais - is_est)
    print(f"AIS − IS = {diff:.3f} ± {se:.3f}")
    assert diff > -3 * se
