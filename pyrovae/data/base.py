"""Pixel modes, the seeds that fix binarizations, and what every dataset offers training.

A dataset keeps its test images on the training device (every evaluator and figure reads them
as one tensor) and hands out training batches: :class:`~pyrovae.data.images.ImageData` from
device-resident tensors, :class:`~pyrovae.data.stream.StreamedImageData` from a DataLoader.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.data.batches import Batch
from pyrovae.data.validate import LEVELS, validate_images, validate_labels

# Fixed seeds so binarized test sets (and static training sets) are the same in every run.
TEST_BINARIZATION_SEED = 20151231
STATIC_TRAIN_SEED = 20151130

Shape = tuple[int, int, int]  # (C, H, W) of one image


@dataclass(frozen=True)
class PixelMode:
    """``binary``: pixels are x ~ Bernoulli(intensity); ``resample``: redrawn every epoch;
    ``levels`` L: the pixels are the intensities themselves, on the grid k / L (8-bit: 255)."""

    binary: bool
    resample: bool
    levels: int | None = None
    description: str = ""  # one line for --help

    @property
    def discrete(self) -> bool:
        """Whether log p(x) is a log-probability (binary or 8-bit pixels), not a log-density."""
        return self.binary or self.levels is not None

    def train_levels(self) -> int | None:
        """The grid training pixels lie on as stored (binarized once: {0, 1})."""
        return None if self.resample else self.test_levels()

    def test_levels(self) -> int | None:
        """The grid test pixels lie on: {0, 1} when binarized, else ``levels``."""
        return 1 if self.binary else self.levels


PIXEL_MODES: dict[str, PixelMode] = {
    "dynamic": PixelMode(True, True, description="x ~ Bernoulli(intensity), redrawn every epoch"),
    "static": PixelMode(True, False, description="x ~ Bernoulli(intensity), drawn once (seeded)"),
    "grey": PixelMode(False, False, description="intensities in [0, 1] as they are"),
    "8bit": PixelMode(False, False, LEVELS, description="the 256 levels k/255 of 8-bit images"),
}
"""Pixel modes by name (``--pixels``): how intensities become training and test images."""


def binarize(intensity: torch.Tensor, seed: int) -> torch.Tensor:
    """x ~ Bernoulli(intensity), drawn from a generator of its own (global RNGs untouched)."""
    gen = torch.Generator(device=intensity.device).manual_seed(seed)
    return torch.bernoulli(intensity, generator=gen)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for each (run seed, epoch) pair."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


def square_shape(num_pixels: int) -> Shape:
    """The shape assumed for flattened data without one: (1, s, s) when D = s², else (1, 1, D)."""
    side = math.isqrt(num_pixels)
    return (1, side, side) if side * side == num_pixels else (1, 1, num_pixels)


@dataclass(frozen=True)
class DataOrigin:
    """Where a dataset came from: its input ``kind``, the ``path`` read, and ``sha256``, a
    content hash of the files read (see :func:`~pyrovae.data.inputs.content_hash`)."""

    kind: str
    path: str
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "sha256": self.sha256}


class TrainingData(ABC):
    """What training, evaluation and figures read from a dataset.

    ``test_x`` (N_test, D) and the labels ``train_y``, ``test_y`` sit on the training device;
    ``shape`` is one image's (C, H, W), D = C·H·W, flattened channel-major (``x.flatten(1)`` of
    (N, C, H, W)); ``labelled`` is False for data without labels (then every label is 0);
    ``origin`` says where the data came from (None for tensors handed over directly).
    """

    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    pixels: str
    shape: Shape
    labelled: bool
    origin: DataOrigin | None
    streamed: bool  # whether training batches come through a DataLoader

    @property
    def mode(self) -> PixelMode:
        return PIXEL_MODES[self.pixels]

    @property
    def num_pixels(self) -> int:
        """D, the values per image (C·H·W)."""
        return self.test_x.shape[1]

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1

    @property
    def device(self) -> torch.device:
        return self.test_x.device

    def describe(self) -> dict[str, Any]:
        """What a run records about its data: origin (kind, path, sha256), sizes, shape."""
        origin = self.origin.as_dict() if self.origin is not None else {}
        return {
            **origin,
            "shape": list(self.shape),
            "num_train": self.num_train,
            "num_test": self.test_x.shape[0],
            "labelled": self.labelled,
            "streamed": self.streamed,
        }

    @property
    @abstractmethod
    def num_train(self) -> int:
        """N, the training images."""

    @abstractmethod
    def train_batches(
        self, seed: int, epoch: int, batch_size: int, labels: bool = False
    ) -> Iterator[Batch]:
        """Epoch ``epoch``'s training batches on the device: every image once, in the order of
        a permutation drawn from a generator seeded by (seed, epoch); x (B, D), or (x, y) with
        ``labels``. Binarized afresh each epoch in dynamic mode."""

    @abstractmethod
    def train_head(self, n: int, seed: int) -> torch.Tensor:
        """The first ``n`` training images as epoch 0 would show them, (n, D), on the device."""


def check_data(data: TrainingData, train_x: torch.Tensor | None) -> None:
    """Shapes, labels and pixel values of a dataset's tensors (``train_x`` when resident)."""
    mode, d = data.mode, math.prod(data.shape)
    for name, x in (("train_x", train_x), ("test_x", data.test_x)):
        if x is not None and (x.dim() != 2 or x.shape[1] != d):
            raise PyroVAEError(
                f"{name} must be flattened images (N, {d}) for shape {data.shape}, got "
                f"{tuple(x.shape)}"
            )
    if train_x is not None:
        validate_images(train_x, "train_x", mode.train_levels())
        validate_labels(data.train_y, train_x.shape[0], "train_y")
    validate_images(data.test_x, "test_x", mode.test_levels())
    validate_labels(data.test_y, data.test_x.shape[0], "test_y")
