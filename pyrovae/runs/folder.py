"""A run folder: ``config.json``, ``checkpoint.pt`` (weights, optimizer and RNG state, and the
metrics of every epoch so far), ``metrics.jsonl`` (one line per epoch, rewritten from the
checkpoint on resume), what ``evaluate`` / ``diagnose`` found (``evaluation.json``,
``diagnostics.json``, one entry per setting), and, for a 2-D latent space, ``latents.pt`` (test
codes per epoch); figures go to ``figures/``.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so
a run killed at any instant keeps its last good checkpoint, whose own copy of the metrics is the
record of what was trained (its checks: :mod:`~pyrovae.runs.checkpoint`). A process that writes
to a folder holds its lock (``.lock``, ``fcntl.flock``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.files import atomic_write, os_error, read_at_most
from pyrovae.runs.config import TrainConfig

if TYPE_CHECKING:  # torch is loaded where latents are read or written, not by --help's imports
    import torch

RUN_FORMAT = "pyrovae-run/1"
EVALUATIONS_FORMAT = "pyrovae-evaluations/1"
DIAGNOSTICS_FORMAT = "pyrovae-diagnostics/1"
CONFIG, METRICS, CHECKPOINT, EVALUATION, DIAGNOSTICS, LATENTS, FIGURES, LOCK = (
    "config.json",
    "metrics.jsonl",
    "checkpoint.pt",
    "evaluation.json",
    "diagnostics.json",
    "latents.pt",
    "figures",
    ".lock",
)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


NAMED_PARTS = ("likelihood", "guide", "prior", "net")  # named in a folder when not the default


def run_name(config: TrainConfig) -> str:
    """What tells a run apart: dataset, estimator, K when not 1, ``latent-100-50`` for several
    stochastic layers (their sizes, bottom first; a one-layer run's name leaves its size out),
    then ``part-name`` for each of likelihood, guide, prior and net that is not the default,
    e.g. ``fashion-mnist-iwae-k5-guide-flow-net-conv``."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    parts = [Path(config.dataset).name, config.estimator]
    if config.num_particles != defaults["num_particles"]:
        parts.append(f"k{config.num_particles}")
    if len(config.latent_dims) > 1:
        parts.append("latent-" + "-".join(str(d) for d in config.latent_dims))
    parts += [
        f"{part}-{getattr(config, part)}"
        for part in NAMED_PARTS
        if getattr(config, part) != defaults[part]
    ]
    return "-".join(parts)


def default_run_dir(config: TrainConfig, root: str | Path = "runs") -> Path:
    """``root/<date>-<time>-<run_name>``, with ``-1``, ``-2``, … when that folder exists."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return unused_path(Path(root) / f"{stamp}-{run_name(config)}")


def unused_path(base: Path) -> Path:
    """``base``, or ``base-1``, ``base-2``, … the first that does not exist."""
    path, i = base, 1
    while path.exists() or path.is_symlink():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


@contextmanager
def run_lock(path: Path) -> Iterator[None]:
    """Hold ``path``'s exclusive lock while writing to it: a second pyrovae process that wants
    to write there (train, resume, evaluate, diagnose, plot or sample into it) stops at once
    with one line. The lock is the kernel's (``flock``): a killed process releases it."""
    lock = path / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError:
        raise PyroVAEError(
            f"{lock} is a folder, where pyrovae keeps the lock file of {path}; remove that "
            "folder (pyrovae makes the file)"
        ) from None
    except OSError as e:
        raise os_error("write", lock, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PyroVAEError(
                f"{path} is in use by another pyrovae process (training or evaluating there); "
                "wait for it to finish or use another folder"
            ) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_fresh(path: Path) -> bool:
    """True for a folder a run may be created in: missing, empty, or holding only a lock."""
    return not path.exists() or (path.is_dir() and all(p.name == LOCK for p in path.iterdir()))


def check_new_run(path: Path) -> None:
    """Refuse, in one line, a folder that a new run may not be created in."""
    if path.exists() and not path.is_dir():
        raise PyroVAEError(f"{path} is a file; --run-dir needs a folder")
    if not is_fresh(path):
        checkpoint, metrics = path / CHECKPOINT, path / METRICS
        recorded = metrics.is_file() and metrics.stat().st_size > 0  # (epochs: records.py)
        never_trained = not (checkpoint.exists() or checkpoint.is_symlink() or recorded)
        if (path / CONFIG).is_file() and never_trained:
            hint = f"it has no checkpoint yet: --resume {path} trains it from epoch 0"
        else:
            hint = f"use --resume {path} or another --run-dir"
        raise PyroVAEError(f"{path} already exists and is not empty; {hint}")


def make_run_dir(path: Path) -> None:
    """Create the folder (and its parents) of a new run."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error("create", path, e) from None


def create_run(path: Path, config: TrainConfig, extra: dict[str, Any]) -> Path:
    """Write a new run's config into ``path`` (made by :func:`make_run_dir`, its lock held);
    a folder that another run got to first is refused."""
    check_new_run(path)
    _write_json(path / CONFIG, {"format": RUN_FORMAT, "config": config.to_dict(), **extra})
    return path


# The most bytes read from a settings file (a --config file or a run's config.json): those are
# under 1 kB and a few kB; a bound keeps /dev/zero, or a dataset given by mistake, from filling
# memory.
SETTINGS_MAX_BYTES = 1 << 20


def read_run_meta(path: Path) -> dict[str, Any]:
    """Everything ``config.json`` holds (format, config, device, data sizes), checked."""
    if not path.is_dir():
        raise PyroVAEError(f"run folder {path} does not exist")
    file = path / CONFIG
    try:
        raw = read_at_most(file, SETTINGS_MAX_BYTES)
        if raw is None:
            raise PyroVAEError(
                f"{file} is damaged: it is larger than {SETTINGS_MAX_BYTES // 1024} KiB, and a "
                f"run's {CONFIG} is a few kB"
            )
        meta = json.loads(raw.decode())
    except FileNotFoundError:
        raise PyroVAEError(f"{path} is not a pyrovae run folder (it has no {CONFIG})") from None
    except (OSError, ValueError) as e:
        raise PyroVAEError(f"cannot read {file}: {first_line(e)}") from None
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        raise PyroVAEError(f"{path} is not a pyrovae run folder ({CONFIG} is not pyrovae's)")
    if not isinstance(meta.get("config"), dict):
        raise PyroVAEError(f"{file} is damaged: its 'config' entry is missing or not an object")
    for key in ("num_pixels", "num_classes"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PyroVAEError(f"{file} is damaged: {key!r} must be a whole number, got {value!r}")
    return meta


def read_config(path: Path) -> TrainConfig:
    """The config of run folder ``path``; a missing, foreign or damaged folder is a clear error."""
    settings = read_run_meta(path)["config"]
    try:
        return TrainConfig.from_record(settings)
    except PyroVAEError as e:
        raise PyroVAEError(f"{path / CONFIG} is damaged: {e}") from None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """``metrics.jsonl``'s records (empty when there is none); a bad line is a clear error."""
    file = path / METRICS
    if not file.is_file():
        return []
    records = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
            raise PyroVAEError(
                f"{file} line {number} is damaged (not a JSON record with an epoch); "
                "--resume rewrites the file from the checkpoint"
            )
        records.append(record)
    return records


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path / METRICS, lambda f: f.write(text.encode()))


def _entries(file: Path, fmt: str, key: str) -> list[dict[str, Any]]:
    """The entries of an evaluation / diagnostics file (also in its older one-setting form)."""
    data = _read_json(file)
    if data is None:
        return []
    if isinstance(data, dict) and data.get("format") == fmt:
        data = data.get(key)
    elif isinstance(data, dict):  # before evaluations were kept per setting: one entry
        data = [data]
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise PyroVAEError(f"cannot read {file}: not a list of {key}")
    return data


def _merge(
    old: list[dict], new: list[dict], fields: tuple[str, ...], defaults: dict | None = None
) -> list[dict]:
    """``old`` with the entries of ``new`` added, replacing those of the same setting (a field
    an entry lacks reads as ``defaults`` gives it, else None)."""

    def setting(e: dict) -> tuple:
        return tuple(e.get(f, (defaults or {}).get(f)) for f in fields)

    replaced = {setting(e) for e in new}
    return [e for e in old if setting(e) not in replaced] + list(new)


EVALUATION_SETTING = (
    "epoch",
    "method",
    "num_samples",
    "num_test",
    "ais_steps",
    "chains",
    "leapfrog",
    "ais_from",
)
# evaluations written before AIS existed are importance sampling's
EVALUATION_DEFAULTS = {"method": "is"}
DIAGNOSTIC_SETTING = ("epoch", "estimator", "num_particles", "samples", "batch_size")


def write_evaluation(path: Path, figures: dict[str, Any]) -> None:
    """Add ``figures`` to ``evaluation.json`` (last: the file is in the order of writing),
    replacing an earlier evaluation of the same (epoch, method, K, test images, AIS settings);
    evaluations at other settings are kept."""
    entries = _merge(read_evaluations(path), [figures], EVALUATION_SETTING, EVALUATION_DEFAULTS)
    _write_json(path / EVALUATION, {"format": EVALUATIONS_FORMAT, "evaluations": entries})


def read_evaluations(path: Path) -> list[dict[str, Any]]:
    """Every evaluation recorded in ``evaluation.json`` (empty when never evaluated)."""
    return _entries(path / EVALUATION, EVALUATIONS_FORMAT, "evaluations")


def write_diagnostics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Add ``rows`` to ``diagnostics.json``, replacing earlier rows of the same setting."""
    entries = _merge(read_diagnostics(path), rows, DIAGNOSTIC_SETTING)
    _write_json(path / DIAGNOSTICS, {"format": DIAGNOSTICS_FORMAT, "rows": entries})


def read_diagnostics(path: Path) -> list[dict[str, Any]]:
    """Every row recorded in ``diagnostics.json`` (empty when never diagnosed)."""
    return _entries(path / DIAGNOSTICS, DIAGNOSTICS_FORMAT, "rows")


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
    import torch

    atomic_write(path / LATENTS, lambda f: torch.save(latents, f))


def read_latents(path: Path) -> dict[str, torch.Tensor] | None:
    """What :func:`write_latents` wrote (on the CPU), or None when there is no snapshot file."""
    import torch

    file = path / LATENTS
    if not file.is_file():
        return None
    try:
        latents = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PyroVAEError(
            f"cannot read {file}: damaged, or not a latent-snapshot file ({type(e).__name__})"
        ) from None
    if not isinstance(latents, dict) or not {"epochs", "codes", "labels"} <= set(latents):
        raise PyroVAEError(f"{file} is not a pyrovae latent-snapshot file")
    return latents


GAPS, GAPS_FORMAT = "gaps.json", "pyrovae-gaps/1"


def read_gaps(path: Path) -> list[dict[str, Any]]:
    """Every entry of ``gaps.json``, in the order written (empty when there is none). A file
    that is not pyrovae's list of entries is a one-line error: it is never overwritten."""
    file = path / GAPS
    if (file.exists() or file.is_symlink()) and not file.is_file():
        raise PyroVAEError(f"{file} is not a file; move it away to record inference gaps")
    data = _read_json(file)
    if data is None:
        return []
    ours = isinstance(data, dict) and data.get("format") == GAPS_FORMAT
    entries = data.get("entries") if ours else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PyroVAEError(
            f"{file} is damaged (not pyrovae's list of gap entries); pyrovae does not "
            "overwrite it: move it away to record new ones"
        )
    return entries


def append_gaps(path: Path, entry: dict[str, Any]) -> None:
    """Add ``entry`` at the end of ``gaps.json`` (atomically); earlier entries are kept as they
    are, whatever their settings: the file is only ever appended to."""
    entries = read_gaps(path)
    _write_json(path / GAPS, {"format": GAPS_FORMAT, "entries": [*entries, entry]})
