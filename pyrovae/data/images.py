"""Image datasets on the training device, with the pixel modes of the VAE literature, and
``load_data``: any input kind, held on the device when it fits, streamed when it does not."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.core.runtime import free_memory
from pyrovae.data.base import (
    PIXEL_MODES,
    STATIC_TRAIN_SEED,
    TEST_BINARIZATION_SEED,
    DataOrigin,
    PixelMode,
    Shape,
    TrainingData,
    binarize,
    check_data,
    epoch_seed,
    square_shape,
)
from pyrovae.data.batches import Batch, epoch_generator, shuffled_batches
from pyrovae.data.inputs import content_hash, open_dataset
from pyrovae.data.sources import ImageOptions, ImageSource, Rows, array_shape, to_intensities
from pyrovae.data.splits import TEST_SPLITS
from pyrovae.data.stream import StreamedImageData
from pyrovae.data.validate import validate_images

__all__ = [  # pixel modes and seeds live in base.py; importable from here as before
    "PIXEL_MODES",
    "STATIC_TRAIN_SEED",
    "TEST_BINARIZATION_SEED",
    "ImageData",
    "PixelMode",
    "binarize",
    "epoch_seed",
    "load_data",
    "make_image_data",
]

RESIDENT_FRACTION = 0.5  # on the device when it needs at most this share of the free memory


@dataclass
class ImageData(TrainingData):
    """Flattened images (N, D) on one device; ``train_x`` holds intensities when resampled.

    ``shape`` (C, H, W), D = C·H·W (default: (1, s, s) for D = s², else (1, 1, D)). Every
    tensor is checked on construction: finite values in [0, 1] (on the pixel mode's grid: {0, 1}
    when binarized, k/255 for ``8bit``), one label per image, labels integers ≥ 0.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    pixels: str
    shape: Shape = None  # type: ignore[assignment]
    labelled: bool = True
    origin: DataOrigin | None = field(default=None, compare=False)
    streamed = False

    def __post_init__(self) -> None:
        lookup(PIXEL_MODES, self.pixels, "pixel mode")
        if self.shape is None:
            self.shape = square_shape(self.train_x.shape[-1])
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        check_data(self, self.train_x)

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    def train_epoch(self, seed: int, epoch: int) -> torch.Tensor:
        """The training images for ``epoch``: a fresh binarization in dynamic mode."""
        if self.mode.resample:
            return binarize(self.train_x, epoch_seed(seed, epoch))
        return self.train_x

    def train_batches(
        self, seed: int, epoch: int, batch_size: int, labels: bool = False
    ) -> Iterator[Batch]:
        x_epoch = self.train_epoch(seed, epoch)  # now, not at the first batch: outside the clock
        data = (x_epoch, self.train_y) if labels else x_epoch
        shuffle = epoch_generator(x_epoch.device, epoch_seed(seed, epoch) + 1)
        return shuffled_batches(data, batch_size, shuffle)

    def train_head(self, n: int, seed: int) -> torch.Tensor:
        return self.train_epoch(seed, 0)[:n]

    def to(self, device: torch.device | str) -> ImageData:
        tensors = (self.train_x, self.train_y, self.test_x, self.test_y)
        if all(t.device == torch.device(device) for t in tensors):
            return self
        return replace(
            self,
            **dict(
                zip(
                    ("train_x", "train_y", "test_x", "test_y"),
                    (t.to(device) for t in tensors),
                    strict=True,
                )
            ),
        )


def _pixels(raw: torch.Tensor, shape: Shape, mode: PixelMode, seed: int | None) -> torch.Tensor:
    """Raw images ↦ flattened intensities (N, D), binarized with ``seed`` when it is given."""
    x = to_intensities(raw.reshape(raw.shape[0], *shape))
    return x if seed is None else binarize(x, seed)


def make_image_data(
    images: dict[str, torch.Tensor],
    pixels: str,
    device: torch.device | str = "cpu",
    train_subset: int | None = None,
    *,
    labelled: bool = True,
    origin: DataOrigin | None = None,
) -> ImageData:
    """Scale images to [0, 1], flatten, subset, move to ``device`` and apply ``pixels``.

    ``images`` holds ``train_images``, ``train_labels``, ``test_images``, ``test_labels``;
    images are (N, H, W), (N, C, H, W) or (N, D), uint8 (0–255) or intensities in [0, 1].
    Bad values (NaN, ±inf, out of range) are a one-line error naming the tensor.
    """
    mode = lookup(PIXEL_MODES, pixels, "pixel mode")
    train_x, train_y = images["train_images"], images["train_labels"]
    test_x = images["test_images"]
    rows = subset_rows(train_x.shape[0], train_subset)
    if rows is not None:
        train_x, train_y = train_x[:rows], train_y[:rows]
    shape = array_shape(train_x.shape, "train_images")
    if array_shape(test_x.shape, "test_images") != shape:
        raise PyroVAEError(
            f"train_images {tuple(train_x.shape[1:])} and test_images "
            f"{tuple(test_x.shape[1:])} differ in shape"
        )
    for name, raw in (("train_images", train_x), ("test_images", test_x)):
        validate_images(raw, name, None if mode.binary else mode.levels)
    # binarized on the CPU, so the fixed binarizations are the same on every device
    test_x = _pixels(test_x, shape, mode, TEST_BINARIZATION_SEED if mode.binary else None)
    static = mode.binary and not mode.resample
    train_x = _pixels(train_x, shape, mode, STATIC_TRAIN_SEED if static else None)
    data = ImageData(
        train_x, train_y, test_x, images["test_labels"], pixels, shape, labelled, origin
    )
    return data.to(device)


def subset_rows(n: int, train_subset: int | None) -> int | None:
    """``--train-subset``: how many of the n training images to keep (None: all)."""
    if train_subset is not None and not 1 <= train_subset <= n:
        raise PyroVAEError(f"--train-subset must be between 1 and {n}, got {train_subset}")
    return train_subset


def held_out(
    source: ImageSource, fraction: float, method: str = "stratified", seed: int = 0
) -> tuple[ImageSource, ImageSource]:
    """(train, test): k = round(``fraction`` · N) rows of ``source`` held out as the test split
    by the :data:`~pyrovae.data.splits.TEST_SPLITS` entry ``method`` under ``seed`` (row
    indices and labels only: no image is read)."""
    split = lookup(TEST_SPLITS, method, "test split")
    n = len(source)
    k = round(fraction * n)
    if not 0 < fraction < 1 or not 1 <= k < n:
        raise PyroVAEError(
            f"--test-fraction must leave at least one image on each side of {n}, got {fraction}"
        )
    train, test = split(n, k, source.labels, seed)
    return Rows(source, train), Rows(source, test)


def _labels(source: ImageSource) -> torch.Tensor:
    if source.labels is not None:
        return source.labels
    return torch.zeros(len(source), dtype=torch.long)


def load_data(
    dataset: str,
    pixels: str = "dynamic",
    device: torch.device | str = "cpu",
    data_dir: str | None = None,
    train_subset: int | None = None,
    download: bool = True,
    *,
    channels: int | None = None,
    image_size: Sequence[int] | None = None,
    allow_large_images: bool = False,
    test_fraction: float | None = None,
    test_split: str = "stratified",
    split_seed: int = 0,
    stream: bool | None = None,
    workers: int = 0,
) -> TrainingData:
    """Load ``dataset`` for training on ``device`` in pixel mode ``pixels``.

    ``dataset``: a registered name (``fashion-mnist``, ``cifar10``, …), an image folder or a
    ``.npy``/``.npz``/``.pt`` file (:mod:`pyrovae.data.inputs`); ``data_dir`` is the only folder
    a registered dataset is looked for in when given. ``channels`` (1 or 3) and ``image_size``
    (H or H W: scale and centre-crop) convert the images; image files of more than
    :data:`~pyrovae.data.image_files.MAX_PIXELS` pixels are refused unless
    ``allow_large_images``. The test split is the dataset's own, or with ``test_fraction`` a
    fraction of the training images, held out by the method ``test_split`` under
    ``split_seed`` (:data:`~pyrovae.data.splits.TEST_SPLITS`). ``stream``: None picks
    device-resident :class:`ImageData` when train and test need at most half the device's free
    memory and :class:`StreamedImageData` (a DataLoader with ``workers`` processes) otherwise;
    True or False forces one.
    """
    mode = lookup(PIXEL_MODES, pixels, "pixel mode")  # fail on a bad mode before reading any file
    options = ImageOptions.of(channels, image_size, allow_large_images)
    splits = open_dataset(dataset, data_dir, download, options)
    train, test = splits.train, splits.test
    if test_fraction is not None:
        train, test = held_out(train, test_fraction, test_split, split_seed)
    elif test is None:
        raise PyroVAEError(
            f"{splits.path} has no test split of its own; pass --test-fraction F to hold out "
            "a fraction F of its images"
        )
    rows = subset_rows(len(train), train_subset)
    if rows is not None:
        train = Rows(train, torch.arange(rows))
    if train.shape != test.shape:
        raise PyroVAEError(
            f"{splits.path}: train images are {train.shape} and test images {test.shape} "
            "(C, H, W); pass --channels and --image-size to make them agree"
        )
    levels = None if mode.binary else mode.levels
    train.check(levels)
    test.check(levels)
    origin = DataOrigin(splits.kind, splits.path, content_hash(splits.files))
    labelled = train.labels is not None
    device = torch.device(device)
    if stream is None:
        needed = 4 * math.prod(train.shape) * (len(train) + len(test))  # float32 (N, D)
        free = free_memory(device)
        stream = free is not None and needed > RESIDENT_FRACTION * free
    if stream:
        test_x = _pixels(
            test.read_all(), test.shape, mode, TEST_BINARIZATION_SEED if mode.binary else None
        )
        return StreamedImageData(
            train,
            _labels(train),
            test_x,
            _labels(test),
            pixels,
            device,
            workers,
            labelled,
            origin,
        )
    images = {
        "train_images": train.read_all(),
        "train_labels": _labels(train),
        "test_images": test.read_all(),
        "test_labels": _labels(test),
    }
    return make_image_data(images, pixels, device, labelled=labelled, origin=origin)
