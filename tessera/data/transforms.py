"""Worker-side crops: a PIL image in, a fixed-size PIL image out.

Training takes a random resized crop and a horizontal flip, evaluation a resize and a
centre crop (the official pipelines, written here with Pillow only). Each takes the
sample's own random generator, so that a crop does not depend on which worker made it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST}


class RandomResizedCropFlip:
    """Crop a random box of ``scale`` times the image's area and aspect ratio in ``ratio``
    (drawn log-uniformly), resize it to ``size x size`` and flip it with probability
    ``hflip``. After ten boxes that do not fit, a centre crop of the nearest allowed ratio
    (torchvision's ``RandomResizedCrop``)."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: float = 0.5,
                 interpolation: str = "bicubic") -> None:
        self.size, self.scale, self.ratio, self.hflip = size, scale, ratio, hflip
        self.resample = RESAMPLE[interpolation]

    def box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(left, top, w, h)`` of the crop."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            w, h = round(height * max(self.ratio)), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        left, top, w, h = self.box(*img.size, rng)
        img = img.resize((self.size, self.size), self.resample, box=(left, top, left + w, top + h))
        if self.hflip > 0 and rng.random() < self.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img


class ResizeCenterCrop:
    """Resize the short side to ``floor(size / crop_pct)`` and cut the centre ``size x size``
    (the official evaluation: 256 then 224 at ``crop_pct = 0.875``; ``crop_pct = 1`` resizes
    the short side to ``size``)."""

    def __init__(self, size: int, crop_pct: float = 0.875, interpolation: str = "bicubic") -> None:
        self.size, self.crop_pct = size, crop_pct
        self.resample = RESAMPLE[interpolation]

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int], int, int]:
        """``((resized width, resized height), left, top)``: the size an image of
        ``width x height`` is resized to and where the ``size x size`` crop starts in it."""
        short = math.floor(self.size / self.crop_pct)
        if width <= height:
            new = (short, max(1, int(short * height / width)))
        else:
            new = (max(1, int(short * width / height)), short)
        return new, round((new[0] - self.size) / 2.0), round((new[1] - self.size) / 2.0)

    def __call__(self, img: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        new, left, top = self.geometry(*img.size)
        if new != img.size:
            img = img.resize(new, self.resample)
        return img.crop((left, top, left + self.size, top + self.size))
