"""What ``--dataset`` can name: a registered dataset, a folder of images, or an array file.

``INPUT_KINDS`` holds one entry per kind; the first whose ``matches`` accepts the name opens it.
Each gives the training split, the test split when the data has its own, where it was found, and
the files a content hash of the data covers.

- ``registered``: a name in :data:`~pyrovae.data.files.DATASETS` (torchvision's classes).
- ``folder``: PNG/JPEG/… files. Class subfolders become labels (sorted names ↦ 0, 1, …, as
  torchvision's ``ImageFolder``); loose files are unlabelled; ``train/`` and ``test/``
  subfolders (each laid out either way) are the two splits.
- ``npy``: one array of images (N, H, W), (N, C, H, W) or (N, D), memory-mapped.
- ``npz``, ``pt``: arrays under the keys ``images`` [``labels``], or ``train_images``
  [``train_labels``] with optional ``test_images`` [``test_labels``]; a ``.pt`` file may also be
  one tensor of images. ``.pt`` is memory-mapped; ``.npz`` is read into memory.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.data.files import DATASETS, read_dataset
from pyrovae.data.image_files import FileItems, PILSource
from pyrovae.data.sources import ArraySource, ImageOptions, ImageSource, dense, native_order

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass(frozen=True)
class Splits:
    """A dataset as found: ``train`` and ``test`` (None: the data has no test split of its
    own), its input ``kind``, the ``path`` it was read from, and the ``files`` (name, path) its
    content hash covers."""

    train: ImageSource
    test: ImageSource | None
    kind: str
    path: str
    files: tuple[tuple[str, Path], ...]


class InputKind(ABC):
    """One kind of thing ``--dataset`` can name."""

    @abstractmethod
    def matches(self, dataset: str) -> bool:
        """Whether ``dataset`` is of this kind (by name, suffix or folder)."""

    @abstractmethod
    def open(
        self, dataset: str, data_dir: str | None, download: bool, options: ImageOptions
    ) -> Splits:
        """Its splits; a one-line error when it cannot be read."""


class Registered(InputKind):
    """A dataset known by name (``DATASETS``): its files where pyrovae looks, else a download."""

    def matches(self, dataset: str) -> bool:
        return dataset in DATASETS

    def open(self, dataset, data_dir, download, options):
        found = read_dataset(dataset, data_dir, download, options)
        return Splits(found.train, found.test, "registered", str(found.where), found.files)


def _hidden(path: Path, below: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(below).parts)


def _is_image(path: Path) -> bool:
    """A file with an image's suffix. A link with an image's name whose target is gone is an
    error: skipping it would train on fewer images than the folder holds, unsaid."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if path.is_symlink() and not path.exists():
        raise PyroVAEError(
            f"{path} is a link to {os.readlink(path)}, which does not exist; restore it or "
            "remove the link"
        )
    return path.is_file()


def _images_below(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not _hidden(p, folder) and _is_image(p))


def _layout(folder: Path) -> tuple[list[Path], list[str] | None]:
    """Loose images, or class subfolders (their names): one or the other."""
    if not folder.is_dir():
        raise PyroVAEError(f"{folder} is not a folder")
    entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".")]
    loose = [e for e in entries if _is_image(e)]
    classes = [e.name for e in entries if e.is_dir()]
    if loose and classes:
        raise PyroVAEError(
            f"{folder} holds both images and subfolders; put every image in a class subfolder "
            "(or none)"
        )
    if not loose and not classes:
        raise PyroVAEError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return loose, (classes or None)


def _class_images(folder: Path, classes: Sequence[str]) -> tuple[list[Path], torch.Tensor]:
    paths, labels = [], []
    for index, name in enumerate(classes):
        if not (folder / name).is_dir():
            continue  # a class only the other split has
        found = _images_below(folder / name)
        if not found:
            raise PyroVAEError(f"{folder / name} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += found
        labels += [index] * len(found)
    return paths, torch.tensor(labels, dtype=torch.long)


class Folder(InputKind):
    """A folder of images: class subfolders become labels; ``train/`` and ``test/`` subfolders
    are its own split."""

    def matches(self, dataset: str) -> bool:
        return Path(dataset).expanduser().is_dir()

    def open(self, dataset, data_dir, download, options):
        root = Path(dataset).expanduser().resolve()
        split_dirs = [root / "train", root / "test"]
        folders = split_dirs if all(d.is_dir() for d in split_dirs) else [root]
        layouts = [_layout(f) for f in folders]
        labelled = {classes is not None for _, classes in layouts}
        if len(labelled) > 1:
            raise PyroVAEError(
                f"{root}: train/ and test/ must both have class subfolders, or neither"
            )
        classes = sorted({c for _, cs in layouts for c in (cs or [])}) or None
        sources = []
        files: list[tuple[str, Path]] = []
        for folder, (loose, _) in zip(folders, layouts, strict=True):
            if classes is None:
                paths, labels = loose, None
            else:
                paths, labels = _class_images(folder, classes)
            files += [(str(p.relative_to(root)), p) for p in paths]
            sources.append(PILSource(FileItems(paths), str(folder), labels, options))
        test = sources[1] if len(sources) == 2 else None
        return Splits(sources[0], test, "folder", str(root), tuple(files))


def _existing(dataset: str) -> Path:
    path = Path(dataset).expanduser().resolve()
    if not path.is_file():
        raise PyroVAEError(f"{path} not found")
    return path


def _npy(path: Path) -> Any:
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _npz_entry(path: Path, key: str) -> Any:
    with np.load(path, allow_pickle=False) as archive:
        return archive[key]


def _pt(path: Path) -> Any:
    with warnings.catch_warnings():  # a sparse tensor is refused in one line, not warned about
        warnings.filterwarnings("ignore", "Validating sparse tensor invariants")
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _pt_entry(path: Path, key: str | None) -> Any:
    content = _pt(path)
    return content if key is None else content[key]


EXPECTED_KEYS = "images [labels], or train_images [train_labels] [test_images [test_labels]]"


def _from_keys(
    path: Path,
    keys: Sequence[str],
    get: Callable[[str], Any],
    open_images: Callable[[str], Any],
    options: ImageOptions,
) -> tuple[ImageSource, ImageSource | None]:
    """Train (and test) sources from a mapping whose keys are those of :data:`EXPECTED_KEYS`;
    labels are read now (small), images opened lazily through ``open_images(key)``."""
    present = set(keys)
    if "images" in present:
        prefixes = [""]
    elif "train_images" in present:
        prefixes = ["train_", "test_"] if "test_images" in present else ["train_"]
    else:
        listed = ", ".join(sorted(present)) or "nothing"
        raise PyroVAEError(f"{path} holds {listed}; expected {EXPECTED_KEYS}")
    unexpected = present - {p + k for p in prefixes for k in ("images", "labels")}
    if unexpected:
        listed = ", ".join(sorted(unexpected))
        raise PyroVAEError(f"{path}: unexpected keys {listed}; expected {EXPECTED_KEYS}")
    if len(prefixes) == 2 and ("train_labels" in present) != ("test_labels" in present):
        raise PyroVAEError(f"{path}: labels for one split only; give both or neither")
    sources = []
    for prefix in prefixes:
        key = f"{prefix}labels"
        labels = None
        if key in present:
            labels = torch.as_tensor(native_order(dense(get(key), f"{path} [{key}]")))
        where = f"{path} [{prefix}images]"
        sources.append(ArraySource(partial(open_images, f"{prefix}images"), where, labels, options))
    return sources[0], (sources[1] if len(sources) == 2 else None)


class ArrayFile(InputKind):
    """A file of arrays, recognized by its ``suffix``; one whose first bytes are not the
    format's ``magic`` is refused by name, before a reader guesses at it (NumPy reads any other
    file as a pickle and answers with a hint about ``allow_pickle``)."""

    suffix: str
    magic: bytes = b""
    made_by: str = ""  # what writes such a file, for the message

    def matches(self, dataset: str) -> bool:
        return dataset.lower().endswith(self.suffix)

    def open(self, dataset, data_dir, download, options):
        path = _existing(dataset)
        try:
            with open(path, "rb") as f:
                start = f.read(len(self.magic))
            if start != self.magic:
                raise PyroVAEError(
                    f"{path} is not a {self.suffix} file: it does not start with {self.magic!r} "
                    f"as one written by {self.made_by} does"
                )
            train, test = self.sources(path, options)
        except PyroVAEError:
            raise
        except Exception as e:  # numpy, zipfile and torch raise assorted types on bad files
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PyroVAEError(f"cannot read {path}: {msg}") from None
        return Splits(train, test, self.suffix.lstrip("."), str(path), ((path.name, path),))

    @abstractmethod
    def sources(
        self, path: Path, options: ImageOptions
    ) -> tuple[ImageSource, ImageSource | None]: ...


class NpyFile(ArrayFile):
    """One array of images, memory-mapped (no labels, no test split)."""

    suffix = ".npy"
    magic = b"\x93NUMPY"
    made_by = "numpy.save"

    def sources(self, path, options):
        return ArraySource(partial(_npy, path), str(path), None, options), None


class NpzFile(ArrayFile):
    """Named arrays (see :data:`EXPECTED_KEYS`), each read into memory when opened."""

    suffix = ".npz"
    magic = b"PK"  # a zip archive
    made_by = "numpy.savez"

    def sources(self, path, options):
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            return _from_keys(path, keys, archive.__getitem__, partial(_npz_entry, path), options)


class PtFile(ArrayFile):
    """A tensor of images, or a dict of tensors (see :data:`EXPECTED_KEYS`), memory-mapped."""

    suffix = ".pt"

    def sources(self, path, options):
        content = _pt(path)
        if isinstance(content, torch.Tensor):
            return ArraySource(partial(_pt_entry, path, None), str(path), None, options), None
        if not isinstance(content, dict):
            kind = type(content).__name__
            raise PyroVAEError(f"{path} holds a {kind}; expected a tensor or a dict of tensors")
        return _from_keys(
            path, list(content), content.__getitem__, partial(_pt_entry, path), options
        )


INPUT_KINDS: dict[str, InputKind] = {
    "registered": Registered(),
    "folder": Folder(),
    "npy": NpyFile(),
    "npz": NpzFile(),
    "pt": PtFile(),
}
"""What ``--dataset`` can name, tried in this order (a registered name wins over a folder of
the same name: write ``./mnist`` for the folder)."""


def input_kind(dataset: str) -> str:
    """The name of the first kind in :data:`INPUT_KINDS` that ``dataset`` is."""
    for name, kind in INPUT_KINDS.items():
        if kind.matches(dataset):
            return name
    known = ", ".join(sorted(DATASETS))
    raise PyroVAEError(
        f"unknown dataset {dataset!r}: neither a registered name ({known}) nor an existing "
        "image folder or .npy/.npz/.pt file"
    )


def resolve_dataset(dataset: str) -> str:
    """``dataset`` as a run records it: a registered name as it is, a path made absolute."""
    if input_kind(dataset) == "registered":
        return dataset
    return str(Path(dataset).expanduser().resolve())


def open_dataset(
    dataset: str,
    data_dir: str | None = None,
    download: bool = True,
    options: ImageOptions | None = None,
) -> Splits:
    """The splits of ``dataset``. An explicit ``data_dir`` applies to registered names only:
    for a folder or a file, the path itself is the only place looked in."""
    kind = input_kind(dataset)
    if data_dir is not None and kind != "registered":
        raise PyroVAEError(
            f"--data-dir is for registered datasets; {dataset} is a {kind} path already"
        )
    return INPUT_KINDS[kind].open(dataset, data_dir, download, options or ImageOptions())


def content_hash(files: Sequence[tuple[str, Path]]) -> str:
    """SHA-256 over every (name, size, bytes) in name order: the same files with the same
    content give the same hash wherever they sit."""
    digest = hashlib.sha256()
    for name, path in sorted(files):
        try:
            with open(path, "rb") as f:
                digest.update(f"{name}\0{path.stat().st_size}\0".encode())
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(block)
        except OSError as e:
            raise PyroVAEError(f"cannot read {path}: {e.strerror or e}") from None
    return digest.hexdigest()
