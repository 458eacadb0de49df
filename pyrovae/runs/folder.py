"""A run folder: ``config.json``, ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt``,
what ``evaluate`` / ``diagnose`` found (``evaluation.json``, ``diagnostics.json``), and, for a
2-D latent space, ``latents.pt`` (test codes per epoch); figures go to ``figures/``.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so
a run that fails part-way leaves the last good checkpoint and metrics as they were.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.files import atomic_write
from pyrovae.runs.config import TrainConfig

RUN_FORMAT = "pyrovae-run/1"
CHECKPOINT_FORMAT = "pyrovae-checkpoint/1"
CONFIG, METRICS, CHECKPOINT, EVALUATION, DIAGNOSTICS, LATENTS, FIGURES = (
    "config.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "evaluation.json",
    "diagnostics.json",
    "latents.pt",
    "figures",
)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def default_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{Path(config.dataset).name}-{config.estimator}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def create_run(path: Path, config: TrainConfig, extra: dict[str, Any]) -> Path:
    """Make a new run folder and write its config; an existing non-empty folder is refused."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PyroVAEError(
            f"{path} already exists and is not empty; use --resume {path} or another --run-dir"
        )
    path.mkdir(parents=True, exist_ok=True)
    _write_json(path / CONFIG, {"format": RUN_FORMAT, "config": config.to_dict(), **extra})
    return path


def read_run_meta(path: Path) -> dict[str, Any]:
    """Everything ``config.json`` holds (format, config, device, data sizes), checked."""
    if not path.is_dir():
        raise PyroVAEError(f"run folder {path} does not exist")
    try:
        meta = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        raise PyroVAEError(f"{path} is not a pyrovae run folder (no readable {CONFIG})") from None
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        raise PyroVAEError(f"{path} is not a pyrovae run folder ({CONFIG} is not pyrovae's)")
    return meta


def read_config(path: Path) -> TrainConfig:
    """The config of run folder ``path``; a missing or foreign folder is a clear error."""
    return TrainConfig.from_dict(read_run_meta(path)["config"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path / CHECKPOINT, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    file = path / CHECKPOINT
    if not file.is_file():
        raise PyroVAEError(f"{path} has no {CHECKPOINT} (the run never finished an epoch)")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:
        raise PyroVAEError(f"cannot read {file}: {str(e).splitlines()[0]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise PyroVAEError(f"{file} is not a pyrovae checkpoint")
    return state


def read_metrics(path: Path) -> list[dict[str, Any]]:
    file = path / METRICS
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path / METRICS, lambda f: f.write(text.encode()))


def write_evaluation(path: Path, figures: dict[str, Any]) -> None:
    _write_json(path / EVALUATION, figures)


def write_diagnostics(path: Path, rows: list[dict[str, Any]]) -> None:
    _write_json(path / DIAGNOSTICS, rows)


def read_evaluation(path: Path) -> dict[str, Any] | None:
    """``evaluation.json``, or None when the run was never evaluated."""
    return _read_json(path / EVALUATION)


def read_diagnostics(path: Path) -> list[dict[str, Any]] | None:
    """``diagnostics.json``'s rows, or None when the run was never diagnosed."""
    return _read_json(path / DIAGNOSTICS)


def _read_json(file: Path) -> Any:
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        raise PyroVAEError(f"cannot read {file}: not valid JSON") from None


def write_latents(path: Path, latents: dict[str, torch.Tensor]) -> None:
    """Latent snapshots: ``epochs`` (E,), ``codes`` (E, N, 2) E_q[z|x] of the first N test
    images after each epoch (0: before training), and their ``labels`` (N,)."""
    atomic_write(path / LATENTS, lambda f: torch.save(latents, f))


def read_latents(path: Path) -> dict[str, torch.Tensor] | None:
    """What :func:`write_latents` wrote (on the CPU), or None when there is no snapshot file."""
    file = path / LATENTS
    if not file.is_file():
        return None
    try:
        latents = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PyroVAEError(f"cannot read {file}: {str(e).splitlines()[0]}") from None
    if not isinstance(latents, dict) or not {"epochs", "codes", "labels"} <= set(latents):
        raise PyroVAEError(f"{file} is not a pyrovae latent-snapshot file")
    return latents
