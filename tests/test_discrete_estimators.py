"""Score-function estimators for discrete latent sites (nvil, vimco, rws): unbiased for the
gradient found by exact enumeration (and a baseline that reads the sample it weights caught),
RWS's update by hand and against Pyro's, compiled steps equal to eager ones, and the CLI."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import ReweightedWakeSleep, TraceGraph_ELBO
from test_compiled import _assert_same, _loss_and_grads, _refuse_fallback
from torch import nn

from pyrovae import TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import seeded
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.diagnostics import default_groups
from pyrovae.inference.nvil import NVILBaseline
from pyrovae.inference.particles import vectorized
from pyrovae.inference.report import bound_name
from pyrovae.inference.score_function import BASELINES, ScoreFunctionELBO
from pyrovae.inference.train import make_optimizer
from pyrovae.runs.folder import CONFIG, DIAGNOSTICS, EVALUATION

F64 = torch.float64
X = torch.tensor([0.8, -1.7], dtype=F64)  # B = 2 datapoints
B = X.shape[0]
DRAWS = 2000  # independent gradient estimates per estimator
Z = 3.5  # the test's threshold in standard errors (see test_unbiased_for_the_exact_gradient)


def _bits(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=F64)


# family name → (distribution from logits (…, d), every state (S, d))
FAMILIES = {
    "one-hot": (lambda logits: dist.OneHotCategorical(logits=logits), torch.eye(3, dtype=F64)),
    "bernoulli": (lambda logits: dist.Bernoulli(logits=logits).to_event(1), _bits(2)),
}


class Model(nn.Module):
    """p(z) = family(a_r), p(x|z) = N(Σ_j z_j m_rj, 1): θ = (a, m), one row per datapoint, so
    each datapoint's gradient is its own rows' (R rows: replicas of the B datapoints)."""

    def __init__(self, family: str, a: torch.Tensor, m: torch.Tensor) -> None:
        super().__init__()
        self.family = family
        self.a, self.m = nn.Parameter(a.clone()), nn.Parameter(m.clone())

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", FAMILIES[self.family][0](self.a))  # (K, R, d)
            pyro.sample("x", dist.Normal((z * self.m).sum(-1), 1.0), obs=x)


class Guide(nn.Module):
    """q(z|x_r) = family(φ_r): a table of logits, one row per datapoint; ``baseline``: NVIL's."""

    def __init__(self, family: str, phi: torch.Tensor, baseline: nn.Module | None = None):
        super().__init__()
        self.family = family
        self.phi = nn.Parameter(phi.clone())
        self.baseline = baseline

    def forward(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", FAMILIES[self.family][0](self.phi))


def _base(family: str) -> tuple[torch.Tensor, ...]:
    """θ = (a, m) and φ, each (B, d), fixed and away from any optimum (gradients ≠ 0)."""
    d = FAMILIES[family][1].shape[1]
    g = torch.Generator().manual_seed(2)
    return tuple(torch.randn(B, d, generator=g, dtype=F64) for _ in range(3))


def _fixed_baseline() -> NVILBaseline:
    """b_ψ(x) + c with random ψ and c = −2, frozen (eval mode: the average does not move)."""
    torch.manual_seed(4)
    baseline = NVILBaseline(1).to(F64).eval()
    baseline.total.fill_(-2.0 * 0.5)
    baseline.weight.fill_(0.5)
    return baseline


def _parts(family: str, replicas: int = 1, baseline: nn.Module | None = None):
    a, m, phi = (t.repeat(replicas, 1) for t in _base(family))
    return Model(family, a, m), Guide(family, phi, baseline), X.repeat(replicas)


def exact_gradient(family: str, k: int | None) -> torch.Tensor:
    """∇ of the ELBO (``k`` None) or of L_K, summed over the B datapoints, by enumerating every
    state (every K-tuple of states for L_K): (B, 3d), per datapoint [∇a, ∇m, ∇φ]."""
    make, states = FAMILIES[family]
    a, m, phi = (t.clone().requires_grad_() for t in _base(family))
    s = states[:, None, :]  # (S, 1, d)
    log_q = make(phi).log_prob(s)  # (S, B)
    log_w = make(a).log_prob(s) + dist.Normal((s * m).sum(-1), 1.0).log_prob(X) - log_q
    if k is None:
        objective = (log_q.exp() * log_w).sum()
    else:
        tuples = torch.tensor(list(itertools.product(range(len(states)), repeat=k)))  # (T, K)
        prob = log_q[tuples].sum(1).exp()  # (T, B): q(z_1)…q(z_K)
        objective = (prob * (torch.logsumexp(log_w[tuples], 1) - math.log(k))).sum()
    grads = torch.autograd.grad(objective, (a, m, phi))
    return torch.cat(grads, -1)


def gradient_draws(estimator, family: str, baseline: nn.Module | None = None) -> torch.Tensor:
    """``DRAWS`` independent estimates of ∇ of the estimator's objective, (DRAWS, B, 3d), in one
    pass: every draw is a replica of the B datapoints with its own copy of θ and φ, so the
    gradient at replica r's rows is the estimate of draw r (the loss is a sum over datapoints,
    each with its own particles, baselines and weights)."""
    model, guide, x = _parts(family, DRAWS, baseline)
    with seeded(0):
        estimator.loss_and_grads(model, guide, x)
    grads = torch.cat([model.a.grad, model.m.grad, guide.phi.grad], -1)  # (DRAWS·B, 3d)
    return -grads.reshape(DRAWS, B, -1)  # the loss is −objective


def z_scores(draws: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """(mean − exact) / s.e. per component, s.e. = sample std / √n."""
    se = draws.std(0) / math.sqrt(draws.shape[0])
    return (draws.mean(0) - exact) / se


# (estimator, K, objective's K: None for the ELBO)
UNBIASED = [
    ("score-function", 1, None),
    ("score-function-loo", 3, None),
    ("nvil", 1, None),
    ("nvil", 3, None),
    ("vimco", 2, 2),
    ("vimco", 3, 3),
]


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("name,k,objective", UNBIASED)
def test_unbiased_for_the_exact_gradient(family, name, k, objective):
    """Every component of the mean of 2000 draws within 3.5 s.e. of the exact gradient (ELBO,
    or L_K for VIMCO, by enumerating all states or K-tuples of states). A case checks
    B·3d components (18 for one-hot, 12 for bernoulli); the mean of 2000 draws is close to
    normal, so a component of an unbiased estimator leaves ±3.5 s.e. with probability 4.7e-4,
    and by Bonferroni a case fails by chance with probability ≤ 18 · 4.7e-4 < 0.9 %, all 12
    cases together ≤ 180 · 4.7e-4 < 9 % (for this seed they pass; a bias of 3.5 s.e., e.g.
    5 % of a component for the score function here, is caught). NVIL's baseline b_ψ and
    running average are fixed (random ψ, c = −2); ψ's own gradient is not compared."""
    baseline = _fixed_baseline() if name == "nvil" else None
    draws = gradient_draws(make_estimator(name, k), family, baseline)
    scores = z_scores(draws, exact_gradient(family, objective))
    assert scores.abs().max() < Z, scores


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_baseline_from_the_sample_it_weights_fails_the_same_check(family, monkeypatch):
    """b_k = c·f_k makes the φ-signal (1 − c) f_k: the φ-gradient's mean is (1 − c) times the
    true one. With c = 2 it points the other way, so the check above fails by many s.e."""
    monkeypatch.setitem(BASELINES, "own-sample", lambda f: 2.0 * f)
    broken = ScoreFunctionELBO(num_particles=2, baseline="own-sample", max_plate_nesting=1)
    draws = gradient_draws(broken, family)
    scores = z_scores(draws, exact_gradient(family, None))
    assert scores.abs().max() > 5 * Z, scores


def test_vimco_and_rws_refuse_one_particle_and_report_their_bound_as_l_k():
    for name in ("vimco", "rws"):
        with pytest.raises(PyroVAEError, match=f"^{name} needs --num-particles of at least 2"):
            make_estimator(name, 1)
        assert bound_name(make_estimator(name, 3)) == "bound L_3"
    assert bound_name(make_estimator("nvil", 3)) == "ELBO"


def _grads(*modules):
    return [p.grad.clone() for mod in modules for p in mod.parameters()]


def test_rws_wake_updates_equal_their_formulas_on_the_same_noise():
    """θ: Σ_k w̃_k ∇_θ log p(x, z_k); wake-φ: Σ_k w̃_k ∇_φ log q(z_k|x), per datapoint, by
    hand from the same z_k (the guide's draws under the same seed), in float64."""
    k = 3
    model, guide, x = _parts("one-hot")
    with seeded(7):
        loss = make_estimator("rws", k).loss_and_grads(model, guide, x)
    got = _grads(model, guide)
    with seeded(7):
        z = poutine.trace(vectorized(guide, k)).get_trace(x).nodes["z"]["value"].detach()
    make = FAMILIES["one-hot"][0]
    log_p = make(model.a).log_prob(z) + dist.Normal((z * model.m).sum(-1), 1.0).log_prob(x)
    log_q = make(guide.phi).log_prob(z)  # (K, B)
    w = torch.softmax((log_p - log_q).detach(), 0)
    assert loss == pytest.approx(-(torch.logsumexp(log_p - log_q, 0) - math.log(k)).sum().item())
    want = [
        *torch.autograd.grad((w * log_p).sum(), (model.a, model.m)),
        *torch.autograd.grad((w * log_q).sum(), guide.phi),
    ]
    for g, h in zip(got, want, strict=True):
        torch.testing.assert_close(g, -h, rtol=1e-6, atol=1e-12)  # both ascended: loss = −…


def test_rws_equals_pyros_reweighted_wake_sleep_for_one_datapoint():
    """Pyro's ReweightedWakeSleep (insomnia 1) takes one log-sum-exp over K of log-weights
    summed over the batch; for a batch of one datapoint that is ours, loss and gradients."""
    k = 4
    parts = [_parts("bernoulli") for _ in range(2)]
    x = X[:1]
    for model, guide, _ in parts:
        for p in (model.a, model.m, guide.phi):
            p.data = p.data[:1]
    (m1, g1, _), (m2, g2, _) = parts
    with seeded(3):
        ours = make_estimator("rws", k).loss_and_grads(m1, g1, x)
    with seeded(3):
        theirs = ReweightedWakeSleep(num_particles=k, max_plate_nesting=1).loss_and_grads(m2, g2, x)
    assert ours == pytest.approx(theirs[0], rel=1e-12)  # wake-θ loss: −L_K
    for a, b in zip(_grads(m1, g1), _grads(m2, g2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class TraceGraphGuide(Guide):
    """The same q, with the baseline b_ψ(x) handed to Pyro's TraceGraph_ELBO at the site."""

    def forward(self, x):
        infer = {"baseline": {"nn_baseline": self.baseline, "nn_baseline_input": x}}
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", FAMILIES[self.family][0](self.phi), infer=infer)


def test_nvil_is_pyros_tracegraph_elbo_with_the_same_baseline():
    """K = 1, c = 0 (no step yet) and the same b_ψ: θ-gradients equal; φ: TraceGraph_ELBO's
    Σ (f − b) ∇ log q lacks our mean-zero −∇ log q(z); ψ: its squared error has no ½."""
    torch.manual_seed(4)
    baseline = NVILBaseline(1).to(F64)
    model, guide, x = _parts("bernoulli", 1, baseline)
    model2, guide2 = copy.deepcopy(model), TraceGraphGuide("bernoulli", guide.phi.detach())
    guide2.baseline = copy.deepcopy(baseline)
    with seeded(6):
        make_estimator("nvil").loss_and_grads(model, guide, x)
    with seeded(6):
        TraceGraph_ELBO(max_plate_nesting=1).loss_and_grads(model2, guide2, x)
    with seeded(6):
        z = poutine.trace(guide2).get_trace(x).nodes["z"]["value"]
    (score,) = torch.autograd.grad(
        FAMILIES["bernoulli"][0](guide2.phi).log_prob(z).sum(), guide2.phi
    )
    for a, b in ((model.a, model2.a), (model.m, model2.m)):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(guide.phi.grad, guide2.phi.grad + score, rtol=1e-10, atol=1e-12)
    for a, b in zip(baseline.parameters(), guide2.baseline.parameters(), strict=True):
        torch.testing.assert_close(2 * a.grad, b.grad, rtol=1e-10, atol=1e-12)


def _vae_parts(name, k):
    set_seed(0)
    config = TrainConfig(hidden=(16,), latent_dim=3, estimator=name, num_particles=k)
    return build_model_and_guide(config, 784)


@pytest.mark.parametrize("where", ["discrete", "vae"])
@pytest.mark.parametrize("name,k", [("nvil", 1), ("nvil", 3), ("vimco", 3), ("rws", 2)])
def test_a_compiled_step_equals_the_eager_one(where, name, k):
    """Same seed, two copies of model and guide: eager on one, compiled on the other; loss,
    gradients and NVIL's running average after each step agree, through optimizer steps.
    (The discrete model's sites are Bernoulli: torch's OneHotCategorical.sample calls one_hot,
    which reads its indices' values, so a step with it is not recorded and runs eagerly.)"""
    if where == "discrete":
        baseline = NVILBaseline(1).to(F64) if name == "nvil" else None
        model, guide, x = _parts("bernoulli", 1, baseline)
    else:
        model, guide = _vae_parts(name, k)
        with seeded(1):
            x = torch.bernoulli(torch.rand(6, 784))
    copies = (model, guide), copy.deepcopy((model, guide))
    plain = make_estimator(name, k)
    fast = CompiledELBO(make_estimator(name, k), log=_refuse_fallback)
    optimizers = [make_optimizer(pair, 1e-2) for pair in copies]
    for seed in (3, 4, 5):
        _assert_same(
            _loss_and_grads(plain, *copies[0], x, seed),
            _loss_and_grads(fast, *copies[1], x, seed),
            rtol=1e-5,
        )
        buffers = [dict(g.named_buffers()) for _, g in copies]
        for key, value in buffers[0].items():
            torch.testing.assert_close(buffers[1][key], value, rtol=1e-6, atol=0)
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert fast.num_graphs == 1
    if name == "nvil":  # the running average moved: three steps of weight 1 − 0.9^t
        assert copies[1][1].baseline.weight.item() == pytest.approx(1 - 0.9**3)


def test_nvil_trains_its_baseline_and_the_groups_keep_it_apart():
    """The guide built for nvil holds b_ψ: in the optimizer (it changes) and in its own
    diagnostic group, not in ``encoder``; its buffers are in the guide's state (checkpoint)."""
    model, guide = _vae_parts("nvil", 1)
    assert isinstance(guide.baseline, NVILBaseline)
    assert {"baseline.total", "baseline.weight"} <= set(guide.state_dict())
    groups = default_groups(model, guide)
    psi = {id(p) for p in guide.baseline.parameters()}
    assert {id(p) for p in groups["baseline"]} == psi
    assert not psi & {id(p) for p in groups["encoder"]}
    before = [p.detach().clone() for p in guide.baseline.parameters()]
    optimizer = make_optimizer((model, guide), 1e-2)
    with seeded(1):
        x = torch.bernoulli(torch.rand(6, 784))
    make_estimator("nvil").loss_and_grads(model, guide, x)
    optimizer.step()
    after = guide.baseline.parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert _vae_parts("elbo", 1)[1].baseline is None


# ---- the command line -----------------------------------------------------------------------

SMALL = ["--dataset", "mnist", "--hidden", "16", "--latent-dim", "3", "--batch-size", "50"]
QUIET = ["--device", "cpu", "--no-progress", "--no-download", "--no-figures"]


def _data(idx_dir):
    return ["--data-dir", str(idx_dir), "--no-download"]


def _train(tmp_path, idx_dir, name, k):
    run = tmp_path / name
    flags = ["--estimator", name, "--num-particles", str(k), "--epochs", "1"]
    args = ["train", *SMALL, *QUIET, *flags, "--train-subset", "100", "--run-dir", str(run)]
    assert main([*args, "--data-dir", str(idx_dir)]) == 0
    return run


def test_cli_trains_evaluates_and_diagnoses_each(tmp_path, idx_dir, capsys):
    runs = {name: _train(tmp_path, idx_dir, name, 2) for name in ("nvil", "vimco", "rws")}
    for run in runs.values():
        evaluate = ["evaluate", str(run), "--num-samples", "3", "--test-subset", "10"]
        assert main([*evaluate, "--no-progress", *_data(idx_dir)]) == 0
        (record,) = json.loads((run / EVALUATION).read_text())["evaluations"]
        assert math.isfinite(record["test_elbo"]) and math.isfinite(record["log_px"])
    grid = ["--estimators", "nvil", "vimco", "rws", "--num-particles", "2", "3"]
    small = ["--samples", "3", "--batch-size", "8", "--no-progress"]
    assert main(["diagnose", str(runs["nvil"]), *grid, *small, *_data(idx_dir)]) == 0
    rows = json.loads((runs["nvil"] / DIAGNOSTICS).read_text())["rows"]
    assert {(r["estimator"], r["num_particles"]) for r in rows} == {
        (e, k) for e in ("nvil", "vimco", "rws") for k in (2, 3)
    }
    for r in rows:  # b_ψ is its own group on nvil's rows only
        assert ("baseline" in r) == (r["estimator"] == "nvil")
        assert all(math.isfinite(r[g]["variance_mean"]) for g in ("encoder", "decoder"))
    capsys.readouterr()
    # nvil at a run trained without its baseline network: one line, exit 2
    nvil = ["--estimators", "nvil", "--num-particles", "2"]
    code = main(["diagnose", str(runs["vimco"]), *nvil, *small, *_data(idx_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("pyrovae: error: nvil needs the learned baseline")
    assert err.count("\n") == 1
    assert json.loads((runs["nvil"] / CONFIG).read_text())["config"]["estimator"] == "nvil"


def test_cli_refuses_vimco_with_one_particle(tmp_path, idx_dir, capsys):
    args = ["train", *SMALL, *QUIET, "--estimator", "vimco", "--num-particles", "1"]
    assert main([*args, "--run-dir", str(tmp_path / "r"), *_data(idx_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyrovae: error: vimco needs --num-particles of at least 2")
    assert err.count("\n") == 1
