"""Unpacked copies of IDX files in pyrovae's cache (``<cache>/staged/``, in torchvision's
layout), each trusted only while it matches its stamp.

Beside every copy ``<name>`` lies ``<name>.source``: the size and mtime of the file it was
unpacked from and the SHA-256 of the unpacked bytes. A copy is used when its source still has
that size and mtime and the copy itself still has that hash; otherwise (the source changed, the
copy was damaged or cut short, no stamp or an older one) it is unpacked again. Hashing the copy
costs one read of it (0.03 s for MNIST's 55 MB) and keeps a damaged cache from being trained on
and recorded as the source's data. A damaged copy that cannot be rebuilt is an error naming the
copy, not the source.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import IO, Any

from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.core.files import atomic_write, os_error

STAMP_SUFFIX = ".source"


def _chunks(src: Path) -> Iterator[bytes]:
    """``src``'s bytes (gunzipped when it ends in .gz); a read error is one line."""
    try:
        with gzip.open(src) if src.suffix == ".gz" else open(src, "rb") as f_in:
            while chunk := f_in.read(1 << 20):
                yield chunk
    except (OSError, EOFError) as e:  # unreadable, or a truncated or damaged .gz
        raise PyroVAEError(f"cannot read {src}: {first_line(e)}") from None


def _unpack(src: Path, digest: Any, out: IO[bytes]) -> None:
    for chunk in _chunks(src):
        digest.update(chunk)
        out.write(chunk)  # a full disk: atomic_write names the file it was writing


def _sha256(path: Path) -> str | None:
    """The file's SHA-256, or None when it cannot be read (missing, say)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _source_of(src: Path) -> dict[str, int]:
    try:
        st = src.stat()
    except OSError as e:
        raise os_error("read", src, e) from None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp(path: Path) -> dict[str, Any]:
    """What a stamp holds ({} when it is missing or unreadable: the copy is then rebuilt)."""
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return stamp if isinstance(stamp, dict) else {}


def _stage_one(src: Path, dest: Path, root: Path) -> None:
    """``dest``, the unpacked copy of ``src``: kept when it matches its stamp, else rebuilt."""
    stamp_file = dest.with_name(dest.name + STAMP_SUFFIX)
    source, stamp = _source_of(src), _stamp(stamp_file)
    same_source = {k: stamp.get(k) for k in source} == source
    if same_source and stamp.get("sha256") is not None and _sha256(dest) == stamp["sha256"]:
        return
    damaged = same_source and dest.exists()  # the source is as stamped: the copy changed
    digest = hashlib.sha256()
    try:
        atomic_write(dest, partial(_unpack, src, digest))
        text = json.dumps({**source, "sha256": digest.hexdigest()})
        atomic_write(stamp_file, lambda f: f.write(text.encode()))
    except PyroVAEError as e:
        if not damaged:
            raise
        raise PyroVAEError(
            f"{dest}, pyrovae's unpacked copy of {src}, is damaged (its SHA-256 is not the one "
            f"stamped when it was unpacked) and cannot be unpacked again ({e}); delete {root} "
            "once it can be written"
        ) from None


def stage(found: dict[str, Path], folder: str, cache: Path) -> Path:
    """A root in torchvision's layout (``<root>/<folder>/raw/``) holding the uncompressed
    files: the source folder itself when it is one already, else checked copies under ``cache``.

    Safe when several processes stage the same files at once: each unpacks into its own
    temporary file and renames it into place (:func:`atomic_write`), so a reader sees a
    whole file or none.
    """
    source_dir = str(next(iter(found.values())).parent.resolve())
    if all(p.suffix != ".gz" for p in found.values()) and Path(source_dir).name == "raw":
        return Path(source_dir).parent.parent  # already torchvision's layout
    key = hashlib.sha1(source_dir.encode()).hexdigest()[:12]
    root = cache / key
    raw = root / folder / "raw"
    try:
        raw.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_error("create", raw, e) from None
    for name, src in found.items():
        _stage_one(src, raw / name, root)
    return root
