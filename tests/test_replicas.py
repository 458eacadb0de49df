"""Seeds side by side (pyrovae.inference.replicas): the noise taken out of a recorded step is
the step's own; each replica of a batched step equals its lone compiled step on its own noise;
fit_replicas equals fit with each seed alone; failures name the seed."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import any_likelihood
from test_compiled import _parts, built_for

from pyrovae import fit
from pyrovae.core.errors import PyroVAEError, TrainingDiverged
from pyrovae.core.runtime import get_rng_state, set_seed
from pyrovae.data import load_data
from pyrovae.inference.compiled import CompiledELBO
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.kinds import applicable
from pyrovae.inference.recording import record_step
from pyrovae.inference.replicas import ReplicaStep, split_noise
from pyrovae.inference.side_by_side import check_seeds, fit_replicas, mean_and_std
from pyrovae.inference.train import make_optimizer

# estimators for continuous codes (the discrete ones: test_discrete_codes.py)
CONTINUOUS = any_likelihood(applicable(ESTIMATORS, "continuous"))

SEEDS = (0, 1, 2)


def _batches(dtype=torch.float32, n=6):
    out = []
    for s in SEEDS:
        g = torch.Generator().manual_seed(100 + s)
        out.append((torch.rand(n, 784, generator=g, dtype=dtype).bernoulli(generator=g),))
    return out


def _streams():
    streams = []
    for s in SEEDS:
        set_seed(s)
        streams.append(get_rng_state())
    return streams


def test_the_noise_taken_out_is_the_steps_own():
    model, guide = _parts()
    (x,) = _batches()[0]
    rec = record_step(make_estimator("iwae", 3), model, guide, (x,))
    split = split_noise(rec)
    assert len(split.draws) == 1  # one standard-normal draw of shape (K, B, d)
    set_seed(5)
    want = rec.graph(*rec.inputs(), x)
    set_seed(5)
    got = split.graph(*rec.inputs(), x, *split.draw())
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_each_replica_equals_its_lone_step(name):
    """float64, so that batched matrix products (another summation order) cannot hide a
    wrong graph: 1e-9 relative, after optimizer steps, each replica on its own batch and
    noise stream."""
    k = 3
    lone = []
    for s, args in zip(SEEDS, _batches(torch.float64), strict=True):
        model, guide = _parts(dtype=torch.float64, **built_for(name))
        set_seed(s)
        fast = CompiledELBO(make_estimator(name, k))
        optimizer = make_optimizer((model, guide), 0.01)
        steps = []
        for _ in range(2):
            loss = fast.loss_and_grads(model, guide, *args)
            grads = [p.grad.clone() for p in (*model.parameters(), *guide.parameters())]
            steps.append((loss, grads))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        lone.append(steps)
    parts = [_parts(dtype=torch.float64, **built_for(name)) for _ in SEEDS]
    models, guides = zip(*parts, strict=True)
    optimizers = [make_optimizer((m, g), 0.01) for m, g in zip(models, guides, strict=True)]
    step, streams = ReplicaStep(make_estimator(name, k)), _streams()
    for i in range(2):
        losses = step.loss_and_grads(models, guides, _batches(torch.float64), streams)
        for r in range(len(SEEDS)):
            assert losses[r] == pytest.approx(lone[r][i][0], rel=1e-9)
            params = (*models[r].parameters(), *guides[r].parameters())
            for want, p in zip(lone[r][i][1], params, strict=True):
                torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-9 * want.abs().max())
            optimizers[r].step()
            optimizers[r].zero_grad(set_to_none=True)
    assert step.stats.graphs == 1 and not step.stats.fallbacks


class _DrawsFromTheLoss:
    """elbo plus zero times a draw shaped like the loss: a draw that reads the graph."""

    def __init__(self):
        self.inner = make_estimator("elbo")

    def differentiable_loss(self, model, guide, x):
        loss = self.inner.differentiable_loss(model, guide, x)
        return loss + 0 * torch.rand_like(loss)


def test_a_step_whose_noise_reads_its_inputs_runs_replica_by_replica():
    models, guides = zip(*[_parts() for _ in SEEDS], strict=True)
    lines = []
    step = ReplicaStep(_DrawsFromTheLoss(), log=lines.append)
    losses = step.loss_and_grads(models, guides, _batches(), _streams())
    assert all(math.isfinite(v) for v in losses)
    assert step.stats.graphs == 0 and len(step.stats.fallbacks) == 1
    assert lines[0].startswith("the replicas step one after another")


@pytest.mark.parametrize("kl_warmup", [0, 7])
@pytest.mark.parametrize("compile,batched", [(True, True), (True, False), (False, None)])
def test_fit_replicas_equals_fit_with_each_seed_alone(idx_dir, kl_warmup, compile, batched):
    data = load_data("mnist", "dynamic", data_dir=str(idx_dir), download=False)
    kwargs = {"epochs": 2, "batch_size": 64, "beta": 0.5, "kl_warmup": kl_warmup}
    lone = []
    for s in SEEDS[:2]:
        model, guide = _parts(dataset="mnist")
        history = fit(model, guide, data, "iwae", num_particles=2, seed=s, progress=False,
                      **kwargs)
        lone.append((history, [p.detach().clone() for p in guide.parameters()]))
    models, guides = zip(*[_parts(dataset="mnist") for _ in SEEDS[:2]], strict=True)
    optimizers = [make_optimizer((m, g), 1e-3) for m, g in zip(models, guides, strict=True)]
    seen = {0: [], 1: []}
    callbacks = [lambda rec, r=r: seen[r].append((rec["epoch"], torch.rand(()))) for r in (0, 1)]
    histories = fit_replicas(
        models, guides, data, "iwae", num_particles=2, seeds=SEEDS[:2], optimizers=optimizers,
        progress=False, compile=compile, batched=batched, on_epoch_end=callbacks, **kwargs
    )
    for r, (history, weights) in enumerate(lone):
        for a, b in zip(history, histories[r], strict=True):
            for key in ("train_elbo", "test_elbo", "test_recon", "test_kl", "beta", "lr"):
                assert b[key] == pytest.approx(a[key], rel=1e-5), (r, key)
        for a, b in zip(weights, guides[r].parameters(), strict=True):
            torch.testing.assert_close(b.detach(), a, rtol=1e-4, atol=1e-5)
    # each replica's callback ran under that replica's own stream (a checkpoint saves it)
    assert [e for e, _ in seen[0]] == [1, 2] and seen[0][0][1] != seen[1][0][1]


def test_a_replica_that_diverges_stops_all_naming_its_seed(idx_dir):
    data = load_data("mnist", "dynamic", data_dir=str(idx_dir), download=False)
    models, guides = zip(*[_parts(dataset="mnist") for _ in SEEDS], strict=True)
    with torch.no_grad():
        next(iter(guides[1].parameters())).fill_(math.nan)
    optimizers = [make_optimizer((m, g), 1e-3) for m, g in zip(models, guides, strict=True)]
    with pytest.raises(TrainingDiverged, match=r"^seed 1: epoch 1, step 1: loss became nan"):
        fit_replicas(models, guides, data, seeds=SEEDS, optimizers=optimizers, epochs=1,
                     progress=False)


def test_seeds_are_checked_and_summarized():
    with pytest.raises(PyroVAEError, match="at least two"):
        check_seeds([3])
    with pytest.raises(PyroVAEError, match="distinct"):
        check_seeds([3, 3])
    mean, std = mean_and_std([1.0, 2.0, 3.0])
    assert mean == 2.0 and std == pytest.approx(1.0)
    assert math.isnan(mean_and_std([4.0])[1])


def test_the_replicas_streams_leave_the_global_generator_alone():
    models, guides = zip(*[_parts() for _ in SEEDS], strict=True)
    streams = _streams()
    set_seed(9)
    before = get_rng_state()
    ReplicaStep(make_estimator("elbo")).loss_and_grads(models, guides, _batches(), streams)
    assert torch.equal(get_rng_state()["torch"], before["torch"])
    assert not torch.equal(streams[0]["torch"], _streams()[0]["torch"])  # advanced in place
