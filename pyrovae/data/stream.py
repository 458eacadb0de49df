"""Training images streamed from their source: a torch DataLoader with worker processes and
pinned memory over a memory-mapped array or image files, for data that does not fit on the
device. The test split stays on the device.

Given the same seed it yields what :class:`~pyrovae.data.images.ImageData` yields: the epoch's
permutation comes from the same generator on the same device, and a binarization is drawn in
row order from one CPU generator seeded as the resident path's, which on the CPU gives the same
draws (torch's Bernoulli draws one number per pixel, in order, so drawing chunk by chunk equals
drawing the whole tensor). On a GPU the resident path draws its binarization there, so the
binary pixels differ (with the same distribution); the permutation does not.

A worker process that dies (the out-of-memory killer sends SIGKILL, without a word) stops the
run with one line from the loader's ``next()`` (see :func:`_deaths_told_by_the_loader`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pyrovae.core.errors import PyroVAEError, first_line
from pyrovae.data.base import (
    STATIC_TRAIN_SEED,
    DataOrigin,
    TrainingData,
    check_data,
    epoch_seed,
)
from pyrovae.data.batches import Batch, epoch_generator, epoch_permutation
from pyrovae.data.sources import CHUNK, ImageSource, to_intensities


class _Failure:
    """A worker's one-line error, returned instead of raised: a DataLoader would wrap a raised
    one in a multi-line traceback."""

    def __init__(self, message: str) -> None:
        self.message = message


def _as_is(batch):
    return batch


WORKER_DIED = "DataLoader worker (pid"  # how torch's loader begins the error of a dead worker


@contextmanager
def _deaths_told_by_the_loader() -> Iterator[None]:
    """SIGCHLD at its default for the block (in the main thread; restored after). torch's
    handler for it raises a dead worker's error at whatever line the main thread is running,
    such as inside a compile, which takes it for a compile failure and goes on eagerly.
    Without it the loader finds the dead worker itself, within its 5 s status check, and
    raises in ``next()``, where :meth:`StreamedImageData._read` names it."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGCHLD"):
        yield  # no signal to set here (Windows has none: its loader always checks itself)
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        yield
    finally:
        with suppress(ValueError):  # a generator closed in another thread
            signal.signal(signal.SIGCHLD, previous)


class _Reader(Dataset):
    """The source's images as flattened intensities, a whole batch per call."""

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, rows: Sequence[int]) -> torch.Tensor | _Failure:
        try:
            return to_intensities(self.source.read(rows))  # (B, D)
        except PyroVAEError as e:
            return _Failure(str(e))

    def __getitem__(self, row: int) -> torch.Tensor | _Failure:
        return self.__getitems__([row])


class StreamedImageData(TrainingData):
    """Training images read batch by batch from ``train`` (an image source), the rest on
    ``device``: labels, and the test images (flattened, binarized once as the resident path
    does). ``workers`` DataLoader processes read ahead (0: read in this process)."""

    streamed = True

    def __init__(
        self,
        train: ImageSource,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        pixels: str,
        device: torch.device | str = "cpu",
        workers: int = 0,
        labelled: bool = True,
        origin: DataOrigin | None = None,
    ) -> None:
        if workers < 0:
            raise PyroVAEError(f"--workers must be 0 or more, got {workers}")
        device = torch.device(device)
        self.source, self.workers = train, workers
        self.train_y, self.test_x, self.test_y = (t.to(device) for t in (train_y, test_x, test_y))
        self.pixels, self.shape = pixels, train.shape
        self.labelled, self.origin = labelled, origin
        self._static: np.ndarray | None = None
        check_data(self, None)
        if self.train_y.shape != (len(train),):
            raise PyroVAEError(f"{train.where}: {len(train)} images but {len(self.train_y)} labels")

    @property
    def num_train(self) -> int:
        return len(self.source)

    def _read(
        self, batches: Sequence[Sequence[int]], device: torch.device
    ) -> Iterator[torch.Tensor]:
        """Intensities (B, D) of each list of rows, in order, on ``device``."""
        loader = DataLoader(
            _Reader(self.source),
            batch_sampler=batches,
            num_workers=self.workers,
            collate_fn=_as_is,
            pin_memory=device.type == "cuda",
            # the loader draws its workers' base seed from this, not from torch's global
            # generator, which would shift every draw training makes after it
            generator=torch.Generator().manual_seed(0),
        )
        batches = iter(loader)  # starts the workers (and torch's SIGCHLD handler)
        try:
            with _deaths_told_by_the_loader():
                for x in batches:
                    if isinstance(x, _Failure):
                        raise PyroVAEError(x.message)
                    yield x.to(device, non_blocking=True)
        except RuntimeError as e:
            if not str(e).startswith(WORKER_DIED):
                raise
            raise PyroVAEError(
                f"a DataLoader worker reading {self.source.where} died ({first_line(e)}), most "
                "likely ended by the system's out-of-memory killer; the last checkpoint is kept: "
                "free memory or use fewer --workers, then --resume the run"
            ) from None

    def _binarized(self, seed: int, rows: int | None = None) -> np.ndarray:
        """x ~ Bernoulli(intensity) for the first ``rows`` images (default all), drawn in row
        order from one CPU generator seeded ``seed``: packed bits (n, ⌈D/8⌉)."""
        n = self.num_train if rows is None else rows
        gen = torch.Generator().manual_seed(seed)
        chunks = [range(s, min(s + CHUNK, n)) for s in range(0, n, CHUNK)]
        bits = [
            np.packbits(torch.bernoulli(x, generator=gen).to(torch.uint8).numpy(), axis=1)
            for x in self._read(chunks, torch.device("cpu"))
        ]
        return np.concatenate(bits)

    def _bits(self, seed: int, epoch: int) -> np.ndarray | None:
        """The epoch's binary pixels (None for intensities): drawn afresh in dynamic mode,
        once in static mode."""
        if not self.mode.binary:
            return None
        if self.mode.resample:
            return self._binarized(epoch_seed(seed, epoch))
        if self._static is None:
            self._static = self._binarized(STATIC_TRAIN_SEED)
        return self._static

    def _unpack(self, bits: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
        pixels = np.unpackbits(bits[rows.numpy()], axis=1, count=self.num_pixels)
        return torch.from_numpy(pixels).float().to(self.device)

    def train_batches(
        self, seed: int, epoch: int, batch_size: int, labels: bool = False
    ) -> Iterator[Batch]:
        bits = self._bits(seed, epoch)  # now, before the epoch's clock starts
        generator = epoch_generator(self.device, epoch_seed(seed, epoch) + 1)
        perm = epoch_permutation(self.num_train, generator)
        return self._batches(perm, bits, batch_size, labels)

    def _batches(
        self, perm: torch.Tensor, bits: np.ndarray | None, batch_size: int, labels: bool
    ) -> Iterator[Batch]:
        rows = perm.split(batch_size)  # on the device, for the labels
        on_cpu = [r.cpu() for r in rows]
        if bits is None:
            images = self._read([r.tolist() for r in on_cpu], self.device)
        else:
            images = (self._unpack(bits, r) for r in on_cpu)
        for r, x in zip(rows, images, strict=False):
            yield (x, self.train_y[r]) if labels else x

    def train_head(self, n: int, seed: int) -> torch.Tensor:
        if self.mode.binary:
            bits = (
                self._binarized(epoch_seed(seed, 0), n)
                if self.mode.resample
                else self._bits(seed, 0)[:n]
            )
            return self._unpack(bits, torch.arange(n))
        return next(self._read([range(n)], self.device))
