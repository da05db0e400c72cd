"""Device-side augmentation of whole batches with kornia: RandAugment (or colour jitter),
normalisation and random erasing, after the workers' crop.

Input: ``uint8`` images ``(B, 3, H, W)`` on the device (:class:`ImageAugment`), or clips
``(B, T, H, W, 3)`` (:class:`VideoAugment`). Output: normalised ``float32`` ``(B, 3, H, W)``
or ``(B, 3, T, H, W)``. In evaluation only the normalisation runs.

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
from kornia.augmentation.container.params import ParamItem
from torch import nn


class ImageAugment(nn.Module):
    """``uint8 (B, 3, H, W) -> float32 (B, 3, H, W)``: ``[0, 1]``, then (training only)
    RandAugment or colour jitter, and pixel noise of a level up to ``noise``, then
    ``(x - mean) / std``, then (training only) random erasing."""

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
        noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.train_mode = train
        self.noise = noise if train else 0.0
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

    def _add_noise(self, x: torch.Tensor) -> torch.Tensor:
        """Sensor-like noise on ``[0, 1]`` pixels, one level per sample (kornia's Gaussian
        noise has one level for the batch): a model that never saw a noisy picture can
        take noise for evidence, most of all a video model that looks for change."""
        if not self.noise:
            return x
        level = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) * self.noise
        return (x + torch.randn_like(x) * level).clamp_(0.0, 1.0)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0)
        if self.randaugment is not None:
            x = torch.cat([self.randaugment(part) for part in x.chunk(self.groups)]).clamp_(0.0, 1.0)
        elif self.jitter is not None:
            x = self.jitter(x)
        x = self._add_noise(x)
        x = (x - self.mean) / self.std
        if self.erasing is not None:
            # kornia picks the boxes (on a ones image erased to 0); the box gets noise
            erased = self.erasing(torch.ones_like(x[:, :1])) == 0
            x = torch.where(erased, torch.randn_like(x), x)
        return x


def _same_on_frames(params, frames: int, shape: torch.Size):
    """RandAugment parameters drawn for ``B`` clips, repeated for each of their ``frames``
    frames (the ``B * frames`` images of the clips, clip-major): every frame of a clip gets
    the operations and magnitudes of its clip."""
    if isinstance(params, list):
        return [_same_on_frames(p, frames, shape) for p in params]
    if isinstance(params, ParamItem):
        return ParamItem(params.name, _same_on_frames(params.data, frames, shape))
    if isinstance(params, dict):
        out = {}
        for key, value in params.items():
            if key == "forward_input_shape":
                out[key] = torch.tensor(shape)
            elif torch.is_tensor(value) and value.dim() > 0:
                out[key] = value.repeat_interleave(frames, dim=0)
            else:
                out[key] = value
        return out
    return params


class VideoAugment(ImageAugment):
    """``uint8 (B, T, H, W, 3) -> float32 (B, 3, T, H, W)``, every frame of a clip augmented
    alike: ``[0, 1]``, then (training only) a horizontal flip with probability ``hflip``
    and colour jitter (kornia's ``VideoSequential`` with ``same_on_frame``) or RandAugment
    (the operations and magnitudes drawn once per clip and applied to each of its frames,
    which ``VideoSequential`` does not do for RandAugment) and pixel noise (one level per
    clip, new noise in every frame), then ``(x - mean) / std``, then (training only) random
    erasing: one box through all frames, filled with the same noise in each. RandAugment
    draws are grouped as in :class:`ImageAugment` (``randaugment_groups`` groups of clips).

    The official Something-Something v2 recipe applies imgaug's RandAugment with one draw
    per clip as well (mmaction2's ``Imgaug`` makes the draw deterministic over the frames).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], train: bool = False, hflip: float = 0.0,
                 **kwargs) -> None:
        super().__init__(mean, std, train, **kwargs)
        same = dict(data_format="BCTHW", same_on_frame=True)
        self.flip = K.VideoSequential(K.RandomHorizontalFlip(p=hflip), **same) if train and hflip > 0 else None
        if self.jitter is not None:
            self.jitter = K.VideoSequential(self.jitter, **same)
        if self.erasing is not None:
            self.erasing = K.VideoSequential(self.erasing, **same)

    def _randaugment(self, x: torch.Tensor) -> torch.Tensor:
        _, c, t, h, w = x.shape
        out = []
        for clips in x.chunk(self.groups):
            n = clips.shape[0]
            frames = clips.transpose(1, 2).reshape(n * t, c, h, w)
            params = self.randaugment.forward_parameters(torch.Size((n, c, h, w)))
            params = _same_on_frames(params, t, frames.shape)
            out.append(self.randaugment(frames, params=params).view(n, t, c, h, w).transpose(1, 2))
        return torch.cat(out).clamp_(0.0, 1.0)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 4, 1, 2, 3).float().div_(255.0)  # (B, C, T, H, W)
        if self.flip is not None:
            x = self.flip(x)
        if self.randaugment is not None:
            x = self._randaugment(x)
        elif self.jitter is not None:
            x = self.jitter(x)
        x = self._add_noise(x)
        x = (x - self.mean.unsqueeze(-1)) / self.std.unsqueeze(-1)
        if self.erasing is not None:  # a still box of noise through the clip
            erased = self.erasing(torch.ones_like(x[:, :1])) == 0
            x = torch.where(erased, torch.randn_like(x[:, :, :1]), x)
        return x
