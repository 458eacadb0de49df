"""What a run folder records of trained epochs, and the checkpoint a resume starts from.

A resume must never discard recorded work. A folder whose ``checkpoint.pt`` is missing (or a
symbolic link to nothing) but whose ``metrics.jsonl``, ``evaluation.json``, ``diagnostics.json``
or ``latents.pt`` record epochs is refused: training it from epoch 0 would overwrite those
records. ``train --resume RUN_DIR --restart`` trains it again from epoch 0 after moving every
record (all but ``config.json`` and the lock) into ``RUN_DIR/restarted-<date>-<time>/``; nothing
is deleted.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from pyrovae.core.errors import Note, PyroVAEError
from pyrovae.core.files import os_error
from pyrovae.runs.checkpoint import load_checkpoint
from pyrovae.runs.folder import (
    CHECKPOINT,
    CONFIG,
    DIAGNOSTICS,
    EVALUATION,
    LATENTS,
    LOCK,
    METRICS,
    read_diagnostics,
    read_evaluations,
    read_latents,
    unused_path,
)

RESTART_FLAG = "--restart"
RESTARTED = "restarted-"  # RUN_DIR/restarted-<date>-<time>/: what a restart set aside
KEPT = (CONFIG, LOCK)  # what a restart leaves in place: the run's settings and its lock


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _metrics_lines(path: Path) -> tuple[list[str], set[int]] | None:
    """``metrics.jsonl``'s non-empty lines and the epochs they record, read leniently (a damaged
    line is still a line); None when there is no such file."""
    try:
        lines = [line for line in (path / METRICS).read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    epochs = set()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            epochs.add(record["epoch"])
    return lines, epochs


def _metrics_record(path: Path) -> str | None:
    """What ``metrics.jsonl`` holds, e.g. ``metrics.jsonl records 4 epochs``."""
    try:
        read = _metrics_lines(path)
    except (OSError, UnicodeDecodeError):
        return f"{METRICS} cannot be read"
    if read is None:
        return None
    lines, epochs = read
    if epochs:
        return f"{METRICS} records {_plural(len(epochs), 'epoch')}"
    return f"{METRICS} holds {_plural(len(lines), 'line')}" if lines else None


def _entries_record(path: Path, name: str, read, noun: str) -> str | None:
    try:
        entries = read(path)
    except PyroVAEError:
        return f"{name} holds records it cannot read"
    return f"{name} records {_plural(len(entries), noun)}" if entries else None


def _latents_record(path: Path) -> str | None:
    try:
        latents = read_latents(path)
    except PyroVAEError:
        return f"{LATENTS} holds records it cannot read"
    trained = [] if latents is None else [e for e in latents["epochs"].tolist() if e > 0]
    return f"{LATENTS} records codes after {_plural(len(trained), 'epoch')}" if trained else None


def recorded_work(path: Path) -> list[str]:
    """What run folder ``path`` records of trained epochs, one phrase per file, e.g.
    ``metrics.jsonl records 4 epochs``; empty when it records none (a run killed before its
    first checkpoint holds its config and at most the codes before training)."""
    records = [
        _metrics_record(path),
        _entries_record(path, EVALUATION, read_evaluations, "evaluation"),
        _entries_record(path, DIAGNOSTICS, read_diagnostics, "row"),
        _latents_record(path),
    ]
    return [r for r in records if r is not None]


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with ``path``'s checkpoint entry (``is missing``, ``is a symbolic link to
    X, which does not exist``, …), or None when it is a file (or a link to one)."""
    file = path / CHECKPOINT
    if file.is_file():
        return None
    if file.is_symlink():
        target = os.readlink(file)
        what = "does not exist" if not file.exists() else "is not a file"
        return f"is a symbolic link to {target}, which {what}"
    return "is not a file" if file.exists() else "is missing"


def resume_state(path: Path, map_location: Any) -> dict[str, Any] | None:
    """The checkpoint a resume of ``path`` starts from; None for a folder that never finished an
    epoch (it trains from epoch 0). A checkpoint missing, or not a file, next to records of
    trained epochs is refused in one line naming both, and so is a checkpoint entry that is
    not a file (a dangling link is never replaced silently)."""
    problem = checkpoint_problem(path)
    if problem is None:
        state = load_checkpoint(path, map_location)
        _check_metrics_not_ahead(path, int(state["epoch"]))
        return state
    records = recorded_work(path)
    file = path / CHECKPOINT
    if not records and not (file.exists() or file.is_symlink()):
        return None
    but = f", but {', '.join(records)}" if records else ""
    raise PyroVAEError(
        f"cannot resume {path}: {CHECKPOINT} {problem}{but}; restore {CHECKPOINT}, or pass "
        f"{RESTART_FLAG} to move the run's records into {path / RESTARTED}<time>/ and train it "
        "again from epoch 0"
    )


def _check_metrics_not_ahead(path: Path, done: int) -> None:
    """A checkpoint is written before its epoch's metrics line, so ``metrics.jsonl`` never
    records an epoch past the checkpoint's unless the checkpoint was replaced by an older one:
    resuming would rewrite those records away. Refused in one line naming both."""
    try:
        read = _metrics_lines(path)
    except (OSError, UnicodeDecodeError):
        return  # read_metrics names an unreadable file where the run reads it
    last = max(read[1], default=0) if read is not None else 0
    if last > done:
        raise PyroVAEError(
            f"cannot resume {path}: {METRICS} records epochs up to {last}, but {CHECKPOINT} holds "
            f"epoch {done} (an older checkpoint?); restore the checkpoint of epoch {last}, or "
            f"pass {RESTART_FLAG} to move the run's records into {path / RESTARTED}<time>/ and "
            "train it again from epoch 0"
        )


def set_aside(path: Path) -> Path | None:
    """Move everything in run folder ``path`` but its config, its lock and what earlier
    restarts set aside into a new ``restarted-<date>-<time>/`` in it; returns that folder, or
    None when there was nothing to move. A note names the folder."""
    moving = [
        p for p in sorted(path.iterdir()) if p.name not in KEPT and not p.name.startswith(RESTARTED)
    ]
    if not moving:
        return None
    target = unused_path(path / f"{RESTARTED}{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        target.mkdir()
        for p in moving:
            p.rename(target / p.name)  # a symbolic link moves as the link itself
    except OSError as e:
        raise os_error("move the records of the run into", target, e) from None
    names = ", ".join(p.name for p in moving)
    warnings.warn(f"{RESTART_FLAG}: moved {names} into {target}", Note, stacklevel=2)
    return target
