"""``moving_digits``: scikit-learn's handwritten digits moving across a canvas; the class is
the direction of motion, so no single frame can tell it. Built in, nothing to download.

Each video is 24 grey frames of 32 x 40 pixels: a digit (upsampled to 16 x 16) starts at a
random position and moves 1 pixel per frame in one of 8 directions (east, north-east,
north, ...). The canvas wraps around (a digit leaving on the right comes back on the
left), so every frame shows the digit at a position that is uniformly random whatever the
direction, and every frame holds the same pixels in another arrangement: the pixel
statistics of frame ``t`` are the same in every class. Every class is also made of the same
digits starting at the same positions (each chosen digit appears once per direction), so
a class differs from another only in the motion.

The split follows the digits' fixed split (:func:`tessera.data.digits.digits_split`): a test
video never shows a digit image seen in training. Per class: 160 training, 24 validation
and 45 test videos (1280 / 192 / 360 in all). Everything is drawn from NumPy's PCG64 with a
fixed seed, so the set is the same on every machine.

Use it in memory as ``moving_digits:train`` (``:val``, ``:test``), or write it as mp4 files
with ``tessera make-moving-digits DIR`` (:func:`write_moving_digits`): a folder of class
folders per split plus annotation lists and a class-name file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .digits import SPLITS, digit_images, digits_split
from .video.clips import ClipPipeline
from .video.datasets import VideoDataset
from .video.io import FrameArray, write_video

#: direction name -> (dy, dx) per step (y grows downwards); in sorted order, which is the
#: label order, so that folders of class folders (read in sorted order), the annotation
#: lists and the in-memory set agree
DIRECTIONS: dict[str, tuple[int, int]] = {
    "east": (0, 1), "north": (-1, 0), "north-east": (-1, 1), "north-west": (-1, -1),
    "south": (1, 0), "south-east": (1, 1), "south-west": (1, -1), "west": (0, -1),
}
CLASSES = list(DIRECTIONS)
HEIGHT, WIDTH = 32, 40
DIGIT_SIZE = 16
NUM_FRAMES = 24
#: pixels per frame along each moving axis. One: a motion classifier's evidence is where the
#: digit changes between frames, and its trailing edge lies outside the digit's box in the
#: later frame by this much, so a slower digit keeps the evidence close to where it is.
SPEED = 1
PER_CLASS = {"train": 160, "val": 24, "test": 45}
SEED = 20240607


@dataclass(frozen=True)
class Motion:
    """One video: a digit (its scikit-learn index), a direction and a start position."""

    digit: int
    label: int
    y0: int
    x0: int


def moving_digits_split(split: str, per_class: int | None = None, seed: int = SEED) -> list[Motion]:
    """The videos of ``split``: ``per_class`` digits of the digits' ``split`` (default
    :data:`PER_CLASS`), each with a start position, in every direction (class-major)."""
    if split not in SPLITS:
        raise DataError(f"moving_digits has the splits {', '.join(SPLITS)}, not {split!r}")
    pool = digits_split(split)
    n = PER_CLASS[split] if per_class is None else per_class
    if not 1 <= n <= len(pool):
        raise DataError(f"moving_digits:{split} has 1 to {len(pool)} videos per class, not {n}")
    rng = np.random.Generator(np.random.PCG64([seed, SPLITS.index(split)]))
    chosen = np.sort(rng.permutation(pool)[:n])
    starts = rng.integers(0, (HEIGHT, WIDTH), size=(n, 2))
    return [Motion(int(d), label, int(y), int(x)) for label in range(len(CLASSES)) for d, (y, x) in zip(chosen, starts)]


@lru_cache(maxsize=2048)
def _sprite(digit: int) -> np.ndarray:
    images, _ = digit_images()
    img = Image.fromarray(images[digit]).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(img)


def render(motion: Motion, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """The frames of a video, ``uint8 (T, 32, 40, 3)`` (grey, white digit on black)."""
    canvas = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    canvas[:DIGIT_SIZE, :DIGIT_SIZE] = _sprite(motion.digit)
    dy, dx = DIRECTIONS[CLASSES[motion.label]]
    frames = np.stack([np.roll(canvas, (motion.y0 + SPEED * dy * t, motion.x0 + SPEED * dx * t), axis=(0, 1))
                       for t in range(num_frames)])
    return np.repeat(frames[..., None], 3, axis=-1)


class MovingDigits(VideoDataset):
    """One split of the moving digits, rendered in memory (see the module docstring).

    Args:
        split: ``train``, ``val`` or ``test``.
        pipeline: the split's clips (:class:`~tessera.data.video.clips.ClipPipeline`).
        seed: the seed of the per-sample random generators (clip positions, crops).
        per_class: videos per class (default :data:`PER_CLASS`).
    """

    def __init__(self, split: str, pipeline: ClipPipeline, seed: int = 0, per_class: int | None = None) -> None:
        super().__init__(pipeline, seed)
        self.split = split
        self.motions = moving_digits_split(split, per_class)
        self.targets = [m.label for m in self.motions]
        self.classes = list(CLASSES)

    def open(self, index: int) -> FrameArray:
        return FrameArray(render(self.motions[index]), self.describe(index), self.pipeline.interpolation)

    def describe(self, index: int) -> str:
        m = self.motions[index]
        return f"moving_digits:{self.split}[{index}] (digit {m.digit} moving {CLASSES[m.label]})"


def write_moving_digits(root: str | os.PathLike, splits=SPLITS, per_class: int | None = None,
                        seed: int = SEED, progress=None) -> dict[str, int]:
    """Write the moving digits as mp4 files (H.264, 12 frames/s):
    ``root/<split>/<direction>/<n>.mp4``, the annotation lists ``root/<split>.txt``
    (``<split>/<direction>/<n>.mp4 <label>``, relative to ``root``) and ``root/classes.txt``.
    Returns the number of videos per split; ``progress(done, total)`` is called as it goes."""
    root = Path(root)
    jobs = {split: moving_digits_split(split, per_class, seed) for split in splits}
    total, done = sum(map(len, jobs.values())), 0
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    for split, motions in jobs.items():
        lines = []
        for i, m in enumerate(motions):
            rel = f"{split}/{CLASSES[m.label]}/{i:05d}.mp4"
            write_video(root / rel, render(m))
            lines.append(f"{rel} {m.label}\n")
            done += 1
            if progress is not None:
                progress(done, total)
        (root / f"{split}.txt").write_text("".join(lines))
    return {split: len(m) for split, m in jobs.items()}
