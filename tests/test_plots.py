"""Figures: the numbers drawn are the ones computed (read back from the Axes), latent codes,
latent snapshots during training (without changing training), and the run folder's figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import DEVICES

from pyrovae import TrainConfig, build_model_and_guide, plots, resume_run, set_seed, train_run
from pyrovae.core.errors import PyroVAEError
from pyrovae.core.labels import with_label
from pyrovae.core.runtime import seeded
from pyrovae.data.images import load_data
from pyrovae.plots.grids import as_square, tile_at
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import CHECKPOINT, FIGURES, LATENTS, read_latents

D, SIDE = 784, 28


def _model(latent_dim: int = 2, guide: str = "normal", conditional: bool = False, seed: int = 0):
    set_seed(seed)
    config = TrainConfig(
        latent_dim=latent_dim, hidden=(16,), guide=guide, conditional=conditional, device="cpu"
    )
    return build_model_and_guide(config, D, num_classes=4)


def _images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, D, generator=torch.Generator().manual_seed(seed)).bernoulli()


def _montage(fig) -> torch.Tensor:
    """The single image drawn by an image-grid figure."""
    (ax,) = fig.axes
    (image,) = ax.images
    return torch.from_numpy(np.asarray(image.get_array()))


def _tile(fig, row: int, col: int) -> torch.Tensor:
    return tile_at(_montage(fig), row, col, SIDE).reshape(-1)


def _mean_at(model, z: torch.Tensor, y=None) -> torch.Tensor:
    """E[x|z] the long way round: decoder (of [z, onehot(y)] for labels), then the likelihood's
    mean."""
    with torch.no_grad():
        h = z if y is None else with_label(z, y, model.num_classes)
        return model.likelihood(model.decoder(h)).mean


def _lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    return {
        line.get_label(): (list(line.get_xdata()), list(line.get_ydata()))
        for line in ax.lines
        if not line.get_label().startswith("_")
    }


# ---------------------------------------------------------------- curves and estimator figures

ROWS = [
    {"estimator": "iwae", "num_particles": 10, "bound": -90.0, "stderr": 0.2},
    {"estimator": "iwae", "num_particles": 1, "bound": -95.0, "stderr": 0.3},
    {"estimator": "elbo", "num_particles": 1, "bound": -95.5},
    {"estimator": "elbo", "num_particles": 10, "bound": -95.2},
]


def test_bound_vs_k_draws_one_line_per_estimator_sorted_by_k():
    (ax,) = plots.bound_vs_k(ROWS, exact=-88.0).axes
    lines = _lines(ax)
    assert lines["iwae"] == ([1, 10], [-95.0, -90.0])
    assert lines["elbo"] == ([1, 10], [-95.5, -95.2])
    assert lines["exact log p(x)"][1] == [-88.0, -88.0]
    assert ax.get_xscale() == "log"
    # error bars only for the estimator that has standard errors: ±stderr around each bound
    (bars,) = ax.collections
    segments = sorted(bars.get_segments(), key=lambda s: s[0][0])
    assert [tuple(s[:, 1]) for s in segments] == [
        pytest.approx((-95.3, -94.7)),
        pytest.approx((-90.2, -89.8)),
    ]
    (ax,) = plots.bound_vs_k(ROWS).axes
    assert "exact log p(x)" not in _lines(ax)


def _diagnostic_rows():
    rows = []
    for name, slope in (("iwae", -0.5), ("iwae-dreg", 0.0)):
        for k in (8, 1, 64):
            rows.append(
                {
                    "estimator": name,
                    "num_particles": k,
                    "encoder": {"snr": k**slope, "variance_mean": 1e-3 * k, "mean_norm": 1.0},
                    "decoder": {"snr": k**0.5, "variance_mean": 1e-2 / k, "mean_norm": 1.0},
                }
            )
    return rows


def test_snr_vs_k_panels_are_log_log_lines_per_estimator():
    fig = plots.snr_vs_k(_diagnostic_rows())
    encoder, decoder = fig.axes
    assert (encoder.get_xscale(), encoder.get_yscale()) == ("log", "log")
    assert _lines(encoder)["iwae"] == ([1, 8, 64], pytest.approx([1.0, 8**-0.5, 64**-0.5]))
    assert _lines(encoder)["iwae-dreg"][1] == [1.0, 1.0, 1.0]
    assert _lines(decoder)["iwae"][1] == pytest.approx([1.0, 8**0.5, 8.0])


def test_gradient_variance_bars_have_the_variances():
    fig = plots.gradient_variance(_diagnostic_rows())
    encoder, decoder = fig.axes
    assert encoder.get_yscale() == "log"
    for ax, group in ((encoder, "encoder"), (decoder, "decoder")):
        # one bar container per K (ascending), one bar per estimator in it
        for container, k in zip(ax.containers, (1, 8, 64), strict=True):
            heights = [bar.get_height() for bar in container]
            expected = [
                r[group]["variance_mean"] for r in _diagnostic_rows() if r["num_particles"] == k
            ]
            assert heights == pytest.approx(expected)
    labels = [t.get_text() for t in encoder.get_xticklabels()]
    assert labels == ["iwae", "iwae-dreg"]


def test_training_curves_one_colour_per_run():
    def history(offset):
        return [
            {
                "epoch": e,
                "train_elbo": -100 + e + offset,
                "test_elbo": -101 + e + offset,
                "test_recon": -90 + e,
                "test_kl": 11 + offset,
            }
            for e in (1, 2, 3)
        ]

    fig = plots.training_curves({"a": history(0), "b": history(5)})
    elbo, recon, kl = fig.axes
    assert _lines(elbo)["b"] == ([1, 2, 3], [-95, -94, -93])
    assert _lines(kl)["a"] == ([1, 2, 3], [11, 11, 11])
    assert _lines(recon)["a"][1] == [-89, -88, -87]
    # train (dashed) and test (solid) curves of a run share its colour
    dashed = [line for line in elbo.lines if line.get_linestyle() == "--"]
    assert [list(line.get_ydata()) for line in dashed] == [[-99, -98, -97], [-94, -93, -92]]
    solid = {line.get_label(): line.get_color() for line in elbo.lines if line in elbo.lines}
    assert dashed[1].get_color() == solid["b"] != solid["a"]
    with pytest.raises(PyroVAEError):
        plots.training_curves({})


def _drawn(fig):
    """``fig`` rendered by Agg: its renderer and its pixels (H, W, 4)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer(), np.asarray(canvas.buffer_rgba())


def _record(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "train_elbo": -100.0, "test_elbo": -101.0, "test_recon": -90.0,
            "test_kl": 11.0}  # fmt: skip


def test_a_one_epoch_run_shows_its_points():
    """One epoch is one point per curve: without markers nothing would be drawn there."""
    from matplotlib.colors import to_rgb

    fig = plots.training_curves({"run": [_record(1)]})
    _, pixels = _drawn(fig)
    height = pixels.shape[0]
    for ax in fig.axes:
        for line in ax.lines:
            assert line.get_marker() == "o"
            x, y = ax.transData.transform((line.get_xdata()[0], line.get_ydata()[0]))
            row, col = int(round(height - y)), int(round(x))
            patch = pixels[row - 1 : row + 2, col - 1 : col + 2, :3].astype(int)
            colour = 255 * np.array(to_rgb(line.get_color()))
            assert np.abs(patch - colour).sum(-1).min() < 60, "no marker drawn at the point"


def test_long_runs_mark_about_thirty_points_per_curve():
    fig = plots.training_curves({"run": [_record(e) for e in range(1, 301)]})
    for line in fig.axes[0].lines:
        assert line.get_markevery() == 10


@pytest.mark.parametrize(
    "snr",
    [(0.31, 0.35, 0.4), (3.1e-4, 3.5e-4, 4e-4), (1.1, 1.2, 1.3), (0.3, 3e-5, 3e-7), (10, 1e3, 1e5)],
    ids=["narrow", "narrow-small", "near-one", "decades", "large"],
)
@pytest.mark.parametrize("figure", [plots.snr_vs_k, plots.gradient_variance])
def test_log_axis_labels_stay_inside_the_figure(figure, snr):
    """The y label (and every tick label) lies inside the figure, whatever the values' range:
    narrow ranges get labelled minor ticks, which used to push the label off the left edge."""
    rows = [
        {
            "estimator": name,
            "num_particles": k,
            "encoder": {"snr": s * scale, "variance_mean": s * scale, "mean_norm": 1.0},
            "decoder": {"snr": s, "variance_mean": s, "mean_norm": 1.0},
        }
        for name, scale in (("iwae", 1.0), ("iwae-dreg", 1.05))
        for k, s in zip((1, 10, 100), snr, strict=True)
    ]
    fig = figure(rows)
    renderer, _ = _drawn(fig)
    inside = fig.bbox
    label = fig.axes[0].yaxis.label
    assert label.get_text()
    for ax in fig.axes:
        for text in [ax.yaxis.label, *ax.get_yticklabels(), *ax.get_yticklabels(minor=True)]:
            if text.get_text():
                box = text.get_window_extent(renderer)
                assert box.x0 >= inside.x0 and box.x1 <= inside.x1, text.get_text()
    box = label.get_window_extent(renderer)
    assert box.x0 >= 0 and box.y0 >= 0 and box.y1 <= inside.y1


# ---------------------------------------------------------------- codes and images


def test_latent_codes_are_the_normal_guides_means_in_any_chunking():
    _, guide = _model(latent_dim=3)
    x = _images(25)
    expected = guide.posterior(x).mean.detach()
    torch.testing.assert_close(plots.latent_codes(guide, x), expected, rtol=0, atol=0)
    torch.testing.assert_close(plots.latent_codes(guide, x, batch_size=7), expected)
    assert guide.training  # the guide's mode is restored


def test_latent_codes_of_a_flow_average_samples():
    _, guide = _model(latent_dim=3, guide="flow")
    x = _images(20)
    q = guide.posterior(x)
    with pytest.raises(NotImplementedError):
        q.mean  # noqa: B018 — the case the fallback exists for
    # a new flow is the identity, so q is its base N(μ, σ²) and the exact mean is μ
    base = q.base_dist.base_dist
    mu, sigma = base.loc.detach(), base.scale.detach()
    s = 400
    with seeded(3):
        codes = plots.latent_codes(guide, x, num_samples=s)
    # each component is a mean of s normals: error σ/√s; 5 standard errors over 60 components
    assert ((codes - mu).abs() <= 5 * sigma / math.sqrt(s)).all()
    assert not torch.equal(codes, mu)


def test_reconstructions_decode_the_posterior_mean():
    model, guide = _model(latent_dim=3)
    x = _images(5)
    fig = plots.reconstructions(model, guide, x)
    recon = _mean_at(model, guide.posterior(x).mean)
    for i in range(5):
        assert torch.equal(_tile(fig, 0, i), x[i])
        torch.testing.assert_close(_tile(fig, 1, i), recon[i])


def test_conditional_reconstructions_use_the_labels():
    model, guide = _model(latent_dim=2, conditional=True)
    x, y = _images(3), torch.tensor([0, 3, 1])
    fig = plots.reconstructions(model, guide, x, y)
    recon = _mean_at(model, guide.posterior(x, y).mean, y)
    torch.testing.assert_close(_tile(fig, 1, 2), recon[2])
    with pytest.raises(PyroVAEError, match="labels"):
        plots.reconstructions(model, guide, x)


def test_manifold_tiles_are_the_decoder_means_on_the_grid():
    model, _ = _model(latent_dim=2)
    fig = plots.manifold(model, n=5, limit=2.0)
    torch.testing.assert_close(_tile(fig, 2, 2), _mean_at(model, torch.zeros(1, 2))[0])
    # top left: z₁ = −limit, z₂ = +limit; bottom right: z₁ = +limit, z₂ = −limit
    torch.testing.assert_close(_tile(fig, 0, 0), _mean_at(model, torch.tensor([[-2.0, 2.0]]))[0])
    torch.testing.assert_close(_tile(fig, 4, 4), _mean_at(model, torch.tensor([[2.0, -2.0]]))[0])
    model3, _ = _model(latent_dim=3)
    with pytest.raises(PyroVAEError, match="2-D latent"):
        plots.manifold(model3)


def test_traversal_sets_one_dimension_of_the_code():
    model, guide = _model(latent_dim=4)
    x = _images(1)
    values = torch.tensor([-1.0, 0.5, 2.0])
    fig = plots.traversal(model, guide, x[0], dims=[3, 1], values=values)
    code = guide.posterior(x).mean.detach()[0]
    z = code.clone()
    z[1] = 0.5  # second row (dim 1), second column (0.5)
    torch.testing.assert_close(_tile(fig, 1, 1), _mean_at(model, z[None])[0])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["z3", "z1"]
    # defaults: the first min(d, 10) dims, 9 values in [−3, 3]
    default = _montage(plots.traversal(model, guide, x))
    assert default.shape == (4 * (SIDE + 1) + 1, 9 * (SIDE + 1) + 1)
    with pytest.raises(PyroVAEError, match="dims"):
        plots.traversal(model, guide, x, dims=[4])


def test_interpolation_runs_between_the_two_codes():
    model, guide = _model(latent_dim=3)
    x = _images(2)
    fig = plots.interpolation(model, guide, x[0], x[1], steps=4)
    mu = guide.posterior(x).mean.detach()
    assert torch.equal(_tile(fig, 0, 0), x[0]) and torch.equal(_tile(fig, 0, 5), x[1])
    torch.testing.assert_close(_tile(fig, 0, 1), _mean_at(model, mu[:1])[0])
    third = (2 * mu[0] + mu[1]) / 3  # t = 1/3
    torch.testing.assert_close(_tile(fig, 0, 2), _mean_at(model, third[None])[0])
    torch.testing.assert_close(_tile(fig, 0, 4), _mean_at(model, mu[1:])[0])


def test_perturbation_shares_one_seeded_epsilon_across_runs():
    ae, vae = _model(latent_dim=3, seed=0), _model(latent_dim=3, seed=1)
    x = _images(4)
    fig = plots.perturbation({"autoencoder": ae, "VAE": vae}, x, scales=(0.5, 2.0), seed=7)
    with seeded(7):
        eps = torch.randn(4, 3)
    # rows: originals; then per run: E[x|μ], μ + 0.5ε, μ + 2ε
    for r, (model, guide) in enumerate((ae, vae)):
        mu = guide.posterior(x).mean.detach()
        torch.testing.assert_close(_tile(fig, 1 + 3 * r, 2), _mean_at(model, mu)[2])
        torch.testing.assert_close(_tile(fig, 3 + 3 * r, 1), _mean_at(model, mu + 2 * eps)[1])
    assert torch.equal(_tile(fig, 0, 3), x[3])
    with pytest.raises(PyroVAEError, match="one latent size"):
        plots.perturbation({"a": ae, "b": _model(latent_dim=2)}, x)


def test_prior_samples_are_the_models_generate():
    model, _ = _model(latent_dim=2)
    with seeded(5):
        fig = plots.prior_samples(model, num=6, cols=3)
    with seeded(5):
        expected = model.generate(6)
    torch.testing.assert_close(_tile(fig, 1, 0), expected[3])


def test_latent_scatter_points_and_labels():
    codes = torch.randn(30, 3)
    labels = torch.arange(30) % 4
    (ax,) = plots.latent_scatter(codes, labels, title="t").axes[:1]
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), codes[:, :2].numpy())
    np.testing.assert_array_equal(points.get_array(), labels.numpy())
    assert "of 3" in ax.get_xlabel() and "of 3" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1", "2", "3"]
    with pytest.raises(PyroVAEError):
        plots.latent_scatter(torch.randn(5, 1), torch.zeros(5))


def test_latent_snapshots_share_axes_and_name_the_epochs():
    codes = torch.randn(20, 50, 2) * torch.arange(1, 21).reshape(20, 1, 1)  # widening spread
    labels = torch.arange(50) % 10
    fig = plots.latent_snapshots(list(range(20)), codes, labels, max_panels=6)
    titled = [ax for ax in fig.axes if ax.get_title()]
    titles = [ax.get_title() for ax in titled]
    assert titles[0] == "epoch 0" and titles[-1] == "epoch 19" and len(titles) == 6
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in titled}
    assert len(limits) == 1  # common axes, wide enough for the last (widest) epoch
    (xlim, ylim), last = limits.pop(), codes[-1]
    assert xlim[0] <= last[:, 0].min() and xlim[1] >= last[:, 0].max()
    assert ylim[0] <= last[:, 1].min() and ylim[1] >= last[:, 1].max()
    np.testing.assert_allclose(titled[-1].collections[0].get_offsets(), last.numpy())
    with pytest.raises(PyroVAEError):
        plots.latent_snapshots([0], torch.randn(1, 5, 3), labels[:5])


@pytest.mark.parametrize("device", DEVICES)
def test_image_figures_on_any_device(device):
    """Computed where the model lives, drawn from the CPU: the same pictures as on the CPU."""
    model, guide = _model(latent_dim=2)
    x = _images(3)
    cpu = {
        "recon": _montage(plots.reconstructions(model, guide, x)),
        "manifold": _montage(plots.manifold(model, n=3)),
        "perturbation": _montage(plots.perturbation({"m": (model, guide)}, x)),
    }
    model, guide, x = model.to(device), guide.to(device), x.to(device)
    assert plots.latent_codes(guide, x).device.type == device
    there = {
        "recon": _montage(plots.reconstructions(model, guide, x)),
        "manifold": _montage(plots.manifold(model, n=3)),
        "perturbation": _montage(plots.perturbation({"m": (model, guide)}, x)),
    }
    for name, montage in cpu.items():
        torch.testing.assert_close(there[name], montage, atol=1e-5, rtol=1e-4, msg=name)


COLOUR = (3, 9, 7)  # odd sides: the conv net's sizes and the tiles' geometry both matter


def _colour_model(seed: int = 0):
    set_seed(seed)
    config = TrainConfig(
        latent_dim=2,
        hidden=(16,),
        net="conv",
        pixels="8bit",
        likelihood="discretized-logistic",
        device="cpu",
    )
    return build_model_and_guide(config, 3 * 9 * 7, num_classes=1, image_shape=COLOUR)


def _colour_tile(fig, row: int, col: int) -> torch.Tensor:
    """Tile (row, col) of an RGB montage, read back as a flattened channel-major image."""
    (ax,) = fig.axes
    (image,) = ax.images
    drawn = torch.from_numpy(np.asarray(image.get_array()))  # (H', W', 3)
    assert drawn.dim() == 3 and drawn.shape[-1] == 3
    c, h, w = COLOUR
    return tile_at(drawn, row, col, h, width=w).permute(2, 0, 1).reshape(-1)


def test_colour_figures_draw_the_decoded_rgb_images():
    """Reconstructions, samples, manifold, traversal and interpolation of a 3×9×7 model: the
    RGB tiles read back from the figures are the decoder's means (and the originals)."""
    model, guide = _colour_model()
    x = torch.rand(3, 3 * 9 * 7, generator=torch.Generator().manual_seed(2))
    x = (x * 255).round() / 255
    mu = guide.posterior(x).mean.detach()
    fig = plots.reconstructions(model, guide, x)
    assert torch.equal(_colour_tile(fig, 0, 1), x[1])
    torch.testing.assert_close(_colour_tile(fig, 1, 2), _mean_at(model, mu)[2])
    fig = plots.manifold(model, n=3, limit=1.0)
    torch.testing.assert_close(_colour_tile(fig, 1, 1), _mean_at(model, torch.zeros(1, 2))[0])
    fig = plots.traversal(model, guide, x[0], dims=[1], values=torch.tensor([0.0, 2.0]))
    z = mu[0].clone()
    z[1] = 2.0
    torch.testing.assert_close(_colour_tile(fig, 0, 1), _mean_at(model, z[None])[0])
    fig = plots.interpolation(model, guide, x[0], x[1], steps=3)
    half = (mu[0] + mu[1]) / 2
    torch.testing.assert_close(_colour_tile(fig, 0, 2), _mean_at(model, half[None])[0])
    assert torch.equal(_colour_tile(fig, 0, 4), x[1])
    with seeded(5):
        fig = plots.prior_samples(model, 4, cols=2)
    with seeded(5):
        expected = model.generate(4)
    torch.testing.assert_close(_colour_tile(fig, 1, 0), expected[2])
    # a tile is as high as the image is: 9 rows per 7 columns (and 0.3 inch for the title)
    assert fig.get_size_inches()[1] == pytest.approx(2 * 0.5 * 9 / 7 + 0.3)


def test_images_must_have_the_models_shape():
    with pytest.raises(PyroVAEError, match="not square"):
        as_square(torch.zeros(2, 783))
    model, guide = _model(latent_dim=2)
    with pytest.raises(PyroVAEError, match=r"flattened \(N, 784\) for shape \(1, 28, 28\)"):
        plots.interpolation(model, guide, torch.zeros(10), torch.zeros(10))


def test_save_figure_writes_a_png_atomically(tmp_path):
    target = tmp_path / "new" / "folder" / "fig.png"
    path = plots.save_figure(plots.bound_vs_k(ROWS), target)
    assert path == target and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in target.parent.iterdir()] == ["fig.png"]  # no temporary file left


# ---------------------------------------------------------------- training runs

TINY = {
    "dataset": "mnist",
    "hidden": (16,),
    "batch_size": 50,
    "train_subset": 100,
    "device": "cpu",
}


def _train(tmp_path, idx_dir, name, figures=True, **config):
    config = TrainConfig(**{**TINY, **config})
    return train_run(
        config, tmp_path / name, str(idx_dir), download=False, progress=False, figures=figures
    )


def _comparable(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_snapshots_and_figures_leave_training_unchanged(tmp_path, idx_dir):
    # a flow's E_q[z|x] is sampled: snapshots draw random numbers, training must not notice
    path, history = _train(tmp_path, idx_dir, "figures", latent_dim=2, guide="flow", epochs=2)
    plain, plain_history = _train(
        tmp_path, idx_dir, "plain", figures=False, latent_dim=2, guide="flow", epochs=2
    )
    assert _comparable(history) == _comparable(plain_history)
    state, plain_state = load_checkpoint(path), load_checkpoint(plain)
    for part in ("model", "guide"):
        for key, value in state[part].items():
            assert torch.equal(value, plain_state[part][key]), key
    assert not (plain / FIGURES).exists() and not (plain / LATENTS).exists()
    assert read_latents(path)["epochs"].tolist() == [0, 1, 2]
    written = sorted(p.name for p in (path / FIGURES).iterdir())
    assert written == [
        "latent.png",
        "latent_snapshots.png",
        "manifold.png",
        "reconstructions.png",
        "samples.png",
        "training_curves.png",
        "traversal.png",
    ]


def test_snapshots_hold_the_codes_before_and_after_each_epoch(tmp_path, idx_dir):
    path, _ = _train(tmp_path, idx_dir, "run", latent_dim=2, epochs=1)
    first = read_latents(path)
    assert first["epochs"].tolist() == [0, 1]
    resume_run(path, epochs=2, data_dir=str(idx_dir), download=False, progress=False)
    latents = read_latents(path)
    assert latents["epochs"].tolist() == [0, 1, 2]  # appended on resume
    assert torch.equal(latents["codes"][:2], first["codes"])

    data = load_data("mnist", "dynamic", "cpu", str(idx_dir), 100, False)
    assert latents["codes"].shape == (3, 100, 2)  # the whole tiny test split (≤ 2000 images)
    assert torch.equal(latents["labels"], data.test_y)
    set_seed(0)  # as train_run: the weights' initialization is part of the run
    _, guide = build_model_and_guide(TrainConfig(**TINY, latent_dim=2), D, 4)
    torch.testing.assert_close(latents["codes"][0], guide.posterior(data.test_x).mean.detach())
    guide.load_state_dict(load_checkpoint(path)["guide"])
    torch.testing.assert_close(latents["codes"][2], guide.posterior(data.test_x).mean.detach())


def test_higher_latent_dims_get_no_snapshots(tmp_path, idx_dir):
    path, _ = _train(tmp_path, idx_dir, "run", latent_dim=3, epochs=1)
    assert not (path / LATENTS).exists()
    names = {p.name for p in (path / FIGURES).iterdir()}
    assert names == {"training_curves.png", "reconstructions.png", "samples.png", "traversal.png"}
    assert (path / CHECKPOINT).is_file()


def test_conditional_run_draws_one_sample_row_per_class(tmp_path, idx_dir, monkeypatch):
    calls = {}
    original = plots.prior_samples

    def spy(model, num=64, y=None, **kwargs):
        calls.update(num=num, y=y, **kwargs)
        return original(model, num, y, **kwargs)

    monkeypatch.setattr(plots, "prior_samples", spy)
    path, _ = _train(tmp_path, idx_dir, "cvae", latent_dim=2, epochs=1, conditional=True)
    assert calls["cols"] == 8 and calls["num"] == 4 * 8  # the tiny dataset has 4 classes
    assert calls["y"].tolist() == [k for k in range(4) for _ in range(8)]
    assert (path / FIGURES / "manifold.png").is_file()
