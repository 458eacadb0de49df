"""Runs end to end: configuration → data → model/guide → ``fit`` → run folder. The CLI's API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pyrovae.build import build_model_and_guide
from pyrovae.config import TrainConfig
from pyrovae.data.images import ImageData, load_data
from pyrovae.errors import PyroVAEError
from pyrovae.inference.evaluate import evaluate_elbo
from pyrovae.inference.train import fit, make_optimizer
from pyrovae.rundir import (
    create_run,
    default_run_dir,
    load_checkpoint,
    read_config,
    read_metrics,
    save_checkpoint,
    write_evaluation,
    write_metrics,
)
from pyrovae.runtime import get_rng_state, resolve_device, set_rng_state, set_seed


def _data(config: TrainConfig, device: torch.device, data_dir: str | None, download: bool):
    return load_data(config.dataset, config.pixels, device, data_dir, config.train_subset, download)


def _restore(config: TrainConfig, state: dict[str, Any], data: ImageData, device: torch.device):
    model, guide = build_model_and_guide(config, data.num_pixels)
    model.to(device)
    guide.to(device)
    try:
        model.load_state_dict(state["model"])
        guide.load_state_dict(state["guide"])
    except (RuntimeError, KeyError) as e:
        first = str(e).splitlines()[0]
        raise PyroVAEError(f"checkpoint does not match the run's config: {first}") from None
    return model, guide


def _train(config, path, model, guide, optimizer, data, start_epoch, history, progress):
    history = list(history)

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

    fit(
        model,
        guide,
        data,
        config.estimator,
        epochs=config.epochs,
        batch_size=config.batch_size,
        num_particles=config.num_particles,
        seed=config.seed,
        optimizer=optimizer,
        start_epoch=start_epoch,
        progress=progress,
        on_epoch_end=checkpoint,
    )
    return history


def train_run(
    config: TrainConfig,
    run_dir: str | Path | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Train a new run; returns its folder and per-epoch metrics. Bad input writes nothing."""
    device = resolve_device(config.device)
    data = _data(config, device, data_dir, download)
    path = Path(run_dir) if run_dir is not None else default_run_dir(config)
    create_run(path, config, {"device": str(device), "num_pixels": data.num_pixels})
    set_seed(config.seed)  # the weights' initialization is part of the run
    model, guide = build_model_and_guide(config, data.num_pixels)
    model.to(device)
    guide.to(device)
    optimizer = make_optimizer((model, guide), config.lr)
    return path, _train(config, path, model, guide, optimizer, data, 0, [], progress)


def resume_run(
    run_dir: str | Path,
    epochs: int | None = None,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Continue a run from its checkpoint up to ``epochs`` in total (default: the run's own)."""
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
    model, guide = _restore(config, state, data, dev)
    optimizer = make_optimizer((model, guide), config.lr)
    optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    history = [r for r in read_metrics(path) if r["epoch"] <= done]
    return path, _train(config, path, model, guide, optimizer, data, done, history, progress)


def evaluate_run(
    run_dir: str | Path,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
) -> dict[str, Any]:
    """Test figures of a run's checkpoint, also written to the run's ``evaluation.json``."""
    path = Path(run_dir)
    config = read_config(path)
    if device is not None:
        config = config.replace(device=device)
    dev = resolve_device(config.device)
    state = load_checkpoint(path, dev)
    data = _data(config, dev, data_dir, download)
    model, guide = _restore(config, state, data, dev)
    test = evaluate_elbo(model, guide, data.test_x)
    figures = {
        "epoch": int(state["epoch"]),
        "num_test": int(data.test_x.shape[0]),
        "test_elbo": test["elbo"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
    }
    write_evaluation(path, figures)
    return figures
