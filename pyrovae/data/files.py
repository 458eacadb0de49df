"""Registered datasets, read through torchvision's dataset classes.

Where pyrovae looks: an explicit ``--data-dir`` only (a folder given there that lacks the files is
an error, never a reason to look elsewhere); without it ``$PYROVAE_DATA``, the system folders a
distribution installs (Debian's ``dataset-fashion-mnist`` for Fashion-MNIST), then pyrovae's cache.
Not found and online: torchvision downloads into ``--data-dir``, else ``$PYROVAE_DATA``, else the
cache, with a socket timeout on every connect and read (a stalled network fails in seconds).

MNIST-format datasets (MNIST, Fashion-MNIST, KMNIST, the EMNIST splits) may sit flat in a folder
(plain or ``.gz``) or in torchvision's layout ``<dir>/<Name>/raw/``; the others (CIFAR-10, SVHN,
CelebA, Omniglot) in torchvision's layout under the folder.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.data.image_files import DatasetItems, PILSource
from pyrovae.data.sources import ArraySource, ImageOptions, ImageSource
from pyrovae.data.staged import stage

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
IDX_SIDE = 28
DOWNLOAD_TIMEOUT = 30.0  # seconds a connect or a read may wait before a download fails


@dataclass(frozen=True)
class Fingerprint:
    """What is known of a registered dataset's files: each split's label counts (class 0, 1, …)
    and the mean intensity of its training images (in [0, 1], to ``MEAN_TOLERANCE``)."""

    train_counts: tuple[int, ...]
    test_counts: tuple[int, ...]
    train_mean: float


MEAN_TOLERANCE = 5e-4  # the means are known to 4 decimals


@dataclass(frozen=True)
class Found:
    """A registered dataset's two splits, where they were found, and the files read."""

    train: ImageSource
    test: ImageSource
    where: Path
    files: tuple[tuple[str, Path], ...]  # (name, path): what the content hash covers


def _train_flag(cls: type, root: str, train: bool, download: bool, **kwargs: Any) -> Any:
    return cls(root, train=train, download=download, **kwargs)


def _split_name(cls: type, root: str, train: bool, download: bool, **kwargs: Any) -> Any:
    return cls(root, split="train" if train else "test", download=download, **kwargs)


def _background(cls: type, root: str, train: bool, download: bool) -> Any:
    return cls(root, background=train, download=download)  # Omniglot: background is its train


def _array_of(dataset: Any, attribute: str, axes: tuple[int, ...] | None = None) -> Any:
    array = getattr(dataset, attribute)
    return array if axes is None else array.transpose(*axes)


def _array_source(
    attribute: str, labels: str, axes: tuple[int, ...] | None = None
) -> Callable[[Any, str, ImageOptions], ImageSource]:
    """A dataset whose images are one array attribute (``data``) and labels another."""

    def source(dataset: Any, where: str, options: ImageOptions) -> ImageSource:
        targets = torch.as_tensor(np.asarray(getattr(dataset, labels)))
        return ArraySource(partial(_array_of, dataset, attribute, axes), where, targets, options)

    return source


def _item_source(dataset: Any, where: str, options: ImageOptions) -> ImageSource:
    """A dataset of image files, decoded item by item (CelebA: no labels; Omniglot: the
    character, from its file list, so labels come without decoding every image)."""
    pairs = getattr(dataset, "_flat_character_images", None)
    labels = None if pairs is None else torch.tensor([c for _, c in pairs])
    return PILSource(DatasetItems(dataset, where), where, labels, options)


@dataclass(frozen=True)
class DatasetSpec:
    """How one registered dataset is made, found and read.

    ``make(root, train, download)`` builds the torchvision dataset of a split; ``folder`` is
    the folder (or file) it keeps under ``root``; ``source`` turns the dataset into an image
    source; the content hash covers every file under ``folder``, or the files ``hashed``.
    MNIST-format datasets also name their four ``idx_files`` (train images, labels, test
    images, labels), which may sit flat in a folder.
    """

    make: Callable[[str, bool, bool], Any]
    folder: str
    source: Callable[[Any, str, ImageOptions], ImageSource]
    hashed: tuple[str, ...] | None = None
    idx_files: tuple[str, str, str, str] | None = None
    system_dirs: tuple[str, ...] = ()
    system_package: str | None = None
    description: str = ""  # one line for --help
    fingerprint: Fingerprint | None = None  # checked when the files hold the full splits


def _idx(cls: type, files: tuple[str, str, str, str] = FILES, transpose: bool = False, **kw):
    """An MNIST-format dataset (images ``data`` (N, 28, 28), labels ``targets``)."""
    return {
        "make": partial(_train_flag, cls, **kw),
        "folder": cls.__name__,
        "source": _array_source("data", "targets", (0, 2, 1) if transpose else None),
        "idx_files": files,
    }


def _emnist(split: str) -> DatasetSpec:
    """EMNIST's files hold each image transposed; they are turned upright here."""
    names = tuple(
        f"emnist-{split}-{part}-{kind}-idx{d}-ubyte"
        for part in ("train", "test")
        for kind, d in (("images", 3), ("labels", 1))
    )
    spec = _idx(datasets.EMNIST, names, transpose=True, split=split)
    return DatasetSpec(**spec, description=f"EMNIST's {split} split: 28×28 handwriting")  # type: ignore[arg-type]


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        **_idx(datasets.FashionMNIST),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        system_package="dataset-fashion-mnist",
        description="Zalando's 28×28 clothing images, 60 000 + 10 000 test, 10 classes",
        fingerprint=Fingerprint((6000,) * 10, (1000,) * 10, 0.2860),
    ),
    "mnist": DatasetSpec(
        **_idx(datasets.MNIST),
        description="28×28 handwritten digits, 60 000 + 10 000, 10 classes",
        fingerprint=Fingerprint(
            (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
            (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
            0.1307,
        ),
    ),
    "kmnist": DatasetSpec(
        **_idx(datasets.KMNIST), description="Kuzushiji-MNIST: 28×28 cursive Japanese, 10 classes"
    ),
    **{f"emnist-{s}": _emnist(s) for s in datasets.EMNIST.splits},
    "cifar10": DatasetSpec(
        partial(_train_flag, datasets.CIFAR10),
        datasets.CIFAR10.base_folder,
        _array_source("data", "targets", (0, 3, 1, 2)),  # stored (N, H, W, C)
        description="32×32 colour photographs, 50 000 + 10 000 test, 10 classes",
    ),
    "svhn": DatasetSpec(  # needs scipy to read its .mat files
        partial(_split_name, datasets.SVHN),
        "train_32x32.mat",
        _array_source("data", "labels"),
        hashed=("train_32x32.mat", "test_32x32.mat"),
        description="32×32 colour house-number digits (needs scipy), 10 classes",
    ),
    "celeba": DatasetSpec(
        partial(_split_name, datasets.CelebA, target_type=[]),
        "celeba",
        _item_source,
        description="celebrity faces, 178×218 colour (use --image-size), unlabelled",
    ),
    "omniglot": DatasetSpec(
        partial(_background, datasets.Omniglot),
        "omniglot-py",
        _item_source,
        description="105×105 handwritten characters of 50 alphabets (background set)",
    ),
}
"""Registered datasets: ``--dataset NAME``."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/pyrovae`` (default ``~/.cache/pyrovae``): downloads and unpacked files."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyrovae"


def search_dirs(spec: DatasetSpec, data_dir: str | None) -> list[Path]:
    """The folders looked in, in order: an explicit ``data_dir`` is the only one."""
    if data_dir:
        return [Path(data_dir).expanduser()]
    dirs = [os.environ.get("PYROVAE_DATA"), *spec.system_dirs, cache_dir() / "data"]
    return [Path(d).expanduser() for d in dirs if d]


def download_root(data_dir: str | None) -> Path:
    """Where a download goes: the user's folder (``--data-dir``, ``$PYROVAE_DATA``), else the
    cache; never a system folder."""
    return Path(data_dir or os.environ.get("PYROVAE_DATA") or cache_dir() / "data").expanduser()


def _find(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / (name + ".gz")):
        if path.is_file():
            return path
    return None


def _idx_files_in(directory: Path, spec: DatasetSpec) -> dict[str, Path] | None:
    assert spec.idx_files is not None
    for folder in (directory / spec.folder / "raw", directory):
        found = {name: _find(folder, name) for name in spec.idx_files}
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _split(spec: DatasetSpec, root: Path, train: bool, where: str) -> Any:
    try:
        return spec.make(str(root), train, False)
    except ImportError as e:
        raise PyroVAEError(
            f"reading {where} needs the {e.name} package: pip install {e.name}"
        ) from None
    except Exception as e:  # torchvision raises assorted types on a corrupt file
        raise PyroVAEError(f"corrupt or unreadable files in {where}: {_first_line(e)}") from None


def _read(root: Path, spec: DatasetSpec, where: str) -> dict[str, torch.Tensor]:
    """An MNIST-format dataset's raw uint8 images (N, 28, 28) and labels (N,) per split."""
    out = {}
    for split, train in (("train", True), ("test", False)):
        ds = _split(spec, root, train, where)
        images, labels = ds.data, ds.targets
        if (
            images.dim() != 3
            or images.shape[1:] != (IDX_SIDE, IDX_SIDE)
            or len(labels) != len(images)
        ):
            raise PyroVAEError(
                f"IDX files in {where} hold {tuple(images.shape)} images and {len(labels)} "
                f"labels; expected (N, {IDX_SIDE}, {IDX_SIDE}) images with N labels"
            )
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels.long()
    return out


def check_fingerprint(spec: DatasetSpec, raw: dict[str, torch.Tensor], where: str) -> None:
    """Refuse files that hold another dataset under this one's name (the IDX names of MNIST and
    Fashion-MNIST are the same): when they hold the full splits, their label counts and mean
    intensity must be the registered dataset's. A smaller or larger set under the name (one's
    own cut, say) is read as it is."""
    known = spec.fingerprint
    if known is None:
        return
    train, test = raw["train_labels"], raw["test_labels"]
    if (len(train), len(test)) != (sum(known.train_counts), sum(known.test_counts)):
        return
    counts = tuple(torch.bincount(train).tolist()), tuple(torch.bincount(test).tolist())
    mean = _mean(raw["train_images"]) / 255
    if counts != (known.train_counts, known.test_counts):
        what = f"label counts {list(counts[0])}"
    elif abs(mean - known.train_mean) > MEAN_TOLERANCE:
        what = f"mean intensity {mean:.4f}, not {known.train_mean:.4f}"
    else:
        return
    raise PyroVAEError(
        f"the {spec.folder} files in {where} are not {spec.folder}'s ({what}): another dataset "
        "under the same file names? point --data-dir at the right files"
    )


def _mean(images: torch.Tensor, block: int = 1 << 18) -> float:
    """The mean of every value, summed in float64 block by block: a float64 copy of a whole
    training split (376 MB for MNIST's) cost more than reading its files."""
    flat = images.reshape(-1)
    total = sum(flat[s : s + block].double().sum().item() for s in range(0, flat.numel(), block))
    return total / flat.numel()


def _files_under(folder: Path) -> tuple[tuple[str, Path], ...]:
    """Every file below ``folder``, by path relative to it (sorted): what a hash covers."""
    return tuple((str(p.relative_to(folder)), p) for p in sorted(folder.rglob("*")) if p.is_file())


def _open(spec: DatasetSpec, directory: Path, options: ImageOptions) -> Found | None:
    """The dataset in ``directory`` (None when its files are not there)."""
    where = str(directory)
    if spec.idx_files is not None:
        found = _idx_files_in(directory, spec)
        if found is None:
            return None
        root = stage(found, spec.folder, cache_dir() / "staged")
        raw = _read(root, spec, where)
        check_fingerprint(spec, raw, where)
        train, test = (
            ArraySource(partial(dict.get, raw, f"{s}_images"), where, raw[f"{s}_labels"], options)
            for s in ("train", "test")
        )
        staged = root / spec.folder / "raw"
        return Found(train, test, directory, tuple((n, staged / n) for n in spec.idx_files))
    if not (directory / spec.folder).exists():
        return None
    train, test = (
        spec.source(_split(spec, directory, t, where), where, options) for t in (True, False)
    )
    if spec.hashed is not None:
        files = tuple((n, directory / n) for n in spec.hashed)
    else:
        files = _files_under(directory / spec.folder)
    return Found(train, test, directory, files)


@contextmanager
def network_timeout(seconds: float) -> Iterator[None]:
    """Every socket opened inside waits at most ``seconds`` to connect and for each read."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download(spec: DatasetSpec, root: Path, timeout: float) -> None:
    """torchvision's download (with its progress bar) of both splits into ``root``; when it
    fails, the folders it made are removed again, with what it left in them (partial files):
    nothing of the user's can be there, as those folders did not exist before."""
    made = next((d for d in (root, root / spec.folder) if not d.exists()), None)
    try:
        with network_timeout(timeout):
            for train in (True, False):
                spec.make(str(root), train, True)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def read_dataset(
    name: str,
    data_dir: str | None = None,
    download: bool = True,
    options: ImageOptions | None = None,
    timeout: float | None = None,
) -> Found:
    """The registered dataset ``name``: its train and test splits as image sources; a download
    waits at most ``timeout`` seconds (default ``DOWNLOAD_TIMEOUT``) per connect or read."""
    spec = lookup(DATASETS, name, "dataset")
    options = options or ImageOptions()
    searched = search_dirs(spec, data_dir)
    for directory in searched:
        found = _open(spec, directory, options)
        if found is not None:
            return found
    where = ", ".join(str(d) for d in searched)
    failed = ""
    if download:
        root = download_root(data_dir)
        try:
            _download(spec, root, DOWNLOAD_TIMEOUT if timeout is None else timeout)
        except Exception as e:  # offline, stalled, refused, a bad archive: one line below
            reason = "timed out" if isinstance(e, (TimeoutError, socket.timeout)) else ""
            failed = f"; the download into {root} failed: {reason or _first_line(e)}"
        else:
            found = _open(spec, root, options)
            if found is not None:
                return found
            failed = f"; the download into {root} left no readable files"
    if spec.idx_files is not None:
        what = ", ".join(f + "[.gz]" for f in spec.idx_files)
    else:
        what = f"torchvision's {spec.folder}/ folder"
    hint = f", or install Debian's {spec.system_package}" if spec.system_package else ""
    place = "in --data-dir" if data_dir else "in --data-dir or $PYROVAE_DATA"
    raise PyroVAEError(f"{name} not found (looked in {where}{failed}); put {what} {place}{hint}")


def read_idx_dataset(
    name: str, data_dir: str | None = None, download: bool = True
) -> dict[str, torch.Tensor]:
    """Raw uint8 images (N, 28, 28) and labels (N,) of an MNIST-format dataset's two splits,
    keyed ``train_images``, ``train_labels``, ``test_images``, ``test_labels``."""
    spec = lookup(DATASETS, name, "dataset")
    if spec.idx_files is None:
        raise PyroVAEError(f"{name} is not an MNIST-format (IDX) dataset")
    found = read_dataset(name, data_dir, download)
    out = {}
    for split, source in (("train", found.train), ("test", found.test)):
        out[f"{split}_images"] = source.read_all()[:, 0]
        out[f"{split}_labels"] = source.labels
    return out
