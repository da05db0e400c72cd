"""Holding out part of a training set for validation, when there is no validation folder.

:func:`stratified_split` picks the held-out samples (every class in proportion, seeded), and
:class:`SubsetDataset` is a view of a data set through a list of its indices that keeps what
the loop needs from it (classes, targets, epochs, names of samples). The training part and
the validation part are views of two data sets built from the same source, one with the
training crops and one with the evaluation crops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset


def stratified_split(targets: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(training indices, held-out indices)``, both sorted: ``ceil(fraction * N)`` samples
    held out, shared among the classes in proportion to their size (largest remainders
    first), the samples of each class drawn at random with ``seed``. A class never gives up
    its last sample, so every class keeps at least one training sample; classes of one
    sample are not validated."""
    targets = np.asarray(targets)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the held-out fraction must be in [0, 1), got {fraction}")
    classes, counts = np.unique(targets, return_counts=True)
    wanted = min(math.ceil(fraction * len(targets)), int((counts - 1).sum()))
    exact = fraction * counts
    quota = np.minimum(np.floor(exact).astype(int), counts - 1)
    # the rest, one by one, to the classes with the largest remainders that can still give one
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quota.sum() >= wanted:
            break
        if quota[i] < counts[i] - 1:
            quota[i] += 1
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for cls, n in zip(classes, quota):
        members = np.flatnonzero(targets == cls)
        held += rng.permutation(members)[:n].tolist()
    held_set = set(held)
    return [i for i in range(len(targets)) if i not in held_set], sorted(held)


class SubsetDataset(Dataset):
    """The samples ``indices`` of ``dataset``, in that order, with its ``classes``, the
    matching ``targets``, ``set_epoch``, ``describe`` and ``num_views``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.classes = list(dataset.classes)
        self.targets = [dataset.targets[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def describe(self, index: int) -> str:
        return self.dataset.describe(self.indices[index])

    @property
    def num_views(self) -> int:
        return getattr(self.dataset, "num_views", 1)
