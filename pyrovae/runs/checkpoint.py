"""``checkpoint.pt``: weights, optimizer and RNG state, and the metrics of every epoch so far,
written atomically with a SHA-256 of its content and verified on load.

Format ``pyrovae-checkpoint/2`` always carries the checksum, so a checkpoint of that format
without one was altered and is refused; ``pyrovae-checkpoint/1`` files from before checksums
load with a note.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import torch

from pyrovae.core.errors import Note, PyroVAEError
from pyrovae.core.files import atomic_write
from pyrovae.runs.folder import CHECKPOINT, read_metrics

CHECKPOINT_FORMAT = "pyrovae-checkpoint/2"  # always with its SHA-256
UNCHECKED_FORMATS = ("pyrovae-checkpoint/1",)  # formats from before checksums (some have one)


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes (on the CPU) and
    every other value's repr, walked in a fixed order; independent of the file's encoding."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for key in sorted(x, key=repr):
                h.update(repr(key).encode())
                walk(x[key])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for item in x:
                walk(item)
            h.update(b"]")
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``checkpoint.pt``: ``state``, its format and a SHA-256 of both (:func:`content_digest`)."""
    content = {"format": CHECKPOINT_FORMAT, **state}
    content["sha256"] = content_digest(content)
    atomic_write(path / CHECKPOINT, lambda f: torch.save(content, f))


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """The checkpoint of run folder ``path``, its checksum verified; a missing, empty, damaged
    or foreign file is a one-line error (never an unpickling of arbitrary objects)."""
    file = path / CHECKPOINT
    if not file.is_file():
        raise PyroVAEError(f"{path} has no {CHECKPOINT} (the run never finished an epoch)")
    if file.stat().st_size == 0:
        raise PyroVAEError(f"{file} is empty (0 bytes): the checkpoint is damaged")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises assorted types for a damaged file
        raise PyroVAEError(
            f"cannot read {file}: damaged, or not a pyrovae checkpoint ({type(e).__name__})"
        ) from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt != CHECKPOINT_FORMAT and fmt not in UNCHECKED_FORMATS:
        raise PyroVAEError(f"{file} is not a pyrovae checkpoint")
    saved = state.pop("sha256", None)
    if saved is None:
        _unchecked(file, fmt)
    elif content_digest(state) != saved:
        raise PyroVAEError(
            f"{file} is corrupt: its content does not match the SHA-256 saved with it "
            "(damaged on disk?); restore it from a copy or train again"
        )
    return state


def _unchecked(file: Path, fmt: str) -> None:
    """A checkpoint without its SHA-256: refused when its format always has one (the entry was
    removed, so its content cannot be trusted); loaded with a note when it predates checksums."""
    if fmt not in UNCHECKED_FORMATS:
        raise PyroVAEError(
            f"{file} has no SHA-256 entry, which every {fmt} checkpoint carries: it was altered "
            "after it was written and its content cannot be checked; restore it from a copy or "
            "train again"
        )
    warnings.warn(
        f"{file} is a {fmt} checkpoint, a format from before checksums: loaded without checking "
        "its content (the next checkpoint written carries a SHA-256)",
        Note,
        stacklevel=3,
    )


def checkpoint_history(path: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The metrics of every epoch up to the checkpoint's: its own copy, or (a checkpoint from
    before checkpoints held them) ``metrics.jsonl`` up to its epoch."""
    history = state.get("history")
    if history is None:
        done = int(state["epoch"])
        history = [r for r in read_metrics(path) if r["epoch"] <= done]
    return [dict(r) for r in history]
