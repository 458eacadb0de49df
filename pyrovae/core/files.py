"""Files that survive a kill and fail in one line: atomic writes, writability probes, and what
an ``OSError`` means to a user (a full disk, a read-only folder, a file where a folder should be).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from pyrovae.core.errors import PyroVAEError

TEMP_SUFFIX = ".tmp"  # atomic_write's temporary files: .<name>.<random>.tmp

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied (a read-only folder?)",
    errno.EPERM: "permission denied (a read-only folder?)",
    errno.ENOTDIR: "a file stands where a folder is needed",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "no such file or folder",
}


def os_error(action: str, path: Path | str, error: OSError) -> PyroVAEError:
    """A one-line :class:`PyroVAEError` for ``error`` met while ``action``-ing ``path``."""
    reason = _REASONS.get(error.errno or 0) or error.strerror or type(error).__name__
    return PyroVAEError(f"cannot {action} {path}: {reason}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(file)`` so readers see the old file or the whole new one.

    A temporary file in the same folder, flushed to disk, then ``os.replace``; on any failure
    the temporary file is removed and the old file is left as it was. An ``OSError`` (a full
    disk, a read-only folder) becomes a one-line :class:`PyroVAEError`.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    except OSError as e:
        raise os_error("write", path, e) from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide run files from other users
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise os_error("write", path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(folder: Path) -> None:
    """Fail now, in one line, if files cannot be created in ``folder`` (or, when it does not exist
    yet, in its nearest existing parent, where it would be made): before any work is done."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise PyroVAEError(f"cannot write {folder}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".pyrovae-probe.", suffix=TEMP_SUFFIX)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise os_error("write", folder, e) from None


def read_at_most(path: Path, limit: int) -> bytes | None:
    """``path``'s bytes, or None when it holds more than ``limit`` (read no further: a link to
    /dev/zero, or a dataset given by mistake, does not fill memory)."""
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    return raw if len(raw) <= limit else None


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete what an interrupted :func:`atomic_write` left in ``folder`` (nothing when it is
    not a folder); returns them."""
    if not folder.is_dir():
        return []
    removed = sorted(folder.glob(f".*{TEMP_SUFFIX}"))
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
