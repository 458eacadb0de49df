"""Finding a dataset's IDX files and reading them through torchvision's dataset classes.

Search order: ``--data-dir``, ``$PYROVAE_DATA``, the system folders a distribution installs
(Debian's ``dataset-fashion-mnist`` for Fashion-MNIST), pyrovae's cache, then a torchvision
download when the network allows. In each folder the four files may sit flat (plain or ``.gz``)
or in torchvision's layout ``<dir>/<Name>/raw/``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import datasets

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class DatasetSpec:
    """Where a 28×28 IDX dataset can come from."""

    torchvision_class: type[datasets.MNIST]
    system_dirs: tuple[str, ...] = ()
    system_package: str | None = None
    description: str = ""  # one line for --help

    @property
    def folder(self) -> str:
        return self.torchvision_class.__name__  # torchvision's root/<Name>/raw layout


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        datasets.FashionMNIST,
        ("/usr/share/datasets/fashion-mnist",),
        "dataset-fashion-mnist",
        "Zalando's 28×28 clothing images, 60 000 + 10 000 test, 10 classes",
    ),
    "mnist": DatasetSpec(
        datasets.MNIST, description="28×28 handwritten digits, 60 000 + 10 000 test, 10 classes"
    ),
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pyrovae`` (default ``~/.cache/pyrovae``): downloads and unpacked files."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyrovae"


def search_dirs(spec: DatasetSpec, data_dir: str | None) -> list[Path]:
    """The folders looked in, in order."""
    dirs = [data_dir, os.environ.get("PYROVAE_DATA"), *spec.system_dirs, cache_dir() / "data"]
    return [Path(d).expanduser() for d in dirs if d]


def _find(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / (name + ".gz")):
        if path.is_file():
            return path
    return None


def _files_in(directory: Path, spec: DatasetSpec) -> dict[str, Path] | None:
    for folder in (directory / spec.folder / "raw", directory):
        found = {name: _find(folder, name) for name in FILES}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _stage(found: dict[str, Path], spec: DatasetSpec) -> Path:
    """A root in torchvision's layout holding the uncompressed files (links or unpacked copies)."""
    source_dir = str(next(iter(found.values())).parent.resolve())
    if all(p.suffix != ".gz" for p in found.values()) and Path(source_dir).name == "raw":
        return Path(source_dir).parent.parent  # already torchvision's layout
    key = hashlib.sha1(source_dir.encode()).hexdigest()[:12]
    root = cache_dir() / "staged" / key
    raw = root / spec.folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, src in found.items():
        dest = raw / name
        stamp = f"{src.stat().st_size}:{src.stat().st_mtime_ns}"
        stamp_file = raw / (name + ".source")
        if dest.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
            continue
        tmp = raw / (name + ".tmp")
        try:
            with (
                gzip.open(src) if src.suffix == ".gz" else open(src, "rb") as f_in,
                open(tmp, "wb") as f_out,
            ):
                shutil.copyfileobj(f_in, f_out)
        except (OSError, EOFError) as e:
            tmp.unlink(missing_ok=True)
            raise PyroVAEError(f"cannot read {src}: {e}") from None
        os.replace(tmp, dest)
        stamp_file.write_text(stamp)
    return root


def _read(root: Path, spec: DatasetSpec, where: str) -> dict[str, torch.Tensor]:
    out = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = spec.torchvision_class(str(root), train=train, download=False)
            images, labels = ds.data, ds.targets
        except Exception as e:  # torchvision raises assorted types on a corrupt file
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PyroVAEError(f"corrupt or unreadable IDX files in {where}: {msg}") from None
        if images.dim() != 3 or images.shape[1:] != (28, 28) or len(labels) != len(images):
            raise PyroVAEError(
                f"IDX files in {where} hold {tuple(images.shape)} images and {len(labels)} "
                "labels; expected (N, 28, 28) images with N labels"
            )
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels.long()
    return out


def read_idx_dataset(
    name: str, data_dir: str | None = None, download: bool = True
) -> dict[str, torch.Tensor]:
    """Raw uint8 images (N, 28, 28) and labels (N,) for the train and test splits of ``name``."""
    spec = lookup(DATASETS, name, "dataset")
    searched = search_dirs(spec, data_dir)
    for directory in searched:
        found = _files_in(directory, spec)
        if found is not None:
            return _read(_stage(found, spec), spec, str(directory))
    if download:
        # into the user's folder (--data-dir, $PYROVAE_DATA), else the cache: never a system dir
        root = Path(data_dir or os.environ.get("PYROVAE_DATA") or cache_dir() / "data").expanduser()
        try:
            spec.torchvision_class(str(root), train=True, download=True)
            spec.torchvision_class(str(root), train=False, download=True)
        except Exception:  # offline: fall through to the message below
            pass
        else:
            return _read(root, spec, str(root))
    hint = f" or install Debian's {spec.system_package}" if spec.system_package else ""
    where = ", ".join(str(d) for d in searched)
    raise PyroVAEError(
        f"{name} not found (looked in {where}{'' if not download else '; download failed'}); "
        f"put {', '.join(f + '[.gz]' for f in FILES)} in --data-dir or $PYROVAE_DATA{hint}"
    )
