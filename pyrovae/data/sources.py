"""Image sources: N images of one shape (C, H, W) and their labels, read by row.

A source reads from an array in memory, a memory-mapped array on disk, image files, or a
torchvision dataset's items (those two decoded by :mod:`pyrovae.data.image_files`); the same
conversions apply to each (``--channels``, ``--image-size``). Reading a source whole gives the
device-resident dataset; reading it batch by batch in DataLoader workers streams it. Sources are
composed, not subclassed: a subset of rows is :class:`Rows` around any source.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pyrovae.core.errors import PyroVAEError
from pyrovae.data.validate import validate_images, validate_labels

Shape = tuple[int, int, int]  # (C, H, W)
CHANNELS = (1, 3)  # grey or RGB: what the networks and figures take
CHUNK = 4096  # rows per chunk when a source is read or checked whole


@dataclass(frozen=True)
class ImageOptions:
    """Conversions applied to every image: ``channels`` 1 or 3 (None: as stored) and ``size``
    (H, W) (None: as stored; else scaled to cover H × W, then centre-cropped); ``allow_large``:
    decode image files beyond :data:`~pyrovae.data.image_files.MAX_PIXELS`."""

    channels: int | None = None
    size: tuple[int, int] | None = None
    allow_large: bool = False

    @classmethod
    def of(
        cls,
        channels: int | None,
        image_size: Sequence[int] | None,
        allow_large_images: bool = False,
    ) -> ImageOptions:
        """From the CLI's ``--channels C``, ``--image-size H [W]`` (one number: square) and
        ``--allow-large-images``."""
        if channels is not None and channels not in CHANNELS:
            raise PyroVAEError(f"--channels must be 1 or 3, got {channels}")
        size = None
        if image_size is not None:
            sides = tuple(int(s) for s in image_size)
            if len(sides) not in (1, 2) or min(sides) < 1:
                raise PyroVAEError(f"--image-size takes H or H W, positive, got {list(sides)}")
            size = (sides[0], sides[-1])
        return cls(channels, size, allow_large_images)


def convert_channels(images: torch.Tensor, channels: int | None, where: str) -> torch.Tensor:
    """(N, C, H, W) to ``channels``: grey ↦ RGB repeats; RGB ↦ grey is the ITU-R 601-2 luma
    L = 0.299 R + 0.587 G + 0.114 B (for uint8 in PIL's integer arithmetic, so a PNG converted
    by PIL and an array converted here agree exactly)."""
    c = images.shape[1]
    if c not in CHANNELS:
        raise PyroVAEError(
            f"{where}: images have {c} channels; 1 or 3 are supported (arrays are read as "
            "(N, C, H, W): for channels-last data use a.transpose(0, 3, 1, 2))"
        )
    if channels is None or channels == c:
        return images
    if c == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    r, g, b = images.unbind(1)
    if images.dtype == torch.uint8:
        r, g, b = r.int(), g.int(), b.int()
        luma = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16
        return luma.to(torch.uint8).unsqueeze(1)
    return (0.299 * r + 0.587 * g + 0.114 * b).clamp(0, 1).unsqueeze(1)


def resize_crop(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """(N, C, h, w) scaled by s = max(H/h, W/w) (bilinear, antialiased) to cover (H, W), then
    centre-cropped to (H, W); unchanged when it already is (H, W) or ``size`` is None."""
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    (h, w), (H, W) = images.shape[-2:], size
    scale = max(H / h, W / w)
    nh, nw = max(H, round(h * scale)), max(W, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(
            images.float(), (nh, nw), mode="bilinear", antialias=True, align_corners=False
        )
        uint8 = images.dtype == torch.uint8
        images = x.round().clamp(0, 255).to(torch.uint8) if uint8 else x.clamp(0, 1)
    top, left = (nh - H) // 2, (nw - W) // 2
    return images[..., top : top + H, left : left + W].contiguous()


def to_intensities(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) uint8 or [0, 1] images ↦ flattened float32 intensities (N, C·H·W)."""
    if images.dtype == torch.uint8:
        return images.to(dtype=torch.float32).flatten(1) / 255.0
    return images.to(dtype=torch.float32).flatten(1)


class ImageSource(ABC):
    """N images of shape ``shape`` = (C, H, W), readable by row; ``labels`` (N,) or None."""

    where: str  # the file or folder, for messages
    shape: Shape
    labels: torch.Tensor | None

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, rows: Sequence[int]) -> torch.Tensor:
        """Images ``rows`` as (B, C, H, W), uint8 or float32 in [0, 1]."""

    @abstractmethod
    def check(self, levels: int | None) -> None:
        """Raise if any stored value is not finite, outside [0, 1], or (``levels``) off the
        grid k / levels."""

    def chunks(self, size: int = CHUNK) -> Iterator[torch.Tensor]:
        """Every image in row order, ``size`` rows at a time."""
        for start in range(0, len(self), size):
            yield self.read(range(start, min(start + size, len(self))))

    def read_all(self) -> torch.Tensor:
        """All N images, (N, C, H, W)."""
        if len(self) == 0:
            raise PyroVAEError(f"{self.where} holds no images")
        return torch.cat(list(self.chunks()))


class Rows(ImageSource):
    """Rows ``rows`` of ``source`` (a subset, or a held-out test split), in that order."""

    def __init__(self, source: ImageSource, rows: torch.Tensor) -> None:
        self.source, self.rows = source, rows.long()
        self.where, self.shape = source.where, source.shape
        self.labels = None if source.labels is None else source.labels[self.rows]

    def __len__(self) -> int:
        return self.rows.shape[0]

    def read(self, rows: Sequence[int]) -> torch.Tensor:
        return self.source.read(self.rows[torch.as_tensor(list(rows), dtype=torch.long)].tolist())

    def check(self, levels: int | None) -> None:
        self.source.check(levels)


def array_shape(raw_shape: Sequence[int], where: str) -> Shape:
    """(N, H, W) ↦ (1, H, W); (N, C, H, W) ↦ (C, H, W); (N, D) ↦ (1, s, s) when D = s², else
    (1, 1, D)."""
    dims = tuple(int(d) for d in raw_shape[1:])
    if len(dims) == 3:
        return dims  # type: ignore[return-value]
    if len(dims) == 2:
        return (1, *dims)  # type: ignore[return-value]
    if len(dims) == 1:
        side = math.isqrt(dims[0])
        return (1, side, side) if side * side == dims[0] else (1, 1, dims[0])
    raise PyroVAEError(
        f"{where}: images of shape {tuple(raw_shape)}; expected (N, H, W), (N, C, H, W) or (N, D)"
    )


class ArraySource(ImageSource):
    """Images from an array (NumPy, a NumPy memory map, or a torch tensor) of shape (N, H, W),
    (N, C, H, W) or (N, D), uint8 (0–255), integers in 0…255, bool, or floats in [0, 1].

    ``open`` returns the array; it is called again in each process that reads (a memory map is
    reopened in a DataLoader worker instead of being copied into it).
    """

    def __init__(
        self,
        open: Callable[[], Any],
        where: str,
        labels: torch.Tensor | None,
        options: ImageOptions,
    ) -> None:
        self.open, self.where, self.options = open, where, options
        self._array: Any = None
        raw = dense(self.array, where)
        if len(raw.shape) < 2 or raw.shape[0] == 0:
            raise PyroVAEError(f"{where} holds no images (shape {tuple(raw.shape)})")
        self.stored = array_shape(raw.shape, where)
        kind = _dtype_kind(raw)
        if kind not in "buif":
            raise PyroVAEError(f"{where}: images of dtype {raw.dtype} are not numbers")
        if labels is not None:
            validate_labels(labels, raw.shape[0], where)
        self.labels = None if labels is None else labels.long()
        self.shape = tuple(self._convert(torch.zeros(1, *self.stored, dtype=torch.uint8)).shape[1:])

    @property
    def array(self) -> Any:
        if self._array is None:
            self._array = self.open()
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}  # reopened by the process that unpickles it

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def _raw(self, rows: Sequence[int] | slice) -> torch.Tensor:
        """Stored values of ``rows``: uint8 and floats as stored, bool as 0.0/1.0, other
        integers as int64 (checked to lie in 0…255 by :meth:`check`)."""
        a = self.array
        if isinstance(a, torch.Tensor):
            index = rows if isinstance(rows, slice) else torch.as_tensor(list(rows))
            block = a[index]
        else:
            index = rows if isinstance(rows, slice) else np.asarray(list(rows), dtype=np.int64)
            block = torch.from_numpy(np.require(native_order(a[index]), requirements=["C", "W"]))
        if block.dtype == torch.bool:
            return block.float()
        if block.dtype != torch.uint8 and not block.is_floating_point():
            return block.long()
        return block

    def _convert(self, block: torch.Tensor) -> torch.Tensor:
        block = block.reshape(block.shape[0], *self.stored)
        if block.is_floating_point():
            block = block.float()
        elif block.dtype != torch.uint8:
            block = block.clamp(0, 255).to(torch.uint8)
        block = convert_channels(block, self.options.channels, self.where)
        return resize_crop(block, self.options.size)

    def read(self, rows: Sequence[int]) -> torch.Tensor:
        return self._convert(self._raw(rows))

    def chunks(self, size: int = CHUNK) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), size):  # contiguous slices: sequential reads
            yield self._convert(self._raw(slice(start, min(start + size, len(self)))))

    def check(self, levels: int | None) -> None:
        """The stored values, chunk by chunk: integers must lie in 0…255, floats in [0, 1]."""
        for start in range(0, len(self), CHUNK):
            block = self._raw(slice(start, min(start + CHUNK, len(self))))
            if block.is_floating_point():
                validate_images(block, self.where, levels)
            elif block.dtype != torch.uint8 and block.numel():
                low, high = block.min().item(), block.max().item()
                if low < 0 or high > 255:
                    raise PyroVAEError(
                        f"{self.where}: integer images span {low}…{high}; expected 0…255"
                    )


def native_order(array: Any) -> Any:
    """A NumPy array in the machine's byte order (a big-endian ``.npy``, say): torch takes no
    other. Tensors and arrays already native are returned as they are."""
    if isinstance(array, torch.Tensor):
        return array
    array = np.asarray(array)
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def dense(array: Any, where: str) -> Any:
    """``array`` unless it is a sparse tensor, which is refused: the readers index rows of a
    dense (strided) tensor."""
    if isinstance(array, torch.Tensor) and array.layout != torch.strided:
        raise PyroVAEError(
            f"{where} is a sparse tensor ({array.layout}); save it dense: "
            "torch.save(t.to_dense(), ...)"
        )
    return array


def _dtype_kind(array: Any) -> str:
    if isinstance(array, torch.Tensor):
        if array.dtype == torch.bool:
            return "b"
        return "f" if array.is_floating_point() else ("c" if array.is_complex() else "i")
    return np.dtype(array.dtype).kind
