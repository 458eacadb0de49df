"""Runs end to end: configuration → data → model/guide → ``fit`` → run folder. The CLI's API."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.data.images import ImageData, load_data
from pyrovae.errors import PyroVAEError
from pyrovae.inference.diagnostics import gradient_statistics
from pyrovae.inference.estimators import make_estimator
from pyrovae.inference.evaluate import evaluate_elbo
from pyrovae.inference.marginal import active_units, log_marginal_likelihood
from pyrovae.inference.train import fit, make_optimizer
from pyrovae.labels import labels_for
from pyrovae.run_figures import LatentSnapshots, diagnostic_figures, standard_figures
from pyrovae.rundir import (
    CHECKPOINT,
    FIGURES,
    METRICS,
    create_run,
    default_run_dir,
    load_checkpoint,
    read_config,
    read_latents,
    read_metrics,
    read_run_meta,
    save_checkpoint,
    write_diagnostics,
    write_evaluation,
    write_metrics,
)
from pyrovae.runtime import get_rng_state, resolve_device, seeded, set_rng_state, set_seed


def _data(config: TrainConfig, device: torch.device, data_dir: str | None, download: bool):
    return load_data(config.dataset, config.pixels, device, data_dir, config.train_subset, download)


def _build(config: TrainConfig, num_pixels: int, num_classes: int, device: torch.device):
    model, guide = build_model_and_guide(config, num_pixels, num_classes)
    return model.to(device), guide.to(device)


def _preflight(config: TrainConfig, model, guide, data: ImageData) -> None:
    """One loss evaluation on a first batch, before anything is written: an incompatible pair
    (analytic-kl with a flow guide or a learned prior, …) fails here with its one-line error.
    Under its own seed, so the training run draws exactly what it would have drawn."""
    b = min(config.batch_size, data.train_x.shape[0])
    with seeded(config.seed):
        x = data.train_epoch(config.seed, 0)[:b]
        y = labels_for(model, data.train_y[:b])
        args = (x,) if y is None else (x, y)
        loss = make_estimator(config.estimator, config.num_particles).loss(model, guide, *args)
    if not math.isfinite(loss):
        raise PyroVAEError(f"the loss at initialization is {loss}; check the data and settings")


def _restore(
    config: TrainConfig,
    state: dict[str, Any],
    num_pixels: int,
    num_classes: int,
    device: torch.device,
):
    """Model and guide with the checkpoint's weights (both: a VampPrior's components go
    through the guide's encoder)."""
    model, guide = _build(config, num_pixels, num_classes, device)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except (RuntimeError, KeyError) as e:
        first = str(e).splitlines()[0]
        raise PyroVAEError(f"checkpoint does not match the run's config: {first}") from None
    return model, guide


def _train(config, path, model, guide, optimizer, data, start_epoch, history, progress, figures):
    history = list(history)
    snapshots = None
    if figures and config.latent_dim == 2:
        snapshots = LatentSnapshots(path, model, guide, data, start_epoch)

    def checkpoint(record: dict[str, Any]) -> None:
        save_checkpoint(
            path,
            {
                "epoch": record["epoch"],
                "model": model.state_dict(),
                "guide": guide.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": get_rng_state(),
            },
        )
        history.append(record)
        write_metrics(path, history)
        if snapshots is not None:
            snapshots.record(record["epoch"])

    fit(
        model,
        guide,
        data,
        config.estimator,
        epochs=config.epochs,
        batch_size=config.batch_size,
        num_particles=config.num_particles,
        seed=config.seed,
        beta=config.beta,
        kl_warmup=config.kl_warmup,
        jit=not config.no_jit,
        optimizer=optimizer,
        start_epoch=start_epoch,
        progress=progress,
        on_epoch_end=checkpoint,
    )
    if figures:
        latents = snapshots.as_dict() if snapshots is not None else None
        standard_figures(path / FIGURES, path.name, model, guide, data, history, latents)
    return history


def train_run(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    figures: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Train a new run; returns its folder and per-epoch metrics. Bad input writes nothing.

    With ``figures`` the run's standard figures go to ``figures/`` at the end (see
    :func:`plot_runs`) and, for a 2-D latent space, the codes of the first 2000 test images are
    recorded before training and after each epoch in ``latents.pt``. Neither changes what
    training draws or computes.
    """
    device = resolve_device(config.device)
    data = _data(config, device, data_dir, download)
    path = Path(run_dir) if run_dir is not None else default_run_dir(config)
    set_seed(config.seed)  # the weights' initialization is part of the run
    model, guide = _build(config, data.num_pixels, data.num_classes, device)
    _preflight(config, model, guide, data)
    optimizer = make_optimizer((model, guide), config.lr)
    meta = {"device": str(device), "num_pixels": data.num_pixels, "num_classes": data.num_classes}
    create_run(path, config, meta)
    return path, _train(config, path, model, guide, optimizer, data, 0, [], progress, figures)


def resume_run(
    run_dir: str | Path,
    epochs: int | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    figures: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Continue a run from its checkpoint up to ``epochs`` in total (default: the run's own);
    ``figures`` as for :func:`train_run` (latent snapshots are appended to ``latents.pt``)."""
    path = Path(run_dir)
    config = read_config(path)
    changes = {k: v for k, v in {"epochs": epochs, "device": device}.items() if v is not None}
    config = config.replace(**changes)
    dev = resolve_device(config.device)
    state = load_checkpoint(path, dev)
    done = int(state["epoch"])
    if config.epochs <= done:
        raise PyroVAEError(
            f"{path} has trained {done} of {config.epochs} epochs; pass --epochs N > {done}"
        )
    data = _data(config, dev, data_dir, download)
    model, guide = _restore(config, state, data.num_pixels, data.num_classes, dev)
    optimizer = make_optimizer((model, guide), config.lr)
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    history = [r for r in read_metrics(path) if r["epoch"] <= done]
    return path, _train(
        config, path, model, guide, optimizer, data, done, history, progress, figures
    )


@dataclass(frozen=True)
class LoadedRun:
    """A trained run in memory: its folder, config (with the device used), the epoch its
    checkpoint holds, the data, and model and guide with the checkpoint's weights."""

    path: Path
    config: TrainConfig
    epoch: int
    data: ImageData
    model: Any
    guide: Any


def load_run(
    run_dir: str | Path,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> LoadedRun:
    """Rebuild a run folder's model and guide from its config and checkpoint, on ``device``
    (default: the run's own), with its data: to plot, evaluate or sample in Python."""
    path = Path(run_dir)
    config = read_config(path)
    if device is not None:
        config = config.replace(device=device)
    dev = resolve_device(config.device)
    state = load_checkpoint(path, dev)
    data = _data(config, dev, data_dir, download)
    model, guide = _restore(config, state, data.num_pixels, data.num_classes, dev)
    return LoadedRun(path, config, int(state["epoch"]), data, model, guide)


def _at_least(flag: str, value: int, low: int) -> None:
    if value < low:
        raise PyroVAEError(f"{flag} must be at least {low}, got {value}")


def _first_test_images(data: ImageData, n: int | None, flag: str) -> torch.Tensor:
    """The first ``n`` test images (all of them when ``n`` is None); n outside 1..N is an error."""
    total = data.test_x.shape[0]
    if n is None:
        return data.test_x
    if not 1 <= n <= total:
        raise PyroVAEError(f"{flag} must be between 1 and {total} (the test images), got {n}")
    return data.test_x[:n]


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: a standard error from a single image is recorded as null."""
    return value if math.isfinite(value) else None


LOG_PX_SAMPLES = 100  # the paper protocol is 5000: ~10+ min for 10k images on a 2-core CPU


def evaluate_run(
    run_dir: str | Path,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    num_samples: int = LOG_PX_SAMPLES,
    test_subset: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Test figures of a run's checkpoint, also written to the run's ``evaluation.json``.

    ``test_elbo`` / ``test_recon`` / ``test_kl``: single-sample ELBO and its terms;
    ``log_px``: log p(x) ≈ log (1/K) Σ_k p(x, z_k)/q(z_k|x), K = ``num_samples`` (0 skips it),
    with ``log_px_stderr`` (over images), ``log_px_mc_stderr`` (Monte Carlo) and ``ess``;
    ``active_units``: latent dimensions with Cov_x(E_q[z_j|x]) > 0.01, out of ``latent_dim``.
    ``test_subset=N`` uses the first N test images only (from one image: no stderr, no active
    units, recorded as null).
    """
    if num_samples < 0:
        raise PyroVAEError(f"--num-samples must be 0 (no log p(x)) or more, got {num_samples}")
    if test_subset is not None:
        _at_least("--test-subset", test_subset, 1)
    run = load_run(run_dir, device, data_dir, download)
    path, config, data, model, guide = run.path, run.config, run.data, run.model, run.guide
    x = _first_test_images(data, test_subset, "--test-subset")
    y = labels_for(model, data.test_y[: x.shape[0]])
    test = evaluate_elbo(model, guide, x, y)
    figures: dict[str, Any] = {
        "epoch": run.epoch,
        "num_test": int(x.shape[0]),
        "test_elbo": test["elbo"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
    }
    if num_samples > 0:
        lml = log_marginal_likelihood(model, guide, x, num_samples, y, progress=progress)
        figures.update(
            log_px=lml["log_px"],
            log_px_stderr=_finite_or_none(lml["stderr"]),
            log_px_mc_stderr=lml["mc_stderr"],
            ess=lml["ess"],
            num_samples=lml["num_samples"],
        )
    # a covariance over one image is undefined
    figures["active_units"] = active_units(guide, x, y) if x.shape[0] > 1 else None
    figures["latent_dim"] = config.latent_dim
    write_evaluation(path, figures)
    return figures


DIAGNOSTIC_FIGURES = ("snr", "variance_mean", "mean_norm")


def diagnose_run(
    run_dir: str | Path,
    estimators: Sequence[str],
    num_particles: Sequence[int],
    samples: int = 100,
    batch_size: int = 64,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> list[dict[str, Any]]:
    """Gradient variance and SNR of each estimator × K at the run's checkpoint.

    The batch is the first ``batch_size`` test images; each row draws ``samples`` gradients
    under seed 0 (:func:`~pyrovae.inference.diagnostics.gradient_statistics`). Rows hold
    ``estimator``, ``num_particles`` and, per group (``encoder`` φ, ``decoder`` θ), ``snr``
    (mean over components of |E g| / std g), ``variance_mean`` and ``mean_norm`` ‖E g‖.
    Also written to the run's ``diagnostics.json``.
    """
    if not estimators or not num_particles:
        raise PyroVAEError("diagnose needs at least one estimator and one --num-particles")
    _at_least("--samples", samples, 2)
    _at_least("--batch-size", batch_size, 1)
    # every (name, K) is checked before the (slower) checkpoint and data are loaded
    grid = [(name, k, make_estimator(name, k)) for name in estimators for k in num_particles]
    run = load_run(run_dir, device, data_dir, download)
    path, data, model, guide = run.path, run.data, run.model, run.guide
    xb = _first_test_images(data, batch_size, "--batch-size")
    yb = data.test_y[: xb.shape[0]]
    rows = []
    for name, k, estimator in grid:
        with seeded(0):
            stats = gradient_statistics(
                model, guide, xb, estimator, num_samples=samples, y=labels_for(model, yb)
            )
        row: dict[str, Any] = {
            "estimator": name,
            "num_particles": k,
            "samples": samples,
            "batch_size": int(xb.shape[0]),
        }
        for group, figures in stats.items():
            row[group] = {key: figures[key] for key in DIAGNOSTIC_FIGURES}
        rows.append(row)
    write_diagnostics(path, rows)
    return rows


def sample_run(
    run_dir: str | Path,
    num: int = 64,
    label: int | None = None,
    out: str | Path | None = None,
    seed: int = 0,
    device: str | None = None,
) -> Path:
    """Draw ``num`` images E[x|z], z ~ p(z) (for ``label`` with a conditional VAE) and save them
    as a PNG grid (default: ``samples.png`` or ``samples-label-<y>.png`` in the run folder)."""
    from pyrovae.images import as_square, save_grid

    path = Path(run_dir)
    config = read_config(path)
    if num < 1:
        raise PyroVAEError(f"--num must be at least 1, got {num}")
    meta = read_run_meta(path)
    num_classes = int(meta.get("num_classes", 0))
    if label is not None and not config.conditional:
        raise PyroVAEError(f"{path} is not a conditional VAE; drop --label or train --conditional")
    if label is not None and not 0 <= label < num_classes:
        raise PyroVAEError(f"--label must be between 0 and {num_classes - 1}, got {label}")
    if label is None and config.conditional:
        raise PyroVAEError("a conditional VAE generates a chosen class: pass --label Y")
    dev = resolve_device(device or config.device)
    state = load_checkpoint(path, dev)
    model, _ = _restore(config, state, int(meta["num_pixels"]), num_classes, dev)
    y = None if label is None else torch.full((num,), label, dtype=torch.long, device=dev)
    with seeded(seed):
        images = model.generate(num, y)  # (num, D)
    name = "samples.png" if label is None else f"samples-label-{label}.png"
    target = Path(out) if out is not None else path / name
    save_grid(as_square(images).cpu(), target)
    return target


def _finished_run(path: Path) -> list[dict[str, Any]]:
    """The metrics of a run folder that has finished an epoch (else a clear error)."""
    read_run_meta(path)
    history = read_metrics(path)
    if not history or not (path / CHECKPOINT).is_file():
        raise PyroVAEError(
            f"{path} has no {CHECKPOINT} / {METRICS} (the run never finished an epoch)"
        )
    return history


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    labels: Sequence[str] | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> list[Path]:
    """Draw run figures as PNGs; returns the files written.

    One run: its standard figures (those ``train`` writes, from the checkpoint, the metrics and
    ``latents.pt``) plus bound_vs_k / snr_vs_k / gradient_variance where ``evaluate`` /
    ``diagnose`` left their files, into ``out`` (default: the run's ``figures/``). Several
    runs: their training curves overlaid in ``out/training_curves.png`` (labelled by ``labels``,
    default the folder names) and each run's bound and diagnostic figures in ``out/<label>/``;
    ``out`` is required.
    """
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise PyroVAEError("plot needs at least one run folder")
    if len(paths) > 1 and out is None:
        raise PyroVAEError("plotting several runs needs --out DIR for the combined figures")
    if labels is not None and len(labels) != len(paths):
        raise PyroVAEError(f"--labels needs one label per run: {len(paths)}, got {len(labels)}")
    names = list(labels) if labels is not None else [p.name for p in paths]
    if len(set(names)) != len(names):
        raise PyroVAEError("two runs have the same folder name; tell them apart with --labels")
    if len(paths) == 1:
        path = paths[0]
        _finished_run(path)
        run = load_run(path, device, data_dir, download)
        path, data, model, guide = run.path, run.data, run.model, run.guide
        target = Path(out) if out is not None else path / FIGURES
        history = read_metrics(path)
        written = standard_figures(
            target, names[0], model, guide, data, history, read_latents(path)
        )
        return written + diagnostic_figures(path, target)
    from pyrovae import plots

    histories = {name: _finished_run(p) for name, p in zip(names, paths, strict=True)}
    target = Path(out)
    written = [plots.save_figure(plots.training_curves(histories), target / "training_curves.png")]
    for name, path in zip(names, paths, strict=True):
        written += diagnostic_figures(path, target / name)
    return written
