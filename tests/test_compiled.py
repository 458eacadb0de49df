"""The compiled fast path (CompiledELBO) gives the eager loss and gradients, for every estimator
and every part, after parameter updates, across batch shapes and β; Inductor's kernels too (in
float64, where summation order cannot hide a wrong graph); a step it cannot record runs eagerly
and says so; training with it is the same run, a resumed one included."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES, any_likelihood

from pyrovae import TrainConfig, build_model_and_guide, fit, train_run
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.modules import buffers_kept
from pyrovae.core.runtime import seeded, set_seed
from pyrovae.data import load_data
from pyrovae.data.base import PIXEL_MODES
from pyrovae.guides.families import GUIDES
from pyrovae.inference.beta import LatentScale
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.kinds import applicable
from pyrovae.inference.recording import compile_backend
from pyrovae.inference.train import make_optimizer
from pyrovae.models.likelihoods import LIKELIHOODS
from pyrovae.models.prior import PRIORS
from pyrovae.nets import NETS
from pyrovae.runs.config import TrainConfig as Config
from pyrovae.runs.folder import read_config

D = 784
# float32 sums of ~10⁴ terms, evaluated in a different order by the compiled graph
RTOL = 1e-5


def _parts(device="cpu", dtype=torch.float32, **changes):
    config = TrainConfig(hidden=(16,), latent_dim=3, **changes)
    set_seed(0)
    model, guide = build_model_and_guide(config, D)
    return model.to(device, dtype), guide.to(device, dtype)


def _batch(n=6, pixels="dynamic", device="cpu", dtype=torch.float32):
    """Pixels as the data module gives them: binarized, grey levels, or on the 8-bit grid."""
    mode = PIXEL_MODES[pixels]
    with seeded(1):
        x = torch.rand(n, D, device=device, dtype=dtype)
        if mode.binary:
            return torch.bernoulli(x)
        return x if mode.levels is None else (x * mode.levels).round() / mode.levels


def _loss_and_grads(estimator, model, guide, x, seed):
    params = list(model.parameters()) + list(guide.parameters())
    for p in params:
        p.grad = None
    with seeded(seed):
        loss = estimator.loss_and_grads(model, guide, x)
        after = torch.rand(())  # where the global generator stands afterwards
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    return torch.tensor(loss, dtype=torch.float64), grads, after


def _assert_same(plain, fast, rtol=RTOL):
    (loss_a, grads_a, after_a), (loss_b, grads_b, after_b) = plain, fast
    torch.testing.assert_close(loss_b, loss_a, rtol=rtol, atol=0)
    for a, b in zip(grads_a, grads_b, strict=True):
        scale = a.abs().max().item() + 1e-12
        torch.testing.assert_close(b, a, rtol=rtol, atol=rtol * scale)
    assert after_a == after_b  # the same random draws, no more (recording's are discarded)


def _steps_agree(name, k, model, guide, x, backend=None, rtol=RTOL, seeds=(3, 4, 5)):
    """Eager and compiled on the same noise, with parameter updates in between; one graph.
    A running average the step updates (NVIL's) is put back after the eager step, so both
    steps start from the same one."""
    plain = make_estimator(name, k)
    fast = CompiledELBO(make_estimator(name, k), backend=backend, log=_refuse_fallback)
    optimizer = make_optimizer((model, guide), 1e-2)
    for seed in seeds:
        with buffers_kept((model, guide)):
            eager = _loss_and_grads(plain, model, guide, x, seed)
        _assert_same(eager, _loss_and_grads(fast, model, guide, x, seed), rtol)
        optimizer.step()
    assert fast.num_graphs == 1 and not fast.stats.fallbacks


def _refuse_fallback(line):
    assert not line.startswith("the training step runs eagerly"), line


def accepts(name, k):
    """Whether estimator ``name`` takes K = ``k`` (a leave-one-out baseline, VIMCO and RWS
    need K ≥ 2)."""
    try:
        make_estimator(name, k)
    except PyroVAEError:
        return False
    return True


def built_for(name, k=3):
    """The config fields that build model and guide for estimator ``name`` (NVIL's guide holds
    its baseline network)."""
    return {"estimator": name, "num_particles": k}


# the estimators for the continuous codes used here; the discrete ones: test_discrete_codes.py
CONTINUOUS = any_likelihood(applicable(ESTIMATORS, "continuous"))


def _cases():
    for name in CONTINUOUS:
        for k in (1, 3):
            if accepts(name, k):
                yield name, k


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,k", list(_cases()))
def test_every_estimator_gives_the_eager_loss_and_gradients(device, name, k):
    model, guide = _parts(device, **built_for(name))
    _steps_agree(name, k, model, guide, _batch(device=device))


@pytest.mark.slow
@pytest.mark.parametrize("name", CONTINUOUS)
def test_inductor_kernels_give_the_eager_loss_and_gradients(name):
    """Inductor's generated code, in float64: equal to eager far below float32's rounding, so
    a wrong graph (a lost stop-gradient, a constant where an input belongs) cannot pass."""
    model, guide = _parts(dtype=torch.float64, **built_for(name))
    x = _batch(dtype=torch.float64)
    _steps_agree(name, 3, model, guide, x, backend="inductor", rtol=1e-9, seeds=(3, 4))


def _one_of_each():
    """Every likelihood, guide, prior and net at least once (the others at their defaults)."""
    for likelihood in LIKELIHOODS:
        yield {"likelihood": likelihood}
    for guide, family in GUIDES.items():
        if family.latent_kind == "discrete":  # its own prior, and a relaxation to compile
            yield {"guide": guide, "prior": guide, "estimator": "straight-through"}
        else:
            yield {"guide": guide, "beta": 0.0 if guide == "delta" else 1.0}
    for prior in PRIORS:
        if getattr(PRIORS[prior], "conditional", False):  # p(z|c): with its condition
            yield {"prior": prior, "condition_on": "quadrants:2"}
        elif PRIORS[prior].code == "continuous":  # a discrete prior comes with its guide above
            yield {"prior": prior}
    for net in NETS:
        yield {"net": net}


@pytest.mark.parametrize(
    "changes", list(_one_of_each()), ids=lambda c: "-".join(map(str, c.values()))
)
def test_every_part_gives_the_eager_loss_and_gradients(changes):
    accepted = LIKELIHOODS[changes.get("likelihood", "bernoulli")].pixels
    pixels = "dynamic" if "dynamic" in accepted else min(accepted)  # grey, or 8bit
    beta = changes.pop("beta", 1.0)
    model, guide = _parts(pixels=pixels, **changes)
    x = _batch(pixels=pixels)
    with LatentScale(beta):
        _steps_agree(changes.get("estimator", "elbo"), 2, model, guide, x, seeds=(5, 6))


def test_a_graph_per_shape_and_mode_not_per_beta():
    model, guide = _parts()
    fast = CompiledELBO(make_estimator("analytic-kl"), log=_refuse_fallback)
    for n in (6, 6, 4, 6):
        fast.loss_and_grads(model, guide, _batch(n))
    assert fast.num_graphs == 2  # batches of 6 and of 4
    plain = make_estimator("analytic-kl")
    x = _batch(6)
    for beta in (0.5, 2.0, 0.25):  # β is an input of the graph: a warm-up changes it every step
        with LatentScale(beta):
            _assert_same(
                _loss_and_grads(plain, model, guide, x, 7),
                _loss_and_grads(fast, model, guide, x, 7),
            )
    assert fast.num_graphs == 3  # one more: the handler is part of the graph, its value is not
    model.eval()  # train/eval mode is part of the key
    fast.loss_and_grads(model, guide, x)
    assert fast.num_graphs == 4


class _Branching:
    """An estimator whose loss branches on a value in Python: no recording can express it."""

    def __init__(self):
        self.inner = make_estimator("elbo")

    def differentiable_loss(self, model, guide, x):
        loss = self.inner.differentiable_loss(model, guide, x)
        return loss * 2 if loss.item() > 0 else loss

    def loss_and_grads(self, model, guide, x):
        loss = self.differentiable_loss(model, guide, x)
        loss.backward()
        return loss.item()


def test_a_step_that_cannot_be_recorded_runs_eagerly_and_says_why():
    model, guide = _parts()
    x = _batch()
    lines = []
    fast = CompiledELBO(_Branching(), log=lines.append)
    plain = _Branching()
    for seed in (3, 4):
        _assert_same(
            _loss_and_grads(plain, model, guide, x, seed),
            _loss_and_grads(fast, model, guide, x, seed),
        )
    assert fast.num_graphs == 0 and len(fast.stats.fallbacks) == 1
    assert len(lines) == 1 and lines[0].startswith("the training step runs eagerly")
    assert "\n" not in lines[0] and "RuntimeError" in lines[0]


def test_the_compile_time_is_reported_once_per_graph():
    model, guide = _parts()
    lines = []
    fast = CompiledELBO(make_estimator("elbo"), log=lines.append)
    for _ in range(3):
        fast.loss_and_grads(model, guide, _batch())
    assert len(lines) == 1 and lines[0].startswith("compiled the training step in ")
    assert lines[0].endswith(f"({compile_backend()})")


def test_evaluation_loss_is_the_eager_one():
    model, guide = _parts()
    x = _batch()
    fast = CompiledELBO(make_estimator("iwae", 4))
    with seeded(2):
        a = make_estimator("iwae", 4).loss(model, guide, x)
    with seeded(2):
        b = fast.loss(model, guide, x)
    assert a == b and fast.num_graphs == 0


@pytest.mark.parametrize("kl_warmup", [0, 7])
def test_training_compiled_is_the_same_run(idx_dir, kl_warmup):
    data = load_data("mnist", "dynamic", data_dir=str(idx_dir), download=False)
    histories, weights = [], []
    for compile in (False, True):
        model, guide = _parts(dataset="mnist")
        kwargs = {"epochs": 2, "batch_size": 64, "seed": 1, "beta": 0.5, "kl_warmup": kl_warmup}
        # 2 epochs of 5 steps, the last one a partial batch: two graphs
        history = fit(model, guide, data, "elbo", compile=compile, progress=False, **kwargs)
        histories.append(history)
        weights.append([p.detach().clone() for p in guide.parameters()])
    for a, b in zip(*histories, strict=True):
        for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "beta"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("estimator,k", [("elbo", 1), ("iwae-dreg", 3)])
def test_a_resumed_inductor_run_is_bitwise_the_run_straight_through(
    tmp_path, idx_dir, monkeypatch, estimator, k
):
    """Every step of a signature runs the compiled graph (the warm-up is discarded), so a run
    resumed from its checkpoint replays the same kernels on the same state."""
    monkeypatch.setenv("PYROVAE_COMPILE_BACKEND", "inductor")
    small = {"dataset": "mnist", "hidden": (16,), "latent_dim": 3, "device": "cpu",
             "estimator": estimator, "num_particles": k, "batch_size": 64}
    from pyrovae import resume_run

    _, straight = train_run(TrainConfig(**small, epochs=2), tmp_path / "a", str(idx_dir),
                            download=False, progress=False)
    path, _ = train_run(TrainConfig(**small, epochs=1), tmp_path / "b", str(idx_dir),
                        download=False, progress=False)
    _, resumed = resume_run(path, epochs=2, data_dir=str(idx_dir), download=False,
                            progress=False)
    for key in ("train_elbo", "test_elbo"):
        assert resumed[-1][key] == straight[-1][key], key


def test_a_run_with_no_compile_is_the_same_run(tmp_path, idx_dir):
    small = {"dataset": "mnist", "hidden": (16,), "latent_dim": 3, "epochs": 1, "device": "cpu"}
    runs = {}
    for no_compile in (False, True):
        config = TrainConfig(**small, no_compile=no_compile)
        path, history = train_run(
            config, tmp_path / str(no_compile), str(idx_dir), download=False, progress=False
        )
        assert read_config(path).no_compile is no_compile  # recorded, so --resume keeps it
        runs[no_compile] = history[-1]
    for key in ("train_elbo", "test_elbo"):
        assert runs[True][key] == pytest.approx(runs[False][key], rel=1e-5)


def test_a_run_recorded_with_no_jit_reads_as_no_compile():
    """Runs recorded before the compiled path named the setting ``no_jit``."""
    assert Config.from_dict({"no_jit": True}).no_compile is True
    assert Config.from_dict({"no_jit": False}).no_compile is False


def test_only_full_batches_are_compiled(idx_dir, monkeypatch):
    """A short last batch comes once an epoch: its own compile would not repay, so it runs
    eagerly (the same at every step of a resumed run, so resuming stays exact)."""
    import pyrovae.inference.train as train

    made = []

    class Spy(CompiledELBO):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(train, "CompiledELBO", Spy)
    data = load_data("mnist", "dynamic", data_dir=str(idx_dir), download=False)
    model, guide = _parts(dataset="mnist")
    fit(model, guide, data, "elbo", epochs=2, batch_size=64, progress=False)  # 300 = 4·64 + 44
    (fast,) = made
    assert fast.num_graphs == 1 and not fast.stats.fallbacks
