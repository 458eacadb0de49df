"""The two-stochastic-layer VAE (Burda et al. 2015): p(z2) p(z1|z2) p(x|z1) and q(z1|x) q(z2|z1),
chosen with ``--latent-dim d1 d2``: its wiring, every estimator (plain and on the recorded fast
path), β on both sites, posterior means and active units per layer, the run folder (resume,
evaluate, diagnose, figures) and the refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import any_likelihood
from pyro import poutine
from test_compiled import _batch, _steps_agree, accepts, built_for
from test_hierarchical_estimators import D1, D2, data, hierarchical_model

from pyrovae import TrainConfig, build_model_and_guide, plots, resume_run, set_seed, train_run
from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.runtime import seeded
from pyrovae.guides.families import GUIDES
from pyrovae.inference import (
    active_units,
    active_units_by_site,
    draw_particles,
    gradient_statistics,
    posterior_means,
)
from pyrovae.inference.beta import LatentScale
from pyrovae.inference.estimators import ESTIMATORS, make_estimator
from pyrovae.inference.kinds import applicable
from pyrovae.models.linear_gaussian import HierarchicalLinearGuide
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import CONFIG, DIAGNOSTICS, EVALUATION, FIGURES

# estimators for continuous codes (the discrete ones: test_discrete_codes.py)
CONTINUOUS = any_likelihood(applicable(ESTIMATORS, "continuous"))

D = 784
TWO = {"latent_dim": (4, 3), "hidden": (16,), "upper_hidden": (8,)}
PATHWISE = [n for n in CONTINUOUS if n != "analytic-kl"]


def two_layers(device="cpu", seed=0, **changes):
    set_seed(seed)
    model, guide = build_model_and_guide(TrainConfig(**{**TWO, **changes}), D)
    return model.to(device), guide.to(device)


# ---- wiring ------------------------------------------------------------------------------------


def test_two_latent_sizes_build_burdas_two_layer_model():
    model, guide = two_layers()
    x = _batch(5)
    g = poutine.trace(guide).get_trace(x)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x)
    latent = [n for n, s in g.nodes.items() if s["type"] == "sample" and n != "data"]
    assert latent == ["z1", "z2"] and guide.sites == model.sites == ("z1", "z2")
    assert g.nodes["z1"]["value"].shape == (5, 4) and g.nodes["z2"]["value"].shape == (5, 3)
    # the guide goes up: q(z2|z1) is the family of the net on z1
    z1, z2 = g.nodes["z1"]["value"], g.nodes["z2"]["value"]
    up = guide.layers[0]
    torch.testing.assert_close(g.nodes["z2"]["fn"].mean, up.family(up.net(z1)).mean)
    # the model comes down: p(z1|z2) = N(net(z2)), and the decoder sees z1 alone
    down = model.layers[0]
    torch.testing.assert_close(m.nodes["z1"]["fn"].mean, down(z2).mean)
    logits = model.decoder(z1)
    torch.testing.assert_close(m.nodes["x"]["fn"].base_dist.logits, logits)
    assert [layer.in_features for layer in up.net.net if hasattr(layer, "in_features")] == [4, 8]
    assert [layer.in_features for layer in down.net.net if hasattr(layer, "in_features")] == [3, 8]
    assert guide.latent_dims == (4, 3)


def test_one_latent_size_is_todays_model():
    """``--latent-dim 50`` and ``(50,)`` are the one-layer model, recorded as an int."""
    a, b = TrainConfig(latent_dim=5), TrainConfig(latent_dim=(5,))
    assert a == b and a.latent_dim == 5 and a.latent_dims == (5,)
    assert a.to_dict()["latent_dim"] == 5 and TrainConfig.from_dict(a.to_dict()) == a
    two = TrainConfig(latent_dim=[100, 50])
    assert two.latent_dim == (100, 50) and two.to_dict()["latent_dim"] == [100, 50]
    assert TrainConfig.from_dict(json.loads(json.dumps(two.to_dict()))) == two
    set_seed(0)
    model, guide = build_model_and_guide(TrainConfig(latent_dim=(3,), hidden=(16,)), D)
    assert guide.sites == ("z",) and len(model.layers) == 0 and len(guide.layers) == 0


def test_ancestral_generation_goes_down_the_layers():
    model, _ = two_layers()
    with seeded(3):
        images = model.generate(6)
    with seeded(3), torch.no_grad():
        z2 = model.prior().sample((6,))
        z1 = model.layers[0](z2).sample()
        expected = model.likelihood(model.decoder(z1)).mean
    torch.testing.assert_close(images, expected)


def test_layer_groups_split_encoder_and_decoder():
    model, guide = two_layers(prior="mixture")
    set_seed(1)
    groups = gradient_statistics(
        model, guide, _batch(4), make_estimator("elbo"), num_samples=2
    ).keys()
    assert set(groups) == {
        "encoder",
        "decoder",
        "encoder/z1",
        "encoder/z2",
        "decoder/z1",
        "decoder/z2",
    }
    for module in (guide, model):
        by_layer = module.layer_parameters()
        ids = [id(p) for params in by_layer.values() for p in params]
        assert sorted(ids) == sorted(id(p) for p in module.parameters())  # a partition
    assert {id(p) for p in model.prior.parameters()} <= {
        id(p) for p in model.layer_parameters()["z2"]
    }


# ---- estimators ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PATHWISE)
def test_every_estimator_trains_both_layers(name):
    model, guide = two_layers(**built_for(name))
    x = _batch(6)
    set_seed(2)
    loss = make_estimator(name, 3).loss_and_grads(model, guide, x)
    assert math.isfinite(loss)
    for kind, module in (("encoder", guide), ("decoder", model)):
        for site, params in module.layer_parameters().items():
            norm = sum(p.grad.abs().sum().item() for p in params if p.grad is not None)
            assert norm > 0, (kind, site)


# delta is refused (see below); a discrete code is one layer (test_discrete_cli.py)
STACKED = sorted(n for n, f in GUIDES.items() if n != "delta" and f.latent_kind == "continuous")


@pytest.mark.parametrize("family", STACKED)
def test_every_guide_family_stacks_and_sticks_the_landing(family):
    """Each family as q(z1|x) and q(z2|z1); elbo-stl re-runs the guide with φ detached."""
    model, guide = two_layers(guide=family)
    x = _batch(4)
    set_seed(2)
    loss = make_estimator("elbo-stl", 2).loss_and_grads(model, guide, x)
    assert math.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in guide.parameters())


def test_analytic_kl_is_refused_in_one_line():
    model, guide = two_layers()
    with pytest.raises(PyroVAEError, match="analytic-kl.*'z1'.*'z2'.*--estimator elbo") as e:
        make_estimator("analytic-kl").loss(model, guide, _batch(4))
    assert "\n" not in str(e.value)


def _fast_cases():
    for name in CONTINUOUS:
        if name == "analytic-kl":
            continue
        for k in (1, 3):
            if accepts(name, k):
                yield name, k, "normal"
    yield "elbo-stl", 2, "flow"
    yield "iwae-dreg", 2, "flow"


@pytest.mark.parametrize("name,k,family", list(_fast_cases()))
def test_fast_path_gives_the_plain_loss_and_gradients(name, k, family):
    """As tests/test_compiled.py for the one-layer model: compiled steps after parameter
    updates; STL's re-run of the guide and DReG's inner gradient are recorded too."""
    model, guide = two_layers(guide=family, **built_for(name))
    _steps_agree(name, k, model, guide, _batch())


def test_beta_scales_both_latent_sites():
    """With the same draws the loss is affine in β: −E log p(x|z1) + β E[log q − log p(z)]."""
    model, guide = two_layers()
    x = _batch(6)
    losses = {}
    for beta in (0.0, 0.5, 1.0):
        set_seed(4)
        with LatentScale(beta):
            losses[beta] = make_estimator("elbo", 2).loss(model, guide, x)
    assert losses[0.5] == pytest.approx((losses[0.0] + losses[1.0]) / 2, rel=1e-6)
    set_seed(4)
    p = draw_particles(model, guide, (x,), {}, 2)
    recon = -p.model_trace.nodes["x"]["log_prob"].mean(0).sum().item()
    assert losses[0.0] == pytest.approx(recon, rel=1e-6)


# ---- posterior means and active units per layer ---------------------------------------------


def test_upper_posterior_mean_integrates_over_the_layer_below():
    """E_q[z2|x] = A2 E_q[z1|x] + m2 for the linear guide; the estimate averages 256 conditional
    means A2 z1 + m2, whose error per component has s.d. √(A2 Σ1 A2ᵀ)_jj / 16."""
    model = hierarchical_model()
    guide = HierarchicalLinearGuide.exact(model)
    x = data(model, 20)
    set_seed(0)
    means = posterior_means(guide, x)
    (A1, m1, cov1), (A2, m2, _) = [[t.detach() for t in m] for m in model.posterior_maps()]
    mu1 = x @ A1.T + m1
    torch.testing.assert_close(means["z1"], mu1)
    sd = (A2 @ cov1 @ A2.T).diagonal().sqrt() / math.sqrt(256)
    assert ((means["z2"] - (mu1 @ A2.T + m2)).abs() < 5 * sd).all()
    assert means["z1"].shape == (20, D1) and means["z2"].shape == (20, D2)


def test_active_units_are_counted_per_layer():
    model, guide = two_layers()
    x = _batch(40)
    with seeded(0):
        by_site = active_units_by_site(guide, x, threshold=0.0)
    assert by_site == {"z1": 4, "z2": 3}  # every dimension varies at all
    with seeded(0):
        assert active_units(guide, x, threshold=0.0) == 7
    with seeded(0):
        assert active_units_by_site(guide, x, threshold=1e9) == {"z1": 0, "z2": 0}


# ---- the run folder --------------------------------------------------------------------------

TINY = ["--dataset", "mnist", "--no-download", "--hidden", "16", "--no-progress"]


def _train(idx_dir, run, *args: str) -> int:
    return main(["train", *TINY, "--data-dir", str(idx_dir), "--run-dir", str(run), *args])


def test_cli_trains_evaluates_and_diagnoses_two_layers(tmp_path, idx_dir, capsys):
    run = tmp_path / "run"
    layers = ["--latent-dim", "4", "3", "--upper-hidden", "8", "--epochs", "1"]
    assert _train(idx_dir, run, *layers, "--estimator", "iwae-dreg", "--num-particles", "2") == 0
    config = json.loads((run / CONFIG).read_text())["config"]
    assert config["latent_dim"] == [4, 3] and config["upper_hidden"] == [8]
    flags = ["--data-dir", str(idx_dir), "--no-download"]
    capsys.readouterr()
    assert main(["evaluate", str(run), *flags, "--no-progress", "--num-samples", "20"]) == 0
    out = capsys.readouterr().out
    figures = json.loads((run / EVALUATION).read_text())["evaluations"][-1]
    assert figures["latent_dim"] == [4, 3] and len(figures["active_units"]) == 2
    assert all(0 <= a <= d for a, d in zip(figures["active_units"], [4, 3], strict=True))
    a1, a2 = figures["active_units"]
    assert f"active units         {a1} / 4 (z1), {a2} / 3 (z2)" in out
    assert math.isfinite(figures["log_px"]) and figures["log_px"] > figures["test_elbo"] - 5
    grid = ["--estimators", "iwae", "iwae-dreg", "--num-particles", "2", "--samples", "4"]
    assert main(["diagnose", str(run), *flags, *grid, "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    rows = json.loads((run / DIAGNOSTICS).read_text())["rows"]
    for r in rows:
        for group in ("encoder/z1", "encoder/z2", "decoder/z1", "decoder/z2"):
            assert r[group]["snr"] > 0, group
    assert "SNR per stochastic layer" in out and "encoder/z2" in out
    # decoder gradients are IWAE's in both layers (the same seed per row)
    iwae, dreg = rows
    for group in ("decoder/z1", "decoder/z2"):
        assert dreg[group]["mean_norm"] == pytest.approx(iwae[group]["mean_norm"], rel=1e-5)


def test_resume_gives_the_same_two_layer_run(tmp_path, idx_dir):
    def config(epochs):
        return TrainConfig(
            dataset="mnist", epochs=epochs, device="cpu", estimator="elbo-stl", **TWO
        )

    common = {"data_dir": str(idx_dir), "download": False, "progress": False, "figures": False}
    straight_path, straight = train_run(config(2), tmp_path / "straight", **common)
    path, _ = train_run(config(1), tmp_path / "resumed", **common)
    _, resumed = resume_run(path, epochs=2, **common)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in straight
    ]
    a, b = load_checkpoint(straight_path), load_checkpoint(path)
    for part in ("model", "guide"):
        assert any(key.startswith("layers.0.") for key in a[part])
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), key


def test_figures_say_which_layer_they_show(tmp_path, idx_dir, monkeypatch):
    calls = {}

    def spy(name, original):
        def recording(*args, **kwargs):
            calls[name] = (args, kwargs)
            return original(*args, **kwargs)

        return recording

    for name in ("latent_scatter", "latent_snapshots"):
        monkeypatch.setattr(plots, name, spy(name, getattr(plots, name)))
    run = tmp_path / "run"
    assert _train(idx_dir, run, "--latent-dim", "2", "3", "--epochs", "1") == 0
    args, kwargs = calls["latent_scatter"]
    assert "E_q[z1|x] (z1, the bottom of 2" in args[2]
    assert kwargs["axis_names"] == ("z1[0]", "z1[1]")
    assert calls["latent_snapshots"][1]["title"].startswith("E_q[z1|x]")
    names = sorted(p.name for p in (run / FIGURES).iterdir())
    assert names == [
        "latent.png",
        "latent_snapshots.png",
        "manifold.png",
        "reconstructions.png",
        "samples.png",
        "training_curves.png",
        "traversal.png",
    ]
    model, guide = two_layers(latent_dim=(2, 3))
    x = _batch(3)

    def title(fig) -> str:
        return " ".join(ax.get_title() for ax in fig.axes)

    assert "z1, the bottom of 2 stochastic layers" in title(plots.reconstructions(model, guide, x))
    traversal = plots.traversal(model, guide, x[0])
    assert "z1, the bottom" in title(traversal)
    assert [t.get_text() for t in traversal.axes[0].get_yticklabels()] == ["z1[0]", "z1[1]"]
    assert "z2 → z1 → x" in title(plots.prior_samples(model, 4))
    assert "z1, the bottom" in title(plots.manifold(model, n=3))
    codes = torch.zeros(2, 5, 2)
    fig = plots.latent_snapshots([0, 1], codes, torch.arange(5), title="E_q[z1|x]")
    assert fig._suptitle.get_text() == "E_q[z1|x]"


# ---- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,message",
    [
        (["--latent-dim", "4", "0"], "--latent-dim must be at least 1, got 4 0"),
        (["--latent-dim", "4", "3", "--prior", "vamp"], "--prior vamp needs one stochastic"),
        (["--latent-dim", "4", "3", "--estimator", "analytic-kl"], "analytic-kl has no closed"),
        (["--latent-dim", "4", "3", "--upper-hidden", "0"], "--upper-hidden must be at least 1"),
        (["--latent-dim", "4", "3", "--autoencoder"], "--guide delta (the autoencoder) has one"),
    ],
)
def test_bad_two_layer_settings_exit_2_and_write_nothing(tmp_path, idx_dir, capsys, args, message):
    run = tmp_path / "run"
    assert _train(idx_dir, run, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not run.exists()
