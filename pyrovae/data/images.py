"""Image datasets resident on the training device, with the pixel modes of the VAE literature."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.core.registry import lookup
from pyrovae.data.files import read_idx_dataset

# Fixed seeds so binarized test sets (and static training sets) are the same in every run.
TEST_BINARIZATION_SEED = 20151231
STATIC_TRAIN_SEED = 20151130


@dataclass(frozen=True)
class PixelMode:
    """``binary``: pixels are x ~ Bernoulli(intensity); ``resample``: redrawn every epoch."""

    binary: bool
    resample: bool
    description: str = ""  # one line for --help


PIXEL_MODES: dict[str, PixelMode] = {
    "dynamic": PixelMode(
        binary=True, resample=True, description="x ~ Bernoulli(intensity), redrawn every epoch"
    ),
    "static": PixelMode(
        binary=True, resample=False, description="x ~ Bernoulli(intensity), drawn once (seeded)"
    ),
    "grey": PixelMode(
        binary=False, resample=False, description="intensities in [0, 1] as they are"
    ),
}


def binarize(intensity: torch.Tensor, seed: int) -> torch.Tensor:
    """x ~ Bernoulli(intensity), drawn from a generator of its own (global RNGs untouched)."""
    gen = torch.Generator(device=intensity.device).manual_seed(seed)
    return torch.bernoulli(intensity, generator=gen)


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed for each (run seed, epoch) pair."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63)


@dataclass
class ImageData:
    """Flattened images (N, D) on one device; ``train_x`` holds intensities when resampled."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    pixels: str

    @property
    def mode(self) -> PixelMode:
        return PIXEL_MODES[self.pixels]

    @property
    def num_pixels(self) -> int:
        return self.train_x.shape[1]

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1

    def train_epoch(self, seed: int, epoch: int) -> torch.Tensor:
        """The training images for ``epoch``: a fresh binarization in dynamic mode."""
        if self.mode.resample:
            return binarize(self.train_x, epoch_seed(seed, epoch))
        return self.train_x

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(
            *(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)),
            pixels=self.pixels,
        )


def make_image_data(
    images: dict[str, torch.Tensor],
    pixels: str,
    device: torch.device | str = "cpu",
    train_subset: int | None = None,
) -> ImageData:
    """Scale uint8 images to [0, 1], flatten, subset, move to ``device`` and apply ``pixels``."""
    mode = lookup(PIXEL_MODES, pixels, "pixel mode")
    train_x, train_y = images["train_images"], images["train_labels"]
    if train_subset is not None:
        if not 1 <= train_subset <= len(train_x):
            raise PyroVAEError(
                f"--train-subset must be between 1 and {len(train_x)}, got {train_subset}"
            )
        train_x, train_y = train_x[:train_subset], train_y[:train_subset]

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=torch.float32).flatten(1) / 255.0

    train_x, test_x = flat(train_x), flat(images["test_images"])
    if mode.binary:  # on the CPU, so the fixed binarizations are the same on every device
        test_x = binarize(test_x, TEST_BINARIZATION_SEED)
        if not mode.resample:
            train_x = binarize(train_x, STATIC_TRAIN_SEED)
    return ImageData(train_x, train_y, test_x, images["test_labels"], pixels).to(device)


def load_data(
    dataset: str,
    pixels: str = "dynamic",
    device: torch.device | str = "cpu",
    data_dir: str | None = None,
    train_subset: int | None = None,
    download: bool = True,
) -> ImageData:
    """Load ``dataset`` (``fashion-mnist``, ``mnist``) onto ``device`` in pixel mode ``pixels``."""
    lookup(PIXEL_MODES, pixels, "pixel mode")  # fail on a bad mode before reading any file
    images = read_idx_dataset(dataset, data_dir, download)
    return make_image_data(images, pixels, device, train_subset)
