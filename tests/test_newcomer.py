"""The newcomer's second hour (issue 26): a held-out test split that is random, seeded and
stratified; ``diagnose`` with no options and a time estimate first; figures that say what
they show (titles, axis labels, integer epochs, legends) at a readable size."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_images, write_pngs

from pyrovae import TrainConfig, plots, train_run
from pyrovae.core.errors import PyroVAEError
from pyrovae.data.images import load_data
from pyrovae.data.splits import LEGACY_SEED, TEST_SPLITS, file_order, stratified
from pyrovae.runs.folder import CONFIG, read_config
from pyrovae.runs.load import load_run

# ---------------------------------------------------------------- the held-out split


@pytest.mark.parametrize(
    "counts, k, quotas",
    [
        # shares k·n_c/n = 1.54, 1.23, 0.92, 0.31: floors 1 1 0 0, two more by largest remainder
        ((5, 4, 3, 1), 4, (2, 1, 1, 0)),
        ((10, 10, 10), 9, (3, 3, 3)),  # exact shares
        ((6, 6, 6), 4, (2, 1, 1)),  # remainders tie: the earlier class first
        ((1, 1, 1, 1, 96), 5, (0, 0, 0, 0, 5)),  # rare classes may hold out nothing
    ],
)
def test_stratified_quotas_are_the_largest_remainder_shares(counts, k, quotas):
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    labels = labels[torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(3))]
    n = labels.shape[0]
    for seed in range(5):
        train, test = stratified(n, k, labels, seed)
        held = torch.bincount(labels[test], minlength=len(counts))
        assert tuple(held.tolist()) == quotas and test.shape[0] == k
        # a partition of the rows; training rows in the source's order
        assert sorted(torch.cat([train, test]).tolist()) == list(range(n))
        assert train.tolist() == sorted(train.tolist())


def test_stratified_test_rows_take_the_classes_in_turn():
    labels = torch.tensor([0] * 20 + [1] * 20 + [2] * 20)  # class folders: file order by class
    _, test = stratified(60, 12, labels, seed=7)
    assert labels[test].tolist() == [0, 1, 2] * 4  # the first images show every class


def test_the_split_depends_on_its_seed_alone():
    labels = torch.arange(200) % 4
    a, b = stratified(200, 50, labels, 1), stratified(200, 50, labels, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    other = stratified(200, 50, labels, 2)
    # two seeds pick the same 50 of 200 rows with probability C(150,50)/C(200,50)·… ≈ 0
    assert set(other[1].tolist()) != set(a[1].tolist())


def test_an_unlabelled_split_is_a_seeded_random_subset():
    n, k = 1000, 100
    _, test = stratified(n, k, None, seed=0)
    assert test.shape[0] == k and len(set(test.tolist())) == k
    # not the first k rows, not in file order: a random k of n has mean row (n−1)/2 ± sd
    # √((n²−1)/12 · (n−k)/(n−1) / k) ≈ 27.4; 5 sd is a bound that a correct split fails with
    # probability < 1e-6
    assert abs(test.float().mean().item() - (n - 1) / 2) < 5 * 27.4
    assert test.tolist() != sorted(test.tolist())
    # and uniform: over 400 seeds each row is held out 40 times on average (binomial sd ≈ 6.2,
    # the maximum over 1000 rows stays well inside 40 ± 6 sd)
    hits = torch.zeros(n)
    for seed in range(400):
        hits[stratified(n, k, None, seed)[1]] += 1
    assert (hits - 40).abs().max().item() < 6 * 6.2


def test_file_order_is_the_split_of_earlier_runs():
    train, test = file_order(100, 20, torch.arange(100) % 2, seed=5)  # the seed is not used
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(LEGACY_SEED))
    assert test.tolist() == sorted(perm[:20].tolist()) and train.tolist() == sorted(
        perm[20:].tolist()
    )
    assert set(TEST_SPLITS) == {"stratified", "file-order"}


def _digits_folder(root: Path, per_class: int = 6, classes: int = 3) -> None:
    for c in range(classes):
        write_pngs(root / f"digit{c}", random_images(per_class, (1, 6, 6), c))


def test_a_class_folder_split_is_stratified_and_mixed(tmp_path):
    _digits_folder(tmp_path / "d", per_class=8)
    data = load_data(str(tmp_path / "d"), "grey", test_fraction=0.25, split_seed=4)
    assert data.test_y.tolist() == [0, 1, 2] * 2  # 6 of 24: 2 per class, in turn
    assert torch.bincount(data.train_y).tolist() == [6, 6, 6]
    again = load_data(str(tmp_path / "d"), "grey", test_fraction=0.25, split_seed=4)
    assert torch.equal(again.test_x, data.test_x)
    other = load_data(str(tmp_path / "d"), "grey", test_fraction=0.25, split_seed=5)
    assert not torch.equal(other.test_x, data.test_x)


def test_a_memory_mapped_npy_is_split_by_row_indices(tmp_path):
    images = random_images(40, (1, 4, 4), 0)
    np.save(tmp_path / "x.npy", images)
    data = load_data(str(tmp_path / "x.npy"), "grey", test_fraction=0.25, split_seed=1)
    _, rows = stratified(40, 10, None, 1)
    want = torch.from_numpy(images[rows.numpy()]).reshape(10, -1).float() / 255
    assert torch.equal(data.test_x, want)


def _tiny_run(tmp_path: Path, data: Path, **changes) -> Path:
    config = TrainConfig(
        dataset=str(data),
        pixels="grey",
        likelihood="gaussian",
        test_fraction=0.25,
        latent_dim=2,
        hidden=(8,),
        epochs=1,
        batch_size=8,
        device="cpu",
        **changes,
    )
    path, _ = train_run(config, tmp_path / "run", progress=False, figures=False)
    return path


def test_a_run_records_its_split_and_an_older_run_keeps_its_own(tmp_path):
    _digits_folder(tmp_path / "d", per_class=8)
    path = _tiny_run(tmp_path, tmp_path / "d", split_seed=3)
    recorded = json.loads((path / CONFIG).read_text())["config"]
    assert recorded["test_split"] == "stratified" and recorded["split_seed"] == 3
    run = load_run(path)
    assert run.data.test_y.tolist() == [0, 1, 2] * 2
    # a run recorded before --test-split: its config.json has neither key
    meta = json.loads((path / CONFIG).read_text())
    for key in ("test_split", "split_seed"):
        del meta["config"][key]
    (path / CONFIG).write_text(json.dumps(meta))
    assert read_config(path).test_split == "file-order"
    old = load_run(path)
    _, rows = file_order(24, 6, None, 0)
    labels = torch.arange(3).repeat_interleave(8)
    assert old.data.test_y.tolist() == labels[rows].tolist()


def test_seeds_side_by_side_hold_out_the_same_images(tmp_path):
    """The split has its own seed: replicas that differ in --seed share one dataset, and each
    seed's folder, loaded alone, holds out what it was trained without."""
    from pyrovae.runs.seeds import train_seeds

    _digits_folder(tmp_path / "d", per_class=8)
    config = TrainConfig(
        dataset=str(tmp_path / "d"),
        pixels="grey",
        likelihood="gaussian",
        test_fraction=0.25,
        split_seed=2,
        latent_dim=2,
        hidden=(8,),
        epochs=1,
        batch_size=8,
        device="cpu",
    )
    group, _ = train_seeds(config, [0, 1], tmp_path / "g", progress=False, figures=False)
    a, b = (load_run(group / f"seed-{s}").data for s in (0, 1))
    assert torch.equal(a.test_x, b.test_x) and a.test_y.tolist() == [0, 1, 2] * 2
    alone = load_data(str(tmp_path / "d"), "grey", test_fraction=0.25, split_seed=2)
    assert torch.equal(a.test_x, alone.test_x)


def test_split_flags_need_a_test_fraction():
    with pytest.raises(PyroVAEError, match="--test-split and --split-seed need --test-fraction"):
        TrainConfig(split_seed=3)
    with pytest.raises(PyroVAEError, match="unknown test split 'random'"):
        TrainConfig(test_fraction=0.1, test_split="random")


# ---------------------------------------------------------------- diagnose with no options


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A one-epoch run of a 2-D latent VAE on 32 random 4×4 grey images (.npy)."""
    root = tmp_path_factory.mktemp("tiny")
    np.save(root / "x.npy", random_images(32, (1, 4, 4), 0))
    return _tiny_run(root, root / "x.npy")


def test_diagnose_with_no_options_says_how_long_first(tiny_run, capsys):
    from pyrovae.cli import main

    assert main(["diagnose", str(tiny_run), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    # the run's own estimator (elbo) and the standard ones that apply, at K = 1, 10
    assert re.fullmatch(
        r"about \d+ (s|min): 3 estimators \(elbo, iwae, iwae-dreg\) × 2 values of K \(1, 10\) × "
        r"100 gradients of 8 test images",
        out[0],
    ), out[0]
    rows = [line.split()[:2] for line in out if re.match(r"(elbo|iwae|iwae-dreg) ", line)]
    assert rows == [[e, k] for e in ("elbo", "iwae", "iwae-dreg") for k in ("1", "10")]


def test_the_estimate_is_within_a_sane_factor_of_the_time_taken(tiny_run):
    from pyrovae.runs.diagnose import diagnose_run

    told = []
    rows = diagnose_run(
        tiny_run,
        samples=40,
        progress=False,
        announce=lambda e: told.append((e, time.perf_counter())),
    )
    took = time.perf_counter() - told[0][1]
    ((estimate, _),) = told
    assert len(rows) == 6 and estimate.samples == 40 and estimate.batch_size == 8
    # timed gradients, not a guess: within 10× of the time the 240 gradients took (loose: the
    # machine is shared and tests do not assert speed)
    assert took / 10 < estimate.seconds < 10 * took, (estimate.seconds, took)


# ---------------------------------------------------------------- figures


def _model(shape=(1, 8, 8), latent_dim: int = 3):
    from pyrovae import build_model_and_guide, set_seed

    set_seed(0)
    config = TrainConfig(latent_dim=latent_dim, hidden=(8,), device="cpu")
    return build_model_and_guide(config, int(np.prod(shape)), num_classes=1, image_shape=shape)


def test_samples_and_traversal_say_what_they_show():
    model, guide = _model()
    (ax,) = plots.prior_samples(model, 4).axes
    assert ax.get_title() == "samples E[x|z], z ~ p(z)"
    x = torch.rand(1, 64)
    fig = plots.traversal(model, guide, x, dims=[2, 0], values=torch.linspace(-2, 2, 5))
    (ax,) = fig.axes
    assert ax.get_title() == "traversal: E[x|z], one dimension changed per row"
    assert ax.get_ylabel() == "dimension i"
    assert ax.get_xlabel() == "value of z_i, -2 to 2; the other dimensions at E_q[z|x]"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["z2", "z0"]


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=["rgb-32", "grey-28"])
def test_reconstruction_tiles_are_three_times_the_images(tmp_path, shape):
    model, guide = _model(shape)
    x = torch.rand(8, int(np.prod(shape)))
    path = plots.save_figure(plots.reconstructions(model, guide, x), tmp_path / "r.png")
    width, height = _png_size(path)
    c, h, w = shape
    # the montage is 8 × 2 tiles of (h + 1) × (w + 1) pixels (1 of padding), + 1; drawn at 3
    # screen pixels per image pixel, beside the row labels and below the title
    assert width >= 3 * (8 * (w + 1) + 1) - 8 and height >= 3 * (2 * (h + 1) + 1) - 8
    (ax,) = plots.reconstructions(model, guide, x).axes
    assert ax.get_title() == "reconstructions at E_q[z|x]"
    # the montage's own pixels: 3 per image pixel, to within a pixel of rounding per tile
    fig = ax.figure
    fig.dpi = plots.DPI
    box = ax.get_window_extent()
    assert box.width == pytest.approx(3 * 8 * (w + 1), abs=8)


def test_epoch_axes_have_whole_epochs_only():
    history = [
        {"epoch": e, "train_elbo": -9.0 + e, "test_elbo": -9.5 + e, "test_recon": -8, "test_kl": 1}
        for e in (1, 2)
    ]
    fig = plots.training_curves({"run": history})
    fig.canvas.draw()  # the locator places its ticks when drawn
    for ax in fig.axes:
        low, high = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def _snr_rows(rounding: float = 0.0):
    """IWAE and DReG rows whose decoder SNRs agree up to a relative ``rounding`` (at K = 10:
    ``diagnose`` on MNIST digits gave 5.518702623 and 5.518702869, 4e-8 apart)."""
    rows = []
    for name, encoder in (("iwae", lambda k: k**-0.5), ("iwae-dreg", lambda k: 1.0)):
        for k in (1, 10, 100):
            decoder = k**0.5 * (1 + rounding * (name == "iwae-dreg") * (k == 10))
            rows.append(
                {
                    "estimator": name,
                    "num_particles": k,
                    "encoder": {"snr": encoder(k), "variance_mean": 1.0, "mean_norm": 1.0},
                    "decoder": {"snr": decoder, "variance_mean": 1.0, "mean_norm": 1.0},
                }
            )
    return rows


@pytest.mark.parametrize("rounding", [0.0, 4e-8], ids=["equal", "float-rounding"])
def test_snr_panels_have_legends_and_equal_lines_stay_visible(rounding):
    encoder, decoder = plots.snr_vs_k(_snr_rows(rounding)).axes
    for ax in (encoder, decoder):
        assert ax.get_legend() is not None
    labels = [t.get_text() for t in encoder.get_legend().get_texts()]
    assert labels == ["iwae", "iwae-dreg"]
    labels = [t.get_text() for t in decoder.get_legend().get_texts()]
    assert labels == ["iwae", "iwae-dreg (same as iwae)"]
    first, second = decoder.lines
    assert list(first.get_ydata()) == pytest.approx(list(second.get_ydata()), rel=1e-7)
    # the line drawn on top differs in marker, line style and size from the one below it
    assert first.get_marker() != second.get_marker()
    assert first.get_linestyle() != second.get_linestyle()
    assert second.get_markersize() < first.get_markersize()


def test_snr_lines_that_differ_are_not_called_the_same():
    _, decoder = plots.snr_vs_k(_snr_rows(rounding=1e-2)).axes  # 1% apart at K = 10
    labels = [t.get_text() for t in decoder.get_legend().get_texts()]
    assert labels == ["iwae", "iwae-dreg"]
