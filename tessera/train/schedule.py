"""The learning rates of the official recipes: a linear warm-up, then a cosine or a
polynomial decay to ``min_lr``.

Three styles, one per official code base:

* ``timm`` (the image recipes; timm's ``CosineLRScheduler`` with ``warmup_prefix=True``):
  during the first ``warmup_steps`` the rate rises linearly from ``warmup_lr`` towards
  ``base_lr``; then it follows half a cosine from ``base_lr`` down to ``min_lr`` over the
  remaining steps. Both per iteration.
* ``mmcv`` (the video recipes; mmcv's ``CosineAnnealing`` with a linear warm-up by epochs):
  the cosine spans the whole run and moves once per epoch,
  ``min_lr + (base_lr - min_lr) * (1 + cos(pi * epoch / epochs)) / 2``; during the
  warm-up (per iteration) that rate is scaled by a factor rising linearly from
  ``warmup_lr / base_lr`` (mmcv's ``warmup_ratio``, 0.1 in the video recipes) to 1.
* ``poly`` (the segmentation recipes; mmcv's ``PolyLrUpdaterHook`` by iterations):
  ``min_lr + (base_lr - min_lr) * (1 - step / total_steps) ** power``, scaled during the
  warm-up by the same linear factor as ``mmcv`` (the official Swin UperNet: power 1, 1500
  steps from a ratio of 1e-6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """``lr(step)`` for optimiser steps ``0 .. total_steps - 1`` (see the module docstring;
    ``steps_per_epoch`` is used by the ``mmcv`` style only). The schedule has no state
    besides the step, so resuming needs only the step count."""

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    min_lr: float = 0.0
    style: str = "timm"
    steps_per_epoch: int = 1
    power: float = 1.0

    def _cosine(self, progress: float) -> float:
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def __call__(self, step: int) -> float:
        if self.style in ("mmcv", "poly"):
            if self.style == "poly":
                lr = self.min_lr + (self.base_lr - self.min_lr) * (1.0 - min(step, self.total_steps) /
                                                                   self.total_steps) ** self.power
            else:
                epoch = step // self.steps_per_epoch
                lr = self._cosine(epoch / max(1, self.total_steps // self.steps_per_epoch))
            if step < self.warmup_steps:
                ratio = self.warmup_lr / self.base_lr if self.base_lr else 1.0
                lr *= 1.0 - (1.0 - ratio) * (1.0 - step / self.warmup_steps)
            return lr
        if step < self.warmup_steps:
            return self.warmup_lr + step * (self.base_lr - self.warmup_lr) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        return self._cosine((step - self.warmup_steps) / span)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's rate for ``step`` (times the group's ``lr_mult``)."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr
