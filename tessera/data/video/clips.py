"""Worker-side clips: frame indices, decoding at the short side, and the spatial crop of a
split, the same for every frame of a clip (the official mmaction2 pipelines).

* ``train``: one clip at a random position (:mod:`.sampling`); frames decoded with the short
  side at ``floor(img_size / crop_pct)`` (256 for 224 at 0.875, the official
  ``Resize((-1, 256))``), then one random resized crop box (area ``scale``, aspect ``ratio``,
  as ``RandomResizedCrop``) cut from every frame and resized to ``img_size`` square.
  Flipping and the rest of the augmentation run on the device (:class:`tessera.data.augment.VideoAugment`).
* ``val``: one clip in the middle, short side ``floor(img_size / crop_pct)``, centre crop
  (the official validation: ``Resize((-1, 256))``, ``CenterCrop(224)``).
* ``test``: ``num_clips`` clips spread over the video x ``num_crops`` crops. Three crops:
  the short side is resized to ``img_size`` and three squares are cut along the long side
  (left, centre, right, or top, centre, bottom), each covering the whole short side (the
  official ``Resize((-1, 224))``, ``ThreeCrop(224)``, with its offsets ``0, d, 2d`` for
  ``d = (long - img_size) // 2``). One crop: as ``val``.

A sample leaves the worker as ``uint8 (T, H, W, C)``, or ``(V, T, H, W, C)`` with
``V = clips x crops`` views (clip-major) at test time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from PIL import Image

from ..transforms import RESAMPLE, RandomResizedCropFlip
from .io import FrameCountChanged
from .sampling import sample_frames

if TYPE_CHECKING:
    from ...train.recipe import DataConfig


class FrameSource(Protocol):
    """What a clip is cut from: a video file, a frames folder, frames in memory."""

    path: str

    @property
    def num_frames(self) -> int: ...

    def read(self, indices, short_side: int | None = None) -> np.ndarray: ...


def three_crop_boxes(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """``(left, top)`` of three ``size x size`` crops along the long side: left, centre,
    right for landscape frames, top, centre, bottom for portrait ones (the official
    ``ThreeCrop`` offsets ``0, d, 2d`` with ``d = (long - size) // 2``; across the short side
    the crops are centred, which is the whole side when it equals ``size``)."""
    if width >= height:
        step, top = (width - size) // 2, (height - size) // 2
        return [(0, top), (step, top), (2 * step, top)]
    step, left = (height - size) // 2, (width - size) // 2
    return [(left, 0), (left, step), (left, 2 * step)]


def centre_crop_box(width: int, height: int, size: int) -> tuple[int, int]:
    """``(left, top)`` of the centre ``size x size`` crop (rounded as the image evaluation)."""
    return round((width - size) / 2.0), round((height - size) / 2.0)


class ClipPipeline:
    """``(frame source, random generator) -> uint8 clip(s)`` for one split of a recipe's data
    section (see the module docstring).

    Attributes:
        num_views: views per sample (1 except at test time).
        short_side: the short side frames are decoded at.
    """

    def __init__(self, cfg: DataConfig, split: str) -> None:
        self.split = split
        self.size = cfg.img_size
        self.clip_len, self.interval, self.uniform = cfg.clip_len, cfg.frame_interval, cfg.frame_uniform
        self.interpolation = cfg.interpolation
        test = split == "test"
        self.num_clips = cfg.num_clips if test and not cfg.frame_uniform else 1
        self.num_crops = cfg.num_crops if test else 1
        self.num_views = self.num_clips * self.num_crops
        if self.num_crops == 3:
            self.short_side = cfg.img_size
        else:
            self.short_side = math.floor(cfg.img_size / cfg.crop_pct)
        self.crop = RandomResizedCropFlip(cfg.img_size, cfg.scale, cfg.ratio, hflip=0.0) if split == "train" else None

    def indices(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        """``(clips, clip_len)`` frame indices."""
        mode = "train" if self.split == "train" else "test"
        return sample_frames(num_frames, self.clip_len, self.interval, self.num_clips, mode, rng, self.uniform)

    def _crop_resize(self, frames: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The same ``(left, top, w, h)`` box of every frame, resized to ``size`` square
        (Pillow, one frame at a time: cheap in a worker, no thread pool)."""
        left, top, w, h = box
        size, resample = (self.size, self.size), RESAMPLE[self.interpolation]
        return np.stack([np.asarray(Image.fromarray(f).resize(size, resample, box=(left, top, left + w, top + h)))
                         for f in frames])

    def __call__(self, source: FrameSource, rng: np.random.Generator) -> torch.Tensor:
        for attempt in range(2):
            idx = self.indices(source.num_frames, rng)
            try:
                frames = source.read(idx.reshape(-1), self.short_side)
                break
            except FrameCountChanged:  # the source corrected its frame count: sample again
                if attempt:
                    raise
        h, w = frames.shape[1:3]
        s = self.size
        if min(h, w) < s:
            raise ValueError(f"{source.path}: frames of {w}x{h} are smaller than the {s}x{s} crop")
        if self.crop is not None:  # one random box for the whole clip
            out = self._crop_resize(frames, self.crop.box(w, h, rng))
        else:
            clips = frames.reshape(self.num_clips, -1, h, w, frames.shape[-1])
            boxes = three_crop_boxes(w, h, s) if self.num_crops == 3 else [centre_crop_box(w, h, s)]
            out = np.stack([c[:, top : top + s, left : left + s] for c in clips for left, top in boxes])
            if self.num_views == 1:
                out = out[0]
        return torch.from_numpy(np.ascontiguousarray(out))
