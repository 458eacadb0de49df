"""Discrete codes: the distributions, exact enumeration against a sum written out by hand, the
closed-form KL, the relaxations' bias as the temperature falls, and the temperature schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pyrovae import TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.core.errors import PyroVAEError
from pyrovae.guides.discrete import ENUMERATION_LIMIT, Bernoullis, Categoricals
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.kl import analytic_kl
from pyrovae.inference.temperature import Temperature, temperature_schedule

D = 12  # pixels of the small model
F64 = torch.float64

# The 9 joint states of 2 groups × 3 categories, written out: one-hot of group 1, then group 2.
CATEGORICAL_STATES = [
    [1, 0, 0, 1, 0, 0],
    [1, 0, 0, 0, 1, 0],
    [1, 0, 0, 0, 0, 1],
    [0, 1, 0, 1, 0, 0],
    [0, 1, 0, 0, 1, 0],
    [0, 1, 0, 0, 0, 1],
    [0, 0, 1, 1, 0, 0],
    [0, 0, 1, 0, 1, 0],
    [0, 0, 1, 0, 0, 1],
]
BERNOULLI_STATES = [list(bits) for bits in itertools.product([0, 1], repeat=4)]  # 16 states

CODES = {
    "categorical": dict(latent_dim=2, categories=3, states=CATEGORICAL_STATES),
    "bernoulli": dict(latent_dim=4, categories=10, states=BERNOULLI_STATES),
}


def _small(guide: str, seed: int = 0, estimator: str = "enumerate"):
    """A float64 VAE with a small discrete code over D = 12 binary pixels, and 5 datapoints."""
    code = CODES[guide]
    config = TrainConfig(
        dataset="mnist",
        guide=guide,
        prior=guide,
        latent_dim=code["latent_dim"],
        categories=code["categories"],
        hidden=(7,),
        estimator=estimator,
    )
    set_seed(seed)
    model, q = build_model_and_guide(config, D)
    model, q = model.double(), q.double()
    x = torch.bernoulli(torch.full((5, D), 0.4, dtype=torch.float64))
    return model, q, x


def _log_q_by_hand(guide: str, q, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log q(z|x), (B,), from the encoder's logits, without the code's own distribution."""
    raw = q.encoder(x)  # (B, num_params)
    if guide == "categorical":
        log_pi = torch.log_softmax(raw.reshape(x.shape[0], 2, 3), -1).reshape(x.shape[0], 6)
        return (z * log_pi).sum(-1)
    p = torch.sigmoid(raw)
    return (z * torch.log(p) + (1 - z) * torch.log(1 - p)).sum(-1)


def _elbo_by_hand(guide: str, model, q, x: torch.Tensor) -> torch.Tensor:
    """Σ_b Σ_z q(z|x_b)[log p(x_b|z) + log p(z) − log q(z|x_b)] over the states written out."""
    states = torch.tensor(CODES[guide]["states"], dtype=torch.float64)
    log_prior = -2 * math.log(3) if guide == "categorical" else -4 * math.log(2)  # uniform
    total = 0.0
    for z in states:
        zb = z.expand(x.shape[0], -1)
        log_q = _log_q_by_hand(guide, q, x, zb)
        log_lik = model.likelihood(model.decoder(zb)).log_prob(x)  # (B,)
        total = total + (log_q.exp() * (log_lik + log_prior - log_q)).sum()
    return total


@pytest.mark.parametrize("guide", sorted(CODES))
def test_enumeration_equals_the_sum_over_every_state_written_out(guide):
    """Value and gradient of every parameter, float64, to 1e-6."""
    model, q, x = _small(guide)
    params = [*model.parameters(), *q.parameters()]
    by_hand = _elbo_by_hand(guide, model, q, x)
    expected = torch.autograd.grad(by_hand, params)
    loss = make_estimator("enumerate").differentiable_loss(model, q, x)
    grads = torch.autograd.grad(-loss, params)
    assert -loss.item() == pytest.approx(by_hand.item(), abs=1e-6, rel=1e-9)
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("guide", sorted(CODES))
def test_enumerate_support_lists_every_joint_state_once(guide):
    model, q, x = _small(guide)
    dist = q.posterior(x)  # batch (5,), event (d,)
    states = CODES[guide]["states"]
    support = dist.enumerate_support(expand=False)
    assert support.shape == (len(states), 1, len(states[0]))
    assert sorted(map(tuple, support[:, 0].tolist())) == sorted(map(tuple, states))
    assert dist.enumerate_support().shape == (len(states), 5, len(states[0]))
    # q sums to one over the states, datapoint by datapoint
    total = dist.log_prob(dist.enumerate_support()).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(5, dtype=torch.float64))


def test_enumeration_beyond_the_limit_is_one_line():
    logits = torch.zeros(3, 200)
    with pytest.raises(PyroVAEError, match=r"^enumeration of 2\^200 states") as e:
        Bernoullis(logits).enumerate_support()
    assert "\n" not in str(e.value)
    with pytest.raises(PyroVAEError, match=r"enumeration of 10\^20 states"):
        Categoricals(torch.zeros(2, 200), groups=20).enumerate_support()
    assert Bernoullis(torch.zeros(10)).enumerate_support().shape == (ENUMERATION_LIMIT, 10)
    with pytest.raises(PyroVAEError, match=r"2\^11 states"):
        Bernoullis(torch.zeros(11)).enumerate_support()


def test_draws_follow_the_code_and_log_prob_is_the_categorical_one():
    """Frequencies of 40000 draws within 5 s.e. of π (s.e. = √(π(1 − π)/n) ≤ 0.0025)."""
    torch.manual_seed(0)
    logits = torch.tensor([[0.5, -1.0, 0.0, 2.0, 0.0, 0.0]])
    cat = Categoricals(logits, groups=2)
    draws = cat.sample((40000,))  # (n, 1, 6)
    assert set(draws.sum(-1).flatten().tolist()) == {2.0}  # one hot per group
    pi = torch.cat([torch.softmax(logits[0, :3], 0), torch.softmax(logits[0, 3:], 0)])
    se = (pi * (1 - pi) / 40000).sqrt()
    assert ((draws.mean((0, 1)) - pi).abs() < 5 * se).all()
    z = torch.tensor([0.0, 1, 0, 0, 0, 1])
    assert cat.log_prob(z).item() == pytest.approx((pi[1].log() + pi[5].log()).item(), abs=1e-6)
    bern = Bernoullis(torch.tensor([1.5, -0.5]))
    p = torch.sigmoid(torch.tensor([1.5, -0.5]))
    freq = bern.sample((40000,)).mean(0)
    assert ((freq - p).abs() < 5 * (p * (1 - p) / 40000).sqrt()).all()


@pytest.mark.parametrize("guide", sorted(CODES))
def test_closed_form_kl_is_the_sum_over_states(guide):
    """KL(q ‖ p) = Σ_z q(z)(log q(z) − log p(z)) over the states written out."""
    model, q, x = _small(guide)
    dist, prior = q.posterior(x), model.prior()
    states = torch.tensor(CODES[guide]["states"], dtype=torch.float64).unsqueeze(1)  # (S, 1, d)
    log_q = dist.log_prob(states)  # (S, B)
    by_hand = (log_q.exp() * (log_q - prior.log_prob(states))).sum(0)
    torch.testing.assert_close(analytic_kl(dist, prior), by_hand)
    torch.testing.assert_close(analytic_kl(dist.relaxed(0.5), prior), by_hand)


def _mean_gradient(model, q, x, name: str, tau: float, draws: int) -> tuple[torch.Tensor, ...]:
    """The mean of ``draws`` single-draw gradients of the loss (every parameter, flattened)."""
    params = [*model.parameters(), *q.parameters()]
    estimator = make_estimator(name, draws)  # K = draws particles: one vectorized pass
    with Temperature(tau):
        p = estimator.particles(model, q, (x,), {})
        loss = -estimator.bound(p)  # the bound averages over the K draws
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.flatten() for g in grads])


TEMPERATURES = (2.0, 1.0, 0.5, 0.1)


def test_relaxation_bias_shrinks_as_the_temperature_falls():
    """Distance of the gumbel-softmax gradient's mean to the exact (enumerated) gradient at
    τ = 2, 1, 0.5, 0.1 decreases; at τ = 2 it is many standard errors.

    The mean over K = 4000 draws is one vectorized pass; its standard error per component is
    sd/√K. sd is measured from 20 means of 200 draws each (sd of a mean of 200 = sd/√200), and
    the squared distance's noise, Σ_j se_j² ≈ ‖se‖², is compared with the measured bias ‖b‖²."""
    model, q, x = _small("bernoulli", seed=3)
    params = [*model.parameters(), *q.parameters()]
    exact = torch.cat(
        [
            g.flatten()
            for g in torch.autograd.grad(
                make_estimator("enumerate").differentiable_loss(model, q, x), params
            )
        ]
    )
    set_seed(0)
    distances, noise = [], []
    for tau in TEMPERATURES:
        mean = _mean_gradient(model, q, x, "gumbel-softmax", tau, 4000)
        small = torch.stack(
            [_mean_gradient(model, q, x, "gumbel-softmax", tau, 200) for _ in range(20)]
        )
        se = small.std(0) * math.sqrt(200 / 4000)  # s.e. of the K = 4000 mean, per component
        distances.append((mean - exact).norm().item())
        noise.append(se.norm().item())
    print("τ", TEMPERATURES, "‖bias‖", distances, "‖s.e.‖", noise)
    assert distances[0] > 10 * noise[0]  # the bias at τ = 2 is many standard errors
    for a, b, na, nb in zip(distances, distances[1:], noise, noise[1:], strict=False):
        assert b < a - 2 * (na + nb)  # each step down in τ moves closer, beyond the noise


def test_straight_through_value_is_the_elbo_estimate_at_its_hard_draw():
    """Its forward value is log p(x|z) − KL(q ‖ p) at z the hard draw (an exact draw of q);
    its gradient differs from the exact one by more than its noise."""
    model, q, x = _small("categorical")
    estimator = make_estimator("straight-through")
    with Temperature(0.7):
        p = estimator.particles(model, q, (x,), {})
    z = p.latents["z"][0].detach()  # (B, 6): hard + soft − soft, one-hot up to rounding
    hard = z.round()
    torch.testing.assert_close(z, hard, rtol=0, atol=1e-12)
    assert (hard.reshape(5, 2, 3).sum(-1) == 1).all()  # one category per group
    log_lik = model.likelihood(model.decoder(hard)).log_prob(x)
    kl = analytic_kl(q.posterior(x), model.prior())
    assert estimator.bound(p).item() == pytest.approx((log_lik - kl).sum().item(), abs=1e-9)
    params = [*model.parameters(), *q.parameters()]
    exact = torch.cat(
        [
            g.flatten()
            for g in torch.autograd.grad(
                make_estimator("enumerate").differentiable_loss(model, q, x), params
            )
        ]
    )
    # an unbiased mean would sit about ‖s.e.‖ from the exact gradient (a norm of N(0, se_j²));
    # s.e. of the K = 20000 mean from 20 means of 1000 draws, as in the relaxation test above
    set_seed(1)
    mean = _mean_gradient(model, q, x, "straight-through", 0.7, 20000)
    small = torch.stack(
        [_mean_gradient(model, q, x, "straight-through", 0.7, 1000) for _ in range(20)]
    )
    se = (small.std(0) * math.sqrt(1000 / 20000)).norm().item()
    assert (mean - exact).norm().item() > 5 * se


def test_temperature_schedule_values():
    """τ_t = max(0.5, exp(−r N ⌊t/N⌋)), r = 1e-4, N = 500 (Jang et al. 2017's form)."""
    tau = temperature_schedule()
    assert tau(0) == 1.0 and tau(499) == 1.0
    assert tau(500) == pytest.approx(math.exp(-0.05))
    assert tau(1999) == pytest.approx(math.exp(-0.15))
    assert tau(10**6) == 0.5
    fast = temperature_schedule(initial=2.0, minimum=0.1, rate=0.01, interval=10)
    assert [round(fast(t), 6) for t in (0, 9, 10, 25)] == [
        2.0,
        2.0,
        round(2 * math.exp(-0.1), 6),
        round(2 * math.exp(-0.2), 6),
    ]
    with pytest.raises(PyroVAEError, match="--temperature-min must be a positive number"):
        temperature_schedule(minimum=0.0)


@pytest.mark.parametrize("name", ["gumbel-softmax", "straight-through"])
def test_compiled_step_follows_the_temperature(name):
    """The compiled step gives the eager loss and gradients at two temperatures from one graph
    (τ is an input of the recorded graph, not a constant)."""
    model, q, x = _small("categorical", estimator=name)
    model, q, x = model.float(), q.float(), x.float()
    compiled = CompiledELBO(make_estimator(name), log=lambda line: None)
    params = [*model.parameters(), *q.parameters()]
    for tau in (1.0, 0.3):
        for p in params:
            p.grad = None
        set_seed(5)
        with Temperature(tau):
            eager = make_estimator(name).differentiable_loss(model, q, x)
        eager.backward()
        want = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        set_seed(5)
        with Temperature(tau):
            got = compiled.loss_and_grads(model, q, x)
        assert got == pytest.approx(eager.item(), rel=1e-5)
        for p, g in zip(params, want, strict=True):
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)
    assert compiled.num_graphs == 1 and not compiled.stats.fallbacks


@pytest.mark.parametrize("guide", sorted(CODES))
def test_discrete_priors_are_uniform_and_broadcast_over_plates(guide):
    """p(z) = 1/S for each of the S states; batch () expands to (K, B) under the plates."""
    import pyro
    from pyro import poutine

    model, _, _ = _small(guide)
    prior = model.prior()
    states = torch.tensor(CODES[guide]["states"], dtype=torch.float64)
    assert prior.batch_shape == () and prior.event_shape == (states.shape[1],)
    torch.testing.assert_close(
        prior.log_prob(states), torch.full((len(states),), -math.log(len(states)), dtype=F64)
    )

    def sampled():
        with pyro.plate("particles", 4, dim=-2), pyro.plate("data", 5, dim=-1):
            return pyro.sample("z", model.prior())

    site = poutine.trace(sampled).get_trace().nodes["z"]
    assert site["value"].shape == (4, 5, states.shape[1])
    assert site["fn"].log_prob(site["value"]).shape == (4, 5)
