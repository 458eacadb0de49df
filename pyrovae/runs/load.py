"""Rebuilding a run from its folder: data, model and guide with the checkpoint's weights.

:func:`load_run` is the public way back to a trained run; the other verbs (evaluate, diagnose,
plot) start from it, and train/resume share its data and model helpers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyrovae.core.errors import PyroVAEError, ShapeError, first_line
from pyrovae.core.runtime import resolve_device
from pyrovae.data.base import TrainingData
from pyrovae.data.images import load_data
from pyrovae.data.labelled import SemiSupervisedData
from pyrovae.runs.build import build_model_and_guide, check_fits
from pyrovae.runs.checkpoint import checkpoint_history, load_checkpoint
from pyrovae.runs.config import TrainConfig
from pyrovae.runs.folder import read_config, read_run_meta, run_lock

OTHER_DATA_FLAG = "--allow-other-data"


def run_data(
    config: TrainConfig,
    device: torch.device,
    data_dir: str | None,
    download: bool,
    recorded: dict[str, Any] | None = None,
    allow_other_data: bool = False,
) -> TrainingData:
    """The run's dataset on ``device``, as ``config`` describes it (streamed when
    ``config.stream`` or when it does not fit).

    ``recorded``: what the run's ``config.json`` says about its data; data whose content hash
    differs is refused unless ``allow_other_data``.
    """
    data = load_data(
        config.dataset,
        config.pixels,
        device,
        data_dir,
        config.train_subset,
        download,
        channels=config.channels,
        image_size=config.image_size,
        allow_large_images=config.allow_large_images,
        test_fraction=config.test_fraction,
        test_split=config.test_split,
        split_seed=config.split_seed,
        stream=True if config.stream else None,
        workers=config.workers,
    )
    if config.semi_supervised:
        data = SemiSupervisedData(data, config.labels, config.seed)
    expected = (recorded or {}).get("sha256")
    found = data.origin.sha256 if data.origin is not None else None
    if expected and found != expected and not allow_other_data:
        raise PyroVAEError(
            f"the data in {data.origin.path} (sha256 {found[:12]}…) is not the data this run "
            f"was trained on ({recorded.get('path')}, sha256 {expected[:12]}…); pass "
            f"{OTHER_DATA_FLAG} to use it anyway"
        )
    return data


def build_on(
    config: TrainConfig,
    num_pixels: int,
    num_classes: int,
    device: torch.device,
    image_shape: Sequence[int] | None = None,
):
    """Freshly initialized model and guide on ``device``, once their size is known to fit; a
    data shape the networks cannot take is a one-line error naming the dataset."""
    try:
        check_fits(config, num_pixels, num_classes, device, image_shape)
        model, guide = build_model_and_guide(config, num_pixels, num_classes, image_shape)
    except ShapeError as e:
        raise ShapeError(f"{config.dataset}: {e}") from None
    return model.to(device), guide.to(device)


def _mismatch(part: str, module: torch.nn.Module, saved: Any) -> str | None:
    """What differs between a module's parameters and a checkpoint's, briefly, or None."""
    if not isinstance(saved, dict):
        return f"the checkpoint has no {part} weights"
    built = module.state_dict()
    missing = [k for k in built if k not in saved]
    extra = [k for k in saved if k not in built]
    shapes = [
        f"{k} {tuple(saved[k].shape)} saved, {tuple(v.shape)} built"
        for k, v in built.items()
        if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape
    ]
    problems = []
    for what, keys in (("shapes differ", shapes), ("missing", missing), ("unexpected", extra)):
        if keys:
            more = f" and {len(keys) - 2} more" if len(keys) > 2 else ""
            problems.append(f"{len(keys)} {what}: {'; '.join(keys[:2])}{more}")
    return f"{part}: " + ", ".join(problems) if problems else None


def restore(
    config: TrainConfig,
    state: dict[str, Any],
    num_pixels: int,
    num_classes: int,
    device: torch.device,
    image_shape: Sequence[int] | None = None,
):
    """Model and guide with the checkpoint's weights (both: a VampPrior's components go
    through the guide's encoder). A checkpoint of another architecture is a one-line error that
    names the first mismatched keys and shapes."""
    model, guide = build_on(config, num_pixels, num_classes, device, image_shape)
    problems = [
        p
        for p in (
            _mismatch("model", model, state.get("model")),
            _mismatch("guide", guide, state.get("guide")),
        )
        if p is not None
    ]
    if problems:
        raise PyroVAEError(
            "the checkpoint does not match the run's config (" + "; ".join(problems) + ")"
        )
    model.load_state_dict(state["model"])
    guide.load_state_dict(state["guide"])
    return model, guide


@dataclass(frozen=True)
class LoadedRun:
    """A trained run in memory: its folder, config (with the device used), the epoch its
    checkpoint holds, the data, model and guide with the checkpoint's weights, and the metrics
    of every epoch up to the checkpoint's."""

    path: Path
    config: TrainConfig
    epoch: int
    data: TrainingData
    model: Any
    guide: Any
    history: list[dict[str, Any]] = field(default_factory=list)


def load_run(
    run_dir: str | Path,
    device: str | None = None,
    data_dir: str | None = None,
    download: bool = True,
    allow_other_data: bool = False,
) -> LoadedRun:
    """Rebuild a run folder's model and guide from its config and checkpoint, on ``device``
    (default: the run's own), with its data: to plot, evaluate or sample in Python. Data whose
    content differs from what the run recorded is refused unless ``allow_other_data``."""
    path = Path(run_dir)
    config = read_config(path)
    if device is not None:
        config = config.replace(device=device)
    dev = resolve_device(config.device)
    state = load_checkpoint(path, dev)
    recorded = read_run_meta(path).get("data")
    data = run_data(config, dev, data_dir, download, recorded, allow_other_data)
    model, guide = restore(config, state, data.num_pixels, data.num_classes, dev, data.shape)
    history = checkpoint_history(path, state)
    return LoadedRun(path, config, int(state["epoch"]), data, model, guide, history)


@contextmanager
def writing_into(run_dir: Path, target: Path) -> Iterator[None]:
    """The run folder's lock while ``target`` (a file or folder) lies inside it; nothing else."""
    read_run_meta(run_dir)
    inside = target.resolve().is_relative_to(run_dir.resolve())
    with run_lock(run_dir) if inside else nullcontext():
        yield


def first_test_images(data: TrainingData, n: int | None, flag: str) -> torch.Tensor:
    """The first ``n`` test images (all of them when ``n`` is None); n outside 1..N is an error."""
    total = data.test_x.shape[0]
    if n is None:
        return data.test_x
    if not 1 <= n <= total:
        raise PyroVAEError(f"{flag} must be between 1 and {total} (the test images), got {n}")
    return data.test_x[:n]


# What a --baseline-input run must share with the run it feeds.
SHARED_WITH_BASELINE = (
    "dataset",
    "pixels",
    "likelihood",
    "condition_on",
    "hidden",
    "activation",
    "channels",
    "image_size",
)


def load_baseline_input(config: TrainConfig, model: torch.nn.Module, device: torch.device) -> None:
    """Copy the trained network of the ``--baseline-input`` run into ``model``'s condition. The
    run must be a ``--conditional-model baseline`` run with the same data, pixels, likelihood,
    mask and network sizes; otherwise one line says what differs."""
    path = Path(config.baseline_input)
    other = read_config(path)
    if other.conditional_model != "baseline":
        raise PyroVAEError(
            f"--baseline-input {path} is a --conditional-model {other.conditional_model} run; "
            "it needs a --conditional-model baseline run"
        )
    for name in SHARED_WITH_BASELINE:
        if getattr(other, name) != getattr(config, name):
            raise PyroVAEError(
                f"--baseline-input {path} was trained with {name} = {getattr(other, name)!r}, "
                f"this run has {getattr(config, name)!r}; they must match"
            )
    state = load_checkpoint(path, device)
    try:
        model.condition.baseline.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as e:
        raise PyroVAEError(
            f"--baseline-input {path}: its checkpoint does not fit ({first_line(str(e))})"
        ) from None
    model.condition.baseline.requires_grad_(False)
