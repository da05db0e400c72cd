"""The learning rate of the official recipes: linear warm-up, then a cosine to ``min_lr``,
both per iteration (timm's ``CosineLRScheduler`` with ``warmup_prefix=True``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WarmupCosine:
    """``lr(step)`` for optimiser steps ``0 .. total_steps - 1``.

    During the first ``warmup_steps`` the rate rises linearly from ``warmup_lr`` towards
    ``base_lr`` (``warmup_lr + step * (base_lr - warmup_lr) / warmup_steps``); from then on
    it follows half a cosine from ``base_lr`` at ``warmup_steps`` down to ``min_lr`` at
    ``total_steps``. The schedule has no state besides the step, so resuming needs only the
    step count.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    min_lr: float = 0.0

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + step * (self.base_lr - self.warmup_lr) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every parameter group's rate for ``step`` (times the group's ``lr_mult``)."""
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr
