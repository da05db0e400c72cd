"""Samplers and loaders: which process sees which sample, in which order, and how samples
become batches.

The training order of an epoch is a permutation seeded by ``(seed, epoch)``, cut into
steps of ``batch_size`` samples (the last partial step is dropped); each step is cut into
``accum_steps`` micro-batches, and each micro-batch into one slice per process. So one
process and N processes see the same samples in every step, and a resumed run can start
in the middle of an epoch (``set_epoch(epoch, start_step)``).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from ..errors import DataError
from .images import BadSample


class StepSampler(Sampler[int]):
    """The distributed training sampler (see the module docstring).

    Args:
        num_samples: size of the data set.
        batch_size: samples per optimiser step, over all processes.
        accum_steps: micro-batches per step.
        rank, world_size: this process and the number of processes.
        seed: the shuffling seed (combined with the epoch).
        shuffle: a new permutation every epoch (else the data set's order).
    """

    def __init__(self, num_samples: int, batch_size: int, accum_steps: int = 1, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        if batch_size % (accum_steps * world_size):
            raise DataError(f"the batch of {batch_size} cannot be cut into {accum_steps} micro-batches "
                            f"for each of {world_size} processes")
        if num_samples < batch_size:
            raise DataError(f"the data set has {num_samples} samples, fewer than one batch of {batch_size}")
        self.num_samples, self.batch_size, self.accum_steps = num_samples, batch_size, accum_steps
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.micro_batch = batch_size // (accum_steps * world_size)
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.num_samples, generator=g)

    def __iter__(self) -> Iterator[int]:
        steps = self.order()[: self.steps_per_epoch * self.batch_size]
        steps = steps.view(self.steps_per_epoch, self.accum_steps, self.world_size, self.micro_batch)
        yield from steps[self.start_step :, :, self.rank].reshape(-1).tolist()

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps * self.micro_batch


class ShardSampler(Sampler[int]):
    """Evaluation: process ``rank`` takes samples ``rank, rank + N, ...`` in order, no
    sample twice and none left out (metrics are summed over processes afterwards)."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def collate_skipping_bad(items: Sequence[Any]) -> tuple[Any, Any, list[BadSample]]:
    """Stack the good samples; return ``(inputs, targets, bad samples)`` (``inputs`` is
    ``None`` when no sample of the batch could be read; inputs and targets are lists when
    the inputs differ in size)."""
    good = [it for it in items if not isinstance(it, BadSample)]
    bad = [it for it in items if isinstance(it, BadSample)]
    if not good:
        return None, None, bad
    shapes = {tuple(getattr(part, "shape", ())) for it in good for part in it[:1]}
    if len(shapes) > 1:  # samples of their own sizes (segmentation evaluation): lists
        return [it[0] for it in good], [it[1] for it in good], bad
    x, y = default_collate(good)
    return x, y, bad


def ignore_stop_signals(worker_id: int) -> None:
    """Workers ignore SIGINT and SIGTERM: a terminal's Ctrl-C reaches the whole process group,
    and a worker that died of it would fail the step the main process is finishing before it
    saves (:mod:`tessera.train.interrupt`). The workers end with the main process."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)


def default_num_workers(processes_per_machine: int = 1, most: int = 8) -> int:
    """DataLoader workers for one process: the cores this process may run on
    (``os.sched_getaffinity``, which a container's or a scheduler's CPU limit narrows, where
    ``os.cpu_count`` would count the whole machine), shared among the processes of the
    machine, at most ``most``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(most, cores // max(1, processes_per_machine)))


def build_loader(dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int,
                 pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """A DataLoader over ``sampler`` whose batches are ``(x, y, bad samples)``. Workers are
    started per epoch (so they see the data set's epoch) and leave stop signals to the main
    process; the loader's own generator keeps the global random state untouched."""
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=collate_skipping_bad, pin_memory=pin_memory, drop_last=False,
        generator=torch.Generator().manual_seed(seed), persistent_workers=False,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )


class SkippedSamples:
    """The samples a split could not read: each reported once (with its path and reason)
    and counted; more than ``max_fraction`` of the split stops the run with a DataError."""

    def __init__(self, split: str, dataset_size: int, max_fraction: float, log=None) -> None:
        import logging

        self.split, self.size, self.max_fraction = split, dataset_size, max_fraction
        self.seen: dict[str, str] = {}
        self.log = log or logging.getLogger("tessera")

    def add(self, bad: Sequence[BadSample]) -> None:
        for b in bad:
            if b.path not in self.seen:
                self.seen[b.path] = b.reason
                self.log.warning("skipped an unreadable %s sample: %s (%s)", self.split, b.path, b.reason)
        if len(self.seen) > self.max_fraction * self.size:
            raise DataError(
                f"{len(self.seen)} of the {self.size} {self.split} samples could not be read (more than "
                f"{self.max_fraction:.1%}, data.max_bad_fraction); first: {next(iter(self.seen))}"
            )

    def __len__(self) -> int:
        return len(self.seen)
