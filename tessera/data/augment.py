"""Device-side augmentation of whole batches with kornia: RandAugment (or colour jitter),
normalisation and random erasing, after the workers' crop.

Input: ``uint8`` images ``(B, 3, H, W)`` on the device. Output: normalised ``float32``.
In evaluation only the normalisation runs.

Where this differs from timm's per-image pipeline of the official recipe (documented, not
hidden): kornia's RandAugment draws its operations once per call, so the batch is cut into
``randaugment_groups`` groups that draw their own; the magnitude is fixed (no ``mstd``
noise). timm's level ``m`` of 10 maps to kornia's ``3 m`` of 30. Random erasing fills the
box with per-pixel normal noise, as timm's ``pixel`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import RandAugment
from torch import nn


class ImageAugment(nn.Module):
    """``uint8 (B, 3, H, W) -> float32 (B, 3, H, W)``: ``[0, 1]``, then (training only)
    RandAugment or colour jitter, then ``(x - mean) / std``, then (training only) random
    erasing."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = False,
        randaugment_n: int = 2,
        randaugment_m: float = 0.0,
        randaugment_groups: int = 8,
        color_jitter: float = 0.0,
        reprob: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.train_mode = train
        self.groups = max(1, randaugment_groups)
        self.randaugment = None
        self.jitter = None
        self.erasing = None
        if train and randaugment_m > 0:
            self.randaugment = RandAugment(n=randaugment_n, m=max(1, min(29, round(3 * randaugment_m))))
        elif train and color_jitter > 0:
            self.jitter = K.ColorJitter(color_jitter, color_jitter, color_jitter, p=1.0)
        if train and reprob > 0:
            self.erasing = K.RandomErasing(scale=(0.02, 1 / 3), ratio=(0.3, 3.3), value=0.0, p=reprob)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0)
        if self.randaugment is not None:
            x = torch.cat([self.randaugment(part) for part in x.chunk(self.groups)]).clamp_(0.0, 1.0)
        elif self.jitter is not None:
            x = self.jitter(x)
        x = (x - self.mean) / self.std
        if self.erasing is not None:
            # kornia picks the boxes (on a ones image erased to 0); the box gets noise
            erased = self.erasing(torch.ones_like(x[:, :1])) == 0
            x = torch.where(erased, torch.randn_like(x), x)
        return x
