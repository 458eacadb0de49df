"""M2, the semi-supervised VAE (Kingma et al. 2014): enumeration against the sum over y written
out, the labelled loss and α term against their formulas, balanced seeded labelled subsets,
refusals, learning (synthetic data; MNIST when present), and the CLI: train → evaluate → sample,
resume."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pyro
import pytest
import torch
from PIL import Image
from pyro import poutine

from pyrovae.cli import main
from pyrovae.core.errors import PyroVAEError
from pyrovae.data.images import make_image_data
from pyrovae.data.labelled import SemiSupervisedData, balanced_labelled_rows, class_counts
from pyrovae.guides.families import DiagonalNormal
from pyrovae.inference.semi_supervised import (
    SemiSupervisedELBO,
    classification_accuracy,
    paper_alpha,
)
from pyrovae.inference.train import fit
from pyrovae.models.likelihoods import get_likelihood
from pyrovae.models.prior import StandardNormalPrior
from pyrovae.models.semi_supervised import M2, M2Guide
from pyrovae.nets import MLP
from pyrovae.runs.build import build_estimator, build_model_and_guide
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.folder import CHECKPOINT, EVALUATION, METRICS

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "data" / "mnist"
D, C, d = 6, 3, 2


def _small_m2(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    likelihood = get_likelihood("bernoulli", "dynamic")(D)
    model = M2(StandardNormalPrior(d), MLP(d + C, [5], D), likelihood, C)
    family = DiagonalNormal(d)
    guide = M2Guide(MLP(D, [5], C), MLP(D + C, [5], family.num_params), family, C)
    return model.to(dtype), guide.to(dtype)


def _parameters(model, guide):
    return [*model.parameters(), *guide.parameters()]


def _label_bound(model, guide, x, z, c):
    """−L(x, y=c) at the guide's draw z (B, d), term by term: (B,)."""
    y = torch.full((x.shape[0],), c, dtype=torch.long)
    onehot = torch.nn.functional.one_hot(y, C).to(x.dtype)
    log_px = model.likelihood(model.decoder(torch.cat([z, onehot], -1))).log_prob(x)
    log_py = -math.log(C)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    q_z = guide.family(guide.encoder(torch.cat([x, onehot], -1)))
    return log_px + log_py + log_pz - q_z.log_prob(z)


def test_enumerated_unlabelled_loss_is_the_sum_over_every_class_written_out():
    model, guide = _small_m2()
    x = torch.bernoulli(torch.full((4, D), 0.5, dtype=torch.float64))
    estimator = SemiSupervisedELBO(alpha=1.0, num_labelled=3, num_unlabelled=4)
    params = _parameters(model, guide)
    pyro.set_rng_seed(7)
    loss = estimator.differentiable_loss(model, guide, x)
    grads = torch.autograd.grad(loss, params)
    # the same draws of z: TraceEnum_ELBO runs the guide first, under enumeration, from the seed
    pyro.set_rng_seed(7)
    trace = poutine.trace(poutine.enum(guide, first_available_dim=-2)).get_trace(x)
    z = trace.nodes["z"]["value"]  # (C, B, d): one draw per class
    assert z.shape == (C, 4, d)
    q_y = torch.softmax(guide.classifier(x), -1)  # (B, C)
    hand = 0.0
    for c in range(C):  # U(x) = Σ_y q(y|x) L(x, y) − H(q(y|x))
        hand = hand + q_y[:, c] * (-_label_bound(model, guide, x, z[c], c))
        hand = hand + q_y[:, c] * q_y[:, c].log()
    hand = hand.sum()
    assert loss.item() == pytest.approx(hand.item(), abs=1e-6)
    for g, h in zip(grads, torch.autograd.grad(hand, params), strict=True):
        assert torch.allclose(g, h, atol=1e-6, rtol=0)


def test_labelled_loss_and_alpha_term_match_their_formulas():
    model, guide = _small_m2()
    x = torch.bernoulli(torch.full((5, D), 0.4, dtype=torch.float64))
    y = torch.tensor([0, 2, 1, 1, 0])
    estimator = SemiSupervisedELBO(alpha=6.0, num_labelled=3, num_unlabelled=10)
    params = _parameters(model, guide)
    pyro.set_rng_seed(3)
    loss = estimator.differentiable_loss(model, guide, x, y)
    grads = torch.autograd.grad(loss, params)
    pyro.set_rng_seed(3)
    z = poutine.trace(guide).get_trace(x, y).nodes["z"]["value"]  # (B, d)
    onehot_bounds = torch.stack([_label_bound(model, guide, x, z, c) for c in range(C)], -1)
    bound = onehot_bounds.gather(-1, y[:, None]).squeeze(-1)  # −L(x_i, y_i)
    log_q_y = torch.log_softmax(guide.classifier(x), -1).gather(-1, y[:, None]).squeeze(-1)
    hand = (-bound).sum() + (6.0 / 3) * (-log_q_y).sum()  # α / N_l per labelled image
    assert loss.item() == pytest.approx(hand.item(), abs=1e-6)
    for g, h in zip(grads, torch.autograd.grad(hand, params), strict=True):
        assert torch.allclose(g, h, atol=1e-6, rtol=0)


def test_a_step_weights_the_labelled_batch_so_an_epoch_estimates_the_whole_objective():
    model, guide = _small_m2()
    x_u = torch.bernoulli(torch.full((4, D), 0.5, dtype=torch.float64))
    x_l, y_l = x_u[:2], torch.tensor([1, 2])
    estimator = SemiSupervisedELBO(alpha=2.0, num_labelled=10, num_unlabelled=40)
    pyro.set_rng_seed(1)
    step = estimator.differentiable_loss(model, guide, x_u, x_l, y_l).item()
    pyro.set_rng_seed(1)
    u = estimator.differentiable_loss(model, guide, x_u).item()
    labelled = estimator.differentiable_loss(model, guide, x_l, y_l).item()
    # w = (N_l / N_u)(b_u / b_l) = (10 / 40)(4 / 2): N_u / b_u steps add up to N_l labelled terms
    assert step == pytest.approx(u + 0.5 * labelled, abs=1e-9)
    assert paper_alpha(60_000) == pytest.approx(6_000)


def test_labelled_images_are_balanced_over_classes_and_chosen_by_the_seed():
    y = torch.arange(10).repeat_interleave(torch.tensor([30, 5, 9, 40, 12, 8, 7, 50, 6, 3]))
    assert class_counts(25, 10) == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    rows = balanced_labelled_rows(y, 25, 10, seed=4)
    assert torch.bincount(y[rows], minlength=10).tolist() == class_counts(25, 10)
    assert len(set(rows.tolist())) == 25
    assert torch.equal(rows, balanced_labelled_rows(y, 25, 10, seed=4))
    assert not torch.equal(rows, balanced_labelled_rows(y, 25, 10, seed=5))
    with pytest.raises(PyroVAEError, match="fewer than the 10 classes"):
        balanced_labelled_rows(y, 9, 10, seed=0)
    with pytest.raises(PyroVAEError, match="needs 4 images of class 9.*at most 30"):
        balanced_labelled_rows(y, 40, 10, seed=0)


def _image_data(n_train=120, n_test=40, seed=0):
    """Four separable classes: each image a prototype of 16 binary pixels with 10 % flipped."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(4, 16, generator=torch.Generator().manual_seed(99)) < 0.5).float()

    def split(n):
        y = torch.arange(n) % 4
        flip = (torch.rand(n, 16, generator=gen) < 0.1).float()
        return (prototypes[y] - flip).abs(), y

    (train_x, train_y), (test_x, test_y) = split(n_train), split(n_test)
    images = {
        "train_images": train_x,
        "train_labels": train_y,
        "test_images": test_x,
        "test_labels": test_y,
    }
    return make_image_data(images, "static")


def test_batches_visit_every_unlabelled_image_once_and_cycle_the_labelled_ones():
    data = SemiSupervisedData(_image_data(), num_labels=8, seed=2)
    assert (data.num_labelled, data.num_train) == (8, 112)
    labelled = set(data.labelled_rows.tolist())
    batches = list(data.train_batches(seed=2, epoch=3, batch_size=16))
    assert len(batches) == 7  # ⌈112 / 16⌉
    x_u = torch.cat([b[0] for b in batches])
    assert torch.equal(x_u.sum(0), data.data.train_x[data.unlabelled_rows].sum(0))
    for _, x_l, y_l in batches:  # b_l = min(16, 8): the whole labelled set, in a fresh order
        assert x_l.shape[0] == 8 and torch.equal(
            torch.bincount(y_l, minlength=4), torch.full((4,), 2)
        )
    again = list(data.train_batches(seed=2, epoch=3, batch_size=16))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    assert not labelled & set(data.unlabelled_rows.tolist())


def test_semi_supervised_data_refuses_what_it_cannot_split():
    data = _image_data()
    with pytest.raises(PyroVAEError, match="leaves no unlabelled image"):
        SemiSupervisedData(data, num_labels=120, seed=0)
    unlabelled = make_image_data(
        {
            "train_images": data.train_x,
            "train_labels": data.train_y,
            "test_images": data.test_x,
            "test_labels": data.test_y,
        },
        "static",
        labelled=False,
    )
    with pytest.raises(PyroVAEError, match="has no labels"):
        SemiSupervisedData(unlabelled, num_labels=8, seed=0)


def test_m2_learns_to_classify_separable_data_from_eight_labels():
    data = SemiSupervisedData(_image_data(n_train=400, n_test=200), num_labels=8, seed=0)
    torch.manual_seed(0)
    config = TrainConfig(
        dataset="mnist", pixels="static", semi_supervised=True, labels=8, hidden=(32,), latent_dim=2
    )
    model, guide = build_model_and_guide(config, 16, 4)
    before = classification_accuracy(guide, data.test_x, data.test_y)
    history = fit(
        model,
        guide,
        data,
        build_estimator(config, data),
        epochs=15,
        batch_size=32,
        lr=1e-2,
        compile=False,
        progress=False,
    )
    # chance is 1/4; the 200 test images give a standard error ≤ 0.035 on an accuracy
    assert history[-1]["test_accuracy"] >= 0.9 > before + 0.3
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]


SMALL = [
    "--dataset",
    "mnist",
    "--hidden",
    "32",
    "--latent-dim",
    "4",
    "--batch-size",
    "50",
    "--device",
    "cpu",
    "--no-progress",
    "--no-download",
    "--train-subset",
    "200",
    "--no-figures",
]


def _train(tmp_path, idx_dir, *extra, name="run"):
    run = tmp_path / name
    args = ["train", *SMALL, "--data-dir", str(idx_dir), "--run-dir", str(run)]
    return main([*args, "--semi-supervised", "--labels", "8", *extra]), run


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--labels", "8"], "--labels needs --semi-supervised"),
        (["--alpha", "1"], "--alpha needs --semi-supervised"),
        (["--semi-supervised"], "--semi-supervised needs --labels N"),
        (["--semi-supervised", "--labels", "8", "--conditional"], "with --conditional"),
        (["--semi-supervised", "--labels", "8", "--autoencoder"], "with --autoencoder"),
        (["--semi-supervised", "--labels", "8", "--latent-dim", "4", "2"], "several"),
        (["--semi-supervised", "--labels", "8", "--estimator", "iwae"], "--estimator iwae"),
        (["--semi-supervised", "--labels", "3"], "fewer than the 4 classes"),
        (["--semi-supervised", "--labels", "200"], "leaves no unlabelled image"),
        (["--semi-supervised", "--labels", "8", "--stream"], "drop --stream"),
    ],
)
def test_cli_refuses_in_one_line(tmp_path, idx_dir, capsys, flags, message):
    args = ["train", *SMALL, "--data-dir", str(idx_dir), "--run-dir", str(tmp_path / "r")]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyrovae: error: ") and "\n" not in err and message in err
    assert not (tmp_path / "r").exists()


def test_cli_train_evaluate_sample(tmp_path, idx_dir, capsys):
    code, run = _train(tmp_path, idx_dir, "--epochs", "2")
    assert code == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert all(0 <= r["test_accuracy"] <= 1 for r in records)
    flags = ["--data-dir", str(idx_dir), "--no-download", "--num-samples", "5", "--no-progress"]
    assert main(["evaluate", str(run), *flags]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "log p(x)" in out
    (entry,) = json.loads((run / EVALUATION).read_text())["evaluations"]
    assert entry["test_accuracy"] == pytest.approx(records[-1]["test_accuracy"])
    assert math.isfinite(entry["log_px"]) and entry["log_px"] >= entry["test_elbo"] - 5
    assert main(["sample", str(run), "--num", "3"]) == 0
    width, height = Image.open(run / "samples.png").size
    assert width > height  # 3 rows of 4 class columns


def test_resume_equals_a_straight_run(tmp_path, idx_dir):
    assert _train(tmp_path, idx_dir, "--epochs", "2", name="straight")[0] == 0
    code, run = _train(tmp_path, idx_dir, "--epochs", "1", name="resumed")
    assert code == 0
    assert (
        main(
            [
                "train",
                "--resume",
                str(run),
                "--epochs",
                "2",
                "--no-progress",
                "--no-download",
                "--data-dir",
                str(idx_dir),
            ]
        )
        == 0
    )
    a = torch.load(tmp_path / "straight" / CHECKPOINT, weights_only=True)
    b = torch.load(run / CHECKPOINT, weights_only=True)
    for part in ("model", "guide"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), key
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in c["history"]] for c in (a, b)]
    assert strip[0] == strip[1]


@pytest.mark.slow
@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist is absent")
def test_m2_learns_mnist_from_100_labels(tmp_path, capsys):
    """10 000 training images (100 labelled), 4 epochs, the paper's α = 0.1·N: measured 0.56
    test accuracy (~30 s on one CPU thread); chance is 0.10, the 10 000 test images give a
    standard error under 0.005, so 0.40 leaves room for other seeds' and machines' rounding."""
    args = ["--dataset", "mnist", "--data-dir", str(MNIST), "--no-download", "--no-progress"]
    args += ["--train-subset", "10000", "--hidden", "256", "--epochs", "4", "--no-figures"]
    run = tmp_path / "mnist"
    assert (
        main(["train", *args, "--semi-supervised", "--labels", "100", "--run-dir", str(run)]) == 0
    )
    last = json.loads((run / METRICS).read_text().splitlines()[-1])
    assert last["test_accuracy"] >= 0.40


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "semi_supervised_benchmark", ROOT / "benchmarks" / "semi_supervised.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_script_trains_reads_and_tabulates(tmp_path, idx_dir, capsys):
    bench = _benchmark()
    assert bench.PYRO_TUTORIAL[100] == 0.9319 and bench.PYRO_TUTORIAL[3000] == 0.9582
    flags = ["--data-dir", str(idx_dir), "--root", str(tmp_path), "--train-subset", "200"]
    flags += ["--hidden", "16", "--latent-dim", "2", "--device", "cpu", "--epochs", "1"]
    assert bench.main([*flags, "--labels", "8", "100", "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "t.json").read_text())
    assert [r["labels"] for r in rows] == [8, 100] and out.count("\n| ") == 2
    assert "| 100 | 1 |" in out and "| 0.9319 |" in out
    mtime = (tmp_path / "labels-8" / CHECKPOINT).stat().st_mtime
    assert bench.main([*flags, "--labels", "8"]) == 0  # read, not trained again
    assert (tmp_path / "labels-8" / CHECKPOINT).stat().st_mtime == mtime
