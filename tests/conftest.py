"""Shared fixtures: tiny IDX datasets written by the tests, isolated caches, devices."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
    ],
)
DEVICES = ["cpu", CUDA]


# The Fisher objective scores x: it needs a smooth likelihood on grey pixels, where the suite's
# registry-wide tests train the default Bernoulli model (its own tests: test_fisher.py).
SMOOTH_ONLY = frozenset({"fisher"})
FISHER_MODEL = {"likelihood": "gaussian", "pixels": "grey"}


def any_likelihood(names) -> list[str]:
    """The estimator ``names`` that train any model (all but :data:`SMOOTH_ONLY`)."""
    return [n for n in names if n not in SMOOTH_ONLY]


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 ndim, then big-endian sizes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28×28 images drawn around 4 class prototypes (so there is structure to learn)."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(0).uniform(0, 1, size=(4, 28, 28)) ** 3
    labels = rng.integers(0, 4, size=n)
    noise = rng.uniform(0, 0.15, size=(n, 28, 28))
    images = np.clip(prototypes[labels] + noise, 0, 1) * 255
    return images.round().astype(np.uint8), labels.astype(np.uint8)


def write_dataset(folder: Path, n_train: int = 300, n_test: int = 100, compress: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = fake_images(n, seed)
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress)
        arrays[split] = (images, labels)
    return arrays


@pytest.fixture(scope="session", autouse=True)
def _compile_settings(tmp_path_factory):
    """For the whole session (module fixtures and subprocesses included): one Inductor cache
    for the suite's tests (not the user's), and the compiled path recording and replaying its
    graphs through ``torch.compile``'s ``eager`` backend unless $PYROVAE_COMPILE_BACKEND says
    otherwise, since the suite's hundreds of tiny models would each wait seconds for Inductor's
    kernels. The tests of Inductor's kernels set it themselves."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("inductor")))
        mp.setenv("PYROVAE_COMPILE_BACKEND", os.environ.get("PYROVAE_COMPILE_BACKEND") or "eager")
        yield


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's cache, or picks up their $PYROVAE_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("PYROVAE_DATA", raising=False)


@pytest.fixture
def idx_dir(tmp_path) -> Path:
    """A folder with a tiny MNIST-format dataset (gzipped IDX files, flat layout)."""
    folder = tmp_path / "idx"
    write_dataset(folder)
    return folder


def random_images(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """``n`` uint8 images (N, C, H, W) with structure: a class-dependent gradient plus noise."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    ramp = np.linspace(0, 1, h * w).reshape(1, h, w)
    base = np.concatenate([ramp ** (k + 1) for k in range(c)])  # (C, H, W)
    images = 0.7 * base[None] + 0.3 * rng.uniform(size=(n, c, h, w))
    return (images * 255).round().astype(np.uint8)


def write_pngs(folder: Path, images: np.ndarray, fmt: str = "png") -> list[Path]:
    """Images (N, C, H, W) uint8 as files 000.png, 001.png, … (grey for C = 1, RGB for C = 3)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        path = folder / f"{i:03d}.{fmt}"
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths
