"""Semi-supervised training data: N labelled images, balanced over the classes and chosen by
the seed, the rest of the training set unlabelled (Kingma et al. 2014's setting)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from pyrovae.core.errors import PyroVAEError
from pyrovae.data.base import TrainingData, epoch_seed
from pyrovae.data.batches import epoch_generator, shuffled_batches
from pyrovae.data.images import ImageData

LABELS_SEED = 20140605  # mixed with the run's seed: which images keep their labels


def class_counts(n: int, num_classes: int) -> list[int]:
    """How many labelled images each class gets: n // C each, and one more for each of the first
    n mod C classes (0, 1, …)."""
    return [n // num_classes + (c < n % num_classes) for c in range(num_classes)]


def balanced_labelled_rows(y: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
    """Rows of ``n`` labelled images, :func:`class_counts` of each class, drawn uniformly within
    each class by a generator seeded with ``seed``: sorted, on y's device."""
    if n < num_classes:
        raise PyroVAEError(
            f"--labels {n} is fewer than the {num_classes} classes: each class needs one label"
        )
    gen = torch.Generator().manual_seed(LABELS_SEED + seed)
    y_cpu = y.cpu()
    chosen = []
    for c, count in enumerate(class_counts(n, num_classes)):
        rows = (y_cpu == c).nonzero().squeeze(1)
        if rows.numel() < count:
            raise PyroVAEError(
                f"--labels {n} needs {count} images of class {c}, and the training set has "
                f"{rows.numel()}; ask for at most {num_classes * _fewest(y_cpu, num_classes)}"
            )
        chosen.append(rows[torch.randperm(rows.numel(), generator=gen)[:count]])
    return torch.cat(chosen).sort().values.to(y.device)


def _fewest(y: torch.Tensor, num_classes: int) -> int:
    return int(torch.bincount(y, minlength=num_classes).min())


class SemiSupervisedData(TrainingData):
    """``data``'s training images split into N_l labelled (:func:`balanced_labelled_rows`) and
    N_u = N − N_l unlabelled ones; the test set and everything else are ``data``'s.

    An epoch visits every unlabelled image once (``num_train`` is N_u); each step's batch is
    (x_u, x_l, y_l): b_u unlabelled images and b_l = min(batch_size, N_l) labelled ones, the
    labelled set cycled in a fresh order each time it runs out. Both orders come from
    generators seeded by (seed, epoch), so a resumed run draws the same batches.
    """

    streamed = False

    def __init__(self, data: TrainingData, num_labels: int, seed: int) -> None:
        if not isinstance(data, ImageData):
            raise PyroVAEError(
                "--semi-supervised trains on images held on the device; drop --stream (or "
                "use a smaller --train-subset / --image-size so that the data fits)"
            )
        if not data.labelled:
            raise PyroVAEError(
                f"{data.origin.path if data.origin else 'the data'} has no labels (own data "
                "needs one folder per class) for --semi-supervised"
            )
        n = data.num_train
        if num_labels >= n:
            raise PyroVAEError(
                f"--labels {num_labels} leaves no unlabelled image of the {n} training images; "
                f"ask for fewer than {n}"
            )
        self.data = data
        self.labelled_rows = balanced_labelled_rows(
            data.train_y, num_labels, data.num_classes, seed
        )
        mask = torch.ones(n, dtype=torch.bool, device=data.train_y.device)
        mask[self.labelled_rows] = False
        self.unlabelled_rows = mask.nonzero().squeeze(1)

    # what training, evaluation and figures read: the wrapped data's
    train_y = property(lambda self: self.data.train_y)
    test_x = property(lambda self: self.data.test_x)
    test_y = property(lambda self: self.data.test_y)
    pixels = property(lambda self: self.data.pixels)
    shape = property(lambda self: self.data.shape)
    labelled = property(lambda self: self.data.labelled)
    origin = property(lambda self: self.data.origin)

    @property
    def num_labelled(self) -> int:
        return self.labelled_rows.numel()

    @property
    def num_train(self) -> int:
        """N_u, the unlabelled images an epoch visits."""
        return self.unlabelled_rows.numel()

    def describe(self) -> dict[str, Any]:
        return {**self.data.describe(), "num_labelled": self.num_labelled}

    def train_batches(
        self, seed: int, epoch: int, batch_size: int, labels: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(x_u (b_u, D), x_l (b_l, D), y_l (b_l,)) per step; ``labels`` is ignored (every step
        has its labelled batch)."""
        x = self.data.train_epoch(seed, epoch)  # binarized afresh in dynamic mode
        base = epoch_seed(seed, epoch)
        device = x.device
        unlabelled = shuffled_batches(
            x[self.unlabelled_rows], batch_size, epoch_generator(device, base + 1)
        )
        cycle = epoch_generator(device, base + 2)
        b_l = min(batch_size, self.num_labelled)
        order = torch.empty(0, dtype=torch.long, device=device)
        for x_u in unlabelled:
            if order.numel() < b_l:  # the labelled set again, in a fresh order
                more = torch.randperm(self.num_labelled, generator=cycle, device=device)
                order = torch.cat([order, more])
            rows, order = self.labelled_rows[order[:b_l]], order[b_l:]
            yield x_u, x[rows], self.data.train_y[rows]

    def train_head(self, n: int, seed: int) -> torch.Tensor:
        return self.data.train_head(n, seed)
