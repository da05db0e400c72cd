"""``digits``: scikit-learn's 1797 handwritten digits (8x8, 16 grey levels), upsampled, with
a fixed split. It ships with scikit-learn, so the demo needs no download.

The split is stratified and seeded: per class, 70 % train, 10 % validation, 20 % test.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import ImageDataset, Transform

SPLITS = ("train", "val", "test")
FRACTIONS = {"train": 0.7, "val": 0.1}
SPLIT_SEED = 20240521


@lru_cache(maxsize=1)
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (1797, 8, 8) on 0..255, labels (1797,))`` of scikit-learn's digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return images, digits.target.astype(np.int64)


def digits_split(split: str) -> np.ndarray:
    """Sorted indices of ``split`` into scikit-learn's digits; the same on every machine
    (NumPy's PCG64 with a fixed seed), and the three splits are disjoint and cover all."""
    if split not in SPLITS:
        raise DataError(f"digits has the splits {', '.join(SPLITS)}, not {split!r}")
    _, targets = digit_images()
    rng = np.random.Generator(np.random.PCG64(SPLIT_SEED))
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_train = round(len(idx) * FRACTIONS["train"])
        n_val = round(len(idx) * FRACTIONS["val"])
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train : n_train + n_val])
        parts["test"].append(idx[n_train + n_val :])
    return np.sort(np.concatenate(parts[split]))


class Digits(ImageDataset):
    """One split of the digits as RGB images of ``size x size`` (white on black), upsampled
    bicubically from 8x8."""

    def __init__(self, split: str = "train", size: int = 32, transform: Transform | None = None, seed: int = 0) -> None:
        super().__init__(transform, seed)
        self.split, self.size = split, size
        self.indices = digits_split(split)
        images, targets = digit_images()
        self.images = images[self.indices]
        self.targets = targets[self.indices].tolist()
        self.classes = [str(c) for c in range(10)]

    def load(self, index: int) -> Image.Image:
        img = Image.fromarray(self.images[index])  # uint8 (8, 8): mode L
        return img.resize((self.size, self.size), Image.Resampling.BICUBIC).convert("RGB")

    def describe(self, index: int) -> str:
        return f"digits:{self.split}[{index}] (scikit-learn index {self.indices[index]})"
