"""Swapping parts: every registry combination trains; β and its warm-up; the conditional VAE;
the deterministic autoencoder; incompatible choices are refused before anything is written."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from conftest import DEVICES

from pyrovae import TrainConfig, build_model_and_guide, make_estimator, set_seed
from pyrovae.cli import main
from pyrovae.data.base import PIXEL_MODES
from pyrovae.guides import GUIDES
from pyrovae.inference import svi_step
from pyrovae.inference.beta import LatentScale, beta_schedule
from pyrovae.inference.train import make_optimizer
from pyrovae.models import LIKELIHOODS, PRIORS
from pyrovae.nets import NETS

D = 784


TINY = ["--dataset", "mnist", "--no-download", "--hidden", "16", "--latent-dim", "3"]


def _train(run, idx_dir, *args: str) -> int:
    """``pyrovae train`` of a tiny model on the tiny IDX dataset into ``run``."""
    argv = ["train", *TINY, "--no-progress", "--data-dir", str(idx_dir), "--run-dir", str(run)]
    return main([*argv, *args])


def _pixels(likelihood: str) -> str:
    accepted = LIKELIHOODS[likelihood].pixels
    return "dynamic" if "dynamic" in accepted else min(accepted)  # grey, or 8bit


def _batch(pixels: str, n: int = 6, device: str = "cpu") -> torch.Tensor:
    set_seed(1)
    x = torch.rand(n, D, device=device)
    mode = PIXEL_MODES[pixels]
    if mode.binary:
        return torch.bernoulli(x)
    return x if mode.levels is None else (x * mode.levels).round() / mode.levels


def _combinations():
    for lik, guide, prior, net in itertools.product(LIKELIHOODS, GUIDES, PRIORS, NETS):
        if guide == "delta" and prior == "vamp":
            continue  # refused: point-mass components give the prior no density
        if GUIDES[guide].code != PRIORS[prior].code:
            continue  # refused: a prior over another kind of code (tests/test_discrete_cli.py)
        yield lik, guide, prior, net


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("likelihood,guide,prior,net", list(_combinations()))
def test_every_combination_takes_a_training_step(device, likelihood, guide, prior, net):
    pixels = _pixels(likelihood)
    beta = 0.0 if guide == "delta" else 1.0  # the autoencoder composition
    # a discrete code has no path to φ: the score function (K = 2) trains its encoder
    estimator = "elbo" if GUIDES[guide].latent_kind == "continuous" else "score-function"
    config = TrainConfig(
        estimator=estimator,
        num_particles=2,
        likelihood=likelihood,
        guide=guide,
        prior=prior,
        net=net,
        pixels=pixels,
        hidden=(16,),
        latent_dim=3,
        beta=beta,
        # a conditional prior p(z|c) comes with its condition: two observed quadrants
        condition_on="quadrants:2" if getattr(PRIORS[prior], "conditional", False) else None,
    )
    set_seed(0)
    model, guide_ = build_model_and_guide(config, D)
    model.to(device)
    guide_.to(device)
    x = _batch(pixels, device=device)
    optimizer = make_optimizer((model, guide_), 1e-3)
    with LatentScale(beta):
        loss = svi_step(make_estimator(estimator, 2), model, guide_, optimizer, x)
    assert torch.isfinite(torch.tensor(loss))
    # the step moved the encoder: its gradient came through the reparameterized z (through
    # ∇ log q(z) for a discrete code)
    with LatentScale(beta):
        make_estimator(estimator, 2).loss_and_grads(model, guide_, x)
    first = next(guide_.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    z = guide_(x)
    assert z.shape == (6, guide_.family.code_dim)  # 3, or 3 groups of 10 one-hot values


@pytest.mark.parametrize(
    "guide,prior", [("flow", "normal"), ("normal", "mixture"), ("normal", "vamp")]
)
def test_analytic_kl_refuses_what_has_no_closed_form(tmp_path, idx_dir, capsys, guide, prior):
    run = tmp_path / "run"
    code = _train(run, idx_dir, "--estimator", "analytic-kl", "--guide", guide, "--prior", prior)
    err = capsys.readouterr().err
    assert code == 2 and "analytic-kl" in err and err.count("\n") == 1
    assert not run.exists()


BAD = {
    "unknown likelihood": (["--likelihood", "poisson"], "unknown likelihood"),
    "unknown guide": (["--guide", "gamma"], "unknown guide"),
    "unknown prior": (["--prior", "flat"], "unknown prior"),
    "unknown net": (["--net", "transformer"], "unknown network"),
    "bernoulli on grey": (["--pixels", "grey"], "not a valid density"),
    "gaussian on binary": (["--likelihood", "gaussian"], "not a valid density"),
    "negative beta": (["--beta", "-1"], "--beta"),
    "negative warm-up": (["--kl-warmup", "-5"], "--kl-warmup"),
    "vamp with labels": (["--conditional", "--prior", "vamp"], "vamp"),
    "autoencoder with beta": (["--autoencoder", "--beta", "0.5"], "--autoencoder"),
}


@pytest.mark.parametrize("args,message", BAD.values(), ids=BAD.keys())
def test_bad_choices_write_nothing(tmp_path, idx_dir, capsys, args, message):
    run = tmp_path / "run"
    code = _train(run, idx_dir, *args)
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not run.exists()


# ---- β --------------------------------------------------------------------------------------


def test_beta_zero_removes_the_kl_gradient():
    """With β = 0 the loss is −E_q log p(x|z): a learned prior's parameters (which appear only
    in the KL) get exactly zero gradient, and the loss equals minus the reconstruction term."""
    config = TrainConfig(prior="mixture", hidden=(16,), latent_dim=3)
    set_seed(0)
    model, guide = build_model_and_guide(config, D)
    x = _batch("dynamic")
    for beta in (0.0, 1.0):
        for p in [*model.parameters(), *guide.parameters()]:
            p.grad = None
        set_seed(3)
        with LatentScale(beta):
            make_estimator("elbo").loss_and_grads(model, guide, x)
        prior_grad = sum(p.grad.abs().sum() for p in model.prior.parameters())
        assert (prior_grad == 0) == (beta == 0.0)
    set_seed(3)
    with LatentScale(0.0):
        loss0 = make_estimator("elbo").loss(model, guide, x)
    set_seed(3)
    z = guide(x)
    recon = model.likelihood(model.decoder(z)).log_prob(x).sum()
    assert loss0 == pytest.approx(-recon.item(), rel=1e-6)


def test_beta_scales_the_kl_exactly():
    """L_β = recon − β·KL: the loss is affine in β with slope KL (same noise)."""
    config = TrainConfig(hidden=(16,), latent_dim=3, estimator="analytic-kl")
    set_seed(0)
    model, guide = build_model_and_guide(config, D)
    x = _batch("dynamic")
    losses = {}
    for beta in (0.0, 0.5, 1.0, 2.0):
        set_seed(3)
        with LatentScale(beta):
            losses[beta] = make_estimator("analytic-kl").loss(model, guide, x)
    kl = losses[1.0] - losses[0.0]
    assert kl > 0
    assert losses[0.5] == pytest.approx(losses[0.0] + 0.5 * kl, rel=1e-6)
    assert losses[2.0] == pytest.approx(losses[0.0] + 2.0 * kl, rel=1e-6)


def test_kl_warmup_follows_its_schedule():
    schedule = beta_schedule(2.0, 4)
    assert [schedule(t) for t in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert [beta_schedule(0.3)(t) for t in (0, 100)] == [0.3, 0.3]


def test_warmup_in_a_run(tmp_path, idx_dir):
    run = tmp_path / "run"
    # 300 images, batch 50: 6 steps an epoch; warm-up over 9 steps reaches β at step 9
    assert (
        _train(
            run, idx_dir, "--batch-size", "50", "--epochs", "2", "--beta", "4", "--kl-warmup", "9"
        )
        == 0
    )
    betas = [json.loads(line)["beta"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert betas == [pytest.approx(4 * 6 / 9), 4.0]  # the last step of each epoch


# ---- conditional VAE and autoencoder --------------------------------------------------------


def test_conditional_wiring():
    config = TrainConfig(conditional=True, hidden=(16,), latent_dim=3)
    set_seed(0)
    model, guide = build_model_and_guide(config, D, num_classes=10)
    seen = {}
    model.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("dec", i[0]))
    guide.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("enc", i[0]))
    y = torch.full((5,), 3)
    images = model.generate(5, y)
    assert images.shape == (5, D) and ((images >= 0) & (images <= 1)).all()
    expected = torch.nn.functional.one_hot(y, 10).float()
    assert torch.equal(seen["dec"][:, 3:], expected)  # decoder input [z, onehot(3)]
    x = _batch("dynamic", 5)
    guide(x, y)
    assert torch.equal(seen["enc"][:, D:], expected) and torch.equal(seen["enc"][:, :D], x)
    # a different label, same z noise: a different image
    set_seed(2)
    a = model.generate(5, y)
    set_seed(2)
    b = model.generate(5, torch.full((5,), 7))
    assert not torch.allclose(a, b)


def test_conditional_run_sample_and_evaluate(tmp_path, idx_dir, capsys):
    run = tmp_path / "cvae"
    common = ["--data-dir", str(idx_dir), "--no-download"]
    assert _train(run, idx_dir, "--conditional", "--epochs", "1") == 0
    assert main(["sample", str(run), "--label", "3", "--num", "8"]) == 0
    assert (run / "samples-label-3.png").stat().st_size > 0
    assert main(["sample", str(run), "--label", "9"]) == 2  # the tiny dataset has 4 classes
    assert main(["sample", str(run)]) == 2  # a conditional VAE needs --label
    assert main(["evaluate", str(run), *common, "--num-samples", "20", "--no-progress"]) == 0
    figures = json.loads((run / "evaluation.json").read_text())["evaluations"][-1]
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert figures["test_elbo"] == pytest.approx(last["test_elbo"], rel=1e-6)  # per datapoint
    capsys.readouterr()


def test_unconditional_sample_and_label_refused(tmp_path, idx_dir, capsys):
    run = tmp_path / "vae"
    assert _train(run, idx_dir, "--epochs", "1") == 0
    assert main(["sample", str(run), "--num", "4"]) == 0
    assert (run / "samples.png").exists()
    capsys.readouterr()
    assert main(["sample", str(run), "--label", "1"]) == 2
    assert "not a conditional VAE" in capsys.readouterr().err


def test_autoencoder_is_a_point_mass_guide_without_kl(tmp_path, idx_dir):
    config = TrainConfig(autoencoder=True, hidden=(16,), latent_dim=3)
    assert (config.guide, config.beta) == ("delta", 0.0)
    set_seed(0)
    model, guide = build_model_and_guide(config, D)
    x = _batch("dynamic")
    assert torch.equal(guide(x), guide(x))  # z = the encoder's output, no noise
    run = tmp_path / "ae"
    assert _train(run, idx_dir, "--autoencoder", "--epochs", "2") == 0
    recorded = json.loads((run / "config.json").read_text())["config"]
    assert (recorded["guide"], recorded["beta"], recorded["autoencoder"]) == ("delta", 0.0, True)


@pytest.mark.parametrize("net", list(NETS))
def test_run_folder_records_the_parts_and_evaluate_rebuilds_them(tmp_path, idx_dir, net):
    run = tmp_path / "run"
    args = [
        "--likelihood",
        "continuous-bernoulli",
        "--pixels",
        "grey",
        "--guide",
        "full-covariance",
        "--prior",
        "mixture",
        "--net",
        net,
    ]
    assert _train(run, idx_dir, "--epochs", "1", *args) == 0
    recorded = json.loads((run / "config.json").read_text())["config"]
    assert (recorded["likelihood"], recorded["guide"], recorded["prior"], recorded["net"]) == (
        "continuous-bernoulli",
        "full-covariance",
        "mixture",
        net,
    )
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--data-dir",
                str(idx_dir),
                "--no-download",
                "--num-samples",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )
