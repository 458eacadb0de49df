"""Images decoded one by one with PIL (files, or a torchvision dataset's items) as an image
source: every PIL mode read as exact grey or RGB values at its own bit depth, or refused in one
line, and a pixel limit checked before an image is decoded.

PIL's own ``convert`` is not exact for every mode: it clips 16-bit grey (``I;16``) to 255 instead
of scaling it, and a palette image converts to one band whatever its colours. Here each mode has
one entry in :data:`MODES`: 8-bit modes give their uint8 values; 16-bit grey gives intensities
v / 65535 (float32; PNG scales every sample to the full range of its bit depth, 2¹⁶ − 1); alpha
and padding bands are dropped (the colours as stored); a palette image gives its palette's
colours, grey when every colour it uses is grey. Modes without exact grey or RGB values (CMYK,
LAB, HSV, YCbCr, 32-bit integers or floats, premultiplied alpha) are refused.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.data.sources import ImageOptions, ImageSource, convert_channels, resize_crop
from pyrovae.data.validate import validate_images, validate_labels

MAX_PIXELS = 8192 * 8192
"""Images with more pixels are refused before decoding unless ``--allow-large-images``: 2²⁶,
more than a 50-megapixel camera's photographs and than any image a VAE trains on before
``--image-size`` shrinks it, while one such RGB image already takes 192 MiB decoded and 768 MiB
as the float32 that resizing works in, in every DataLoader worker. PIL's own check only warns
from 89 478 485 pixels (and fails from twice that); ours replaces it for the images read here."""

SIXTEEN_BIT = 2**16 - 1


def _as_stored(image: Any) -> np.ndarray:
    return np.asarray(image)


def _bilevel(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8) * np.uint8(255)  # "1": bools ↦ 0 or 255, as PIL


def _colour_bands(image: Any) -> np.ndarray:
    return np.asarray(image)[..., :-1]  # LA, RGBA, RGBX: the alpha or padding band dropped


def _sixteen_bit(image: Any) -> np.ndarray:
    return np.asarray(image).astype(np.float32) / SIXTEEN_BIT  # I;16 (any byte order) ↦ [0, 1]


def _palette(image: Any) -> np.ndarray:
    """The palette's colour of every pixel (PA: the index band; its alpha dropped): one band
    when every colour used is grey (R = G = B), else RGB."""
    indices = np.asarray(image)
    indices = indices[..., 0] if indices.ndim == 3 else indices
    palette = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
    if indices.size and int(indices.max()) >= len(palette):
        raise PyroVAEError(
            f"pixel index {int(indices.max())} beyond its palette of {len(palette)} colours"
        )
    colours = palette[indices]  # (H, W, 3)
    return colours[..., 0] if (colours == colours[..., :1]).all() else colours


MODES: dict[str, Callable[[Any], np.ndarray]] = {
    "1": _bilevel,
    "L": _as_stored,
    "LA": _colour_bands,
    "P": _palette,
    "PA": _palette,
    "RGB": _as_stored,
    "RGBA": _colour_bands,
    "RGBX": _colour_bands,
    **{m: _sixteen_bit for m in ("I;16", "I;16L", "I;16B", "I;16N")},
}
"""PIL mode ↦ its pixels (H, W) or (H, W, 3): uint8, or float32 intensities in [0, 1]."""


def exact_pixels(image: Any, name: str) -> torch.Tensor:
    """A decoded PIL image as (C, H, W), C = 1 or 3: uint8 for 8-bit modes, float32 in [0, 1]
    for 16-bit ones."""
    read = MODES.get(image.mode)
    if read is None:
        raise PyroVAEError(
            f"cannot read image {name}: PIL mode {image.mode} has no exact grey or RGB values "
            f"(read: {', '.join(MODES)}); save it as 8- or 16-bit grey or 8-bit RGB"
        )
    try:
        array = read(image)
    except PyroVAEError as e:
        raise PyroVAEError(f"cannot read image {name}: {e}") from None
    array = array.reshape(*array.shape[:2], -1)
    return torch.from_numpy(np.require(array.transpose(2, 0, 1), requirements=["C", "W"]))


def check_pixels(image: Any, name: str, allow_large: bool) -> None:
    """Refuse an image of more than :data:`MAX_PIXELS` pixels (read from its header, before it
    is decoded) unless ``allow_large``."""
    width, height = image.size
    if width * height > MAX_PIXELS and not allow_large:
        raise PyroVAEError(
            f"{name} is {width}×{height} = {width * height} pixels, more than the limit of "
            f"{MAX_PIXELS} (8192×8192); pass --allow-large-images to decode it anyway"
        )


@contextmanager
def pil_check_lifted() -> Iterator[None]:
    """PIL's decompression-bomb check (a warning, then an error) left to :func:`check_pixels`:
    it reads ``Image.MAX_IMAGE_PIXELS`` while a file is opened and loaded, so it is lifted for
    that moment and restored after."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


class ImageItems(ABC):
    """Images one at a time, as PIL images: files on disk, or a torchvision dataset's items."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def name(self, i: int) -> str:
        """Where item i comes from, for messages."""

    @abstractmethod
    def decode(self, i: int, allow_large: bool):
        """Item i as a decoded PIL image; one of more than :data:`MAX_PIXELS` pixels is refused
        unless ``allow_large``."""


class FileItems(ImageItems):
    """Image files (PNG, JPEG, …) by path."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def name(self, i: int) -> str:
        return str(self.paths[i])

    def decode(self, i: int, allow_large: bool):
        from PIL import Image

        with pil_check_lifted():
            image = Image.open(self.paths[i])  # the header only
            check_pixels(image, self.name(i), allow_large)
            image.load()  # decodes now: a truncated or corrupt file fails here
        return image


class DatasetItems(ImageItems):
    """The images of a torchvision dataset whose items are (PIL image, target)."""

    def __init__(self, dataset: Any, where: str) -> None:
        self.dataset, self.where = dataset, where

    def __len__(self) -> int:
        return len(self.dataset)

    def name(self, i: int) -> str:
        return f"{self.where} (item {i})"

    def decode(self, i: int, allow_large: bool):
        image = self.dataset[i][0]  # decoded by torchvision, under PIL's own check
        check_pixels(image, self.name(i), allow_large)
        return image


class PILSource(ImageSource):
    """Images decoded one by one with PIL (each mode as :data:`MODES` reads it), converted to
    ``channels`` and ``size``.

    Without ``channels`` the first image decides: grey (one band after dropping alpha, or a
    palette of greys) or RGB; a later colour image among grey ones is refused rather than turned
    grey (grey ones among colour ones are repeated into R, G and B, which loses nothing). The
    first image also decides the bit depth: a 16-bit source gives float32 intensities (8-bit
    images in it become v / 255), an 8-bit one uint8, and a 16-bit image in it is refused.
    Without ``size`` every image must have the first image's size.
    """

    def __init__(
        self, items: ImageItems, where: str, labels: torch.Tensor | None, options: ImageOptions
    ) -> None:
        if len(items) == 0:
            raise PyroVAEError(f"{where} holds no images")
        if labels is not None:
            validate_labels(labels, len(items), where)
        self.items, self.where, self.options = items, where, options
        self.labels = None if labels is None else labels.long()
        self.levels: int | None = None  # the pixel mode's grid, once check() is told it
        first = self._pixels(0)
        self.channels = options.channels or first.shape[0]
        self.dtype = first.dtype
        self.shape = tuple(self._convert(first, 0).shape)

    def __len__(self) -> int:
        return len(self.items)

    def _pixels(self, i: int) -> torch.Tensor:
        """Item i's exact values (C, H, W)."""
        name = self.items.name(i)
        try:
            return exact_pixels(self.items.decode(i, self.options.allow_large), name)
        except PyroVAEError:
            raise
        except Exception as e:  # PIL raises assorted types (OSError, SyntaxError, ValueError)
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise PyroVAEError(f"cannot read image {name}: {msg}") from None

    def _convert(self, image: torch.Tensor, i: int) -> torch.Tensor:
        """Item i's pixels at the source's bit depth and channels, and ``size``."""
        name, first = self.items.name(i), self.items.name(0)
        if image.dtype != self.dtype:
            if image.is_floating_point():
                raise PyroVAEError(
                    f"{name} is a 16-bit image but the first image, {first}, is 8-bit; store "
                    "the images at one bit depth"
                )
            image = image.float() / 255  # an 8-bit image among 16-bit ones: exact
        if self.options.channels is None and image.shape[0] > self.channels:
            raise PyroVAEError(
                f"{name} is in colour but the first image, {first}, is grey; pass --channels 3 "
                "to read every image as RGB, or --channels 1 to make them grey"
            )
        image = convert_channels(image.unsqueeze(0), self.channels, name)
        return resize_crop(image, self.options.size)[0]  # (C, H, W)

    def _decode(self, i: int) -> torch.Tensor:
        image, name = self._convert(self._pixels(i), i), self.items.name(i)
        if tuple(image.shape) != self.shape:
            raise PyroVAEError(
                f"{name} is {image.shape[1]}×{image.shape[2]} but the first image "
                f"is {self.shape[1]}×{self.shape[2]}; pass --image-size H [W] to resize them"
            )
        if self.levels is not None and image.is_floating_point():
            validate_images(image, name, self.levels)
        return image

    def read(self, rows: Sequence[int]) -> torch.Tensor:
        return torch.stack([self._decode(int(i)) for i in rows])

    def check(self, levels: int | None) -> None:
        """Nothing to check before decoding: 8-bit images are always on the 8-bit grid; 16-bit
        ones are checked against ``levels`` as each is decoded (a file that cannot be decoded
        fails when it is read)."""
        self.levels = levels
