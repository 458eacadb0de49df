"""Holding out a test split (``--test-fraction``): which rows of a dataset become test images.

``TEST_SPLITS`` holds one entry per method, each a function (n, k, labels, seed) ↦ (train rows,
test rows) over row indices alone: no image is read to choose them (a memory-mapped ``.npy``
stays on disk). A run records its method and seed (``--test-split``, ``--split-seed``), so a
resumed, evaluated or plotted run holds out the same rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LEGACY_SEED = 20240613  # the one seed of ``file-order``, the split of runs made before --test-split
LEGACY_SPLIT = "file-order"


def stratified(
    n: int, k: int, labels: torch.Tensor | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random under --split-seed, each class keeping its share of the test images.

    Class c of n_c rows gets k·n_c/n test rows, rounded by largest remainder (ties: the
    earlier class) so that the quotas sum to k exactly; which rows, from one seeded
    permutation. The test rows are ordered class by class in turn (the first of each class,
    then the second, …), so the first images a figure shows cover every class. Without labels:
    a seeded random k rows, in random order. The training rows keep the source's order.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # (n,)
    if labels is None:
        return perm[k:].sort().values, perm[:k]
    _, cls, counts = torch.unique(labels.cpu(), return_inverse=True, return_counts=True)
    quota = counts * k // n  # (C,) floors of the exact shares k·n_c/n
    remainder = counts * k % n
    short = k - int(quota.sum())  # 0 ≤ short < C
    ranked = sorted(range(counts.shape[0]), key=lambda c: (-int(remainder[c]), c))
    quota[ranked[:short]] += 1
    cls = cls[perm]  # (n,) the class of each row, in permutation order
    grouped = torch.sort(cls, stable=True)  # rows grouped by class, permutation order within
    starts = counts.cumsum(0) - counts
    rank = torch.empty_like(cls)  # each row's place among its class's rows in the permutation
    rank[grouped.indices] = torch.arange(n) - starts[grouped.values]
    held = rank < quota[cls]  # (n,) the first quota_c rows of each class
    at = held.nonzero().squeeze(1)
    turns = (rank[at] * counts.shape[0] + cls[at]).argsort()  # class by class in turn
    return perm[~held].sort().values, perm[at[turns]]


def file_order(
    n: int, k: int, labels: torch.Tensor | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Before --test-split: one fixed seed, not stratified, kept in file order.

    A random k of the n rows under the seed 20240613 (``--split-seed`` unused), train and test
    each in the source's order: on a folder of class subfolders the first test images are all
    of the first class. Kept so that such runs resume and evaluate on the rows they held out.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(LEGACY_SEED))
    return perm[k:].sort().values, perm[:k].sort().values


SplitRows = Callable[[int, int, "torch.Tensor | None", int], tuple[torch.Tensor, torch.Tensor]]

TEST_SPLITS: dict[str, SplitRows] = {
    "stratified": stratified,
    LEGACY_SPLIT: file_order,
}
"""How ``--test-fraction`` picks its test rows: name ↦ (n, k, labels, seed) ↦ (train, test)."""
