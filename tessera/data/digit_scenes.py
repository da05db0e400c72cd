"""``digit_scenes``: scikit-learn's handwritten digits placed at random positions and scales on
a cluttered canvas, with the ground truth of where each digit is: its box and, pixel by pixel,
its label map. Built in, nothing to download.

The same scenes serve two purposes:

* dense prediction: the label map gives every pixel ``0`` (background) or ``1 + digit``;
* checking explanations: with one digit per scene, the class is the digit and the box says
  where the evidence is, so a saliency map can be tested for pointing at it.

A scene is a dark canvas with a soft colour gradient, clutter (line strokes and blobs in
colours like the digits', which are background), and one or more digits, each upsampled
bicubically from 8x8 to its own size, drawn in a bright colour, without overlapping each
other. A digit's pixels are those where its upsampled sprite is at least
:data:`INK_THRESHOLD` of full intensity; the label map marks exactly those. The threshold
keeps the visible stroke: the faint fringe that bicubic upsampling spreads around it stays
background, and a stroke is still several pixels wide at the default sizes (20 to 32 pixels
per digit on a 64x64 canvas).

The digits of a split come from the digits' fixed split (:func:`tessera.data.digits.digits_split`),
so a test scene never shows a digit image seen in training, and everything is drawn from
NumPy's PCG64 with a fixed seed per split and scene: the set is the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DataError
from .digits import SPLITS, digit_images, digits_split
from .images import ImageDataset, Transform

SEED = 20261130
#: fraction of full intensity from which an upsampled digit pixel counts as the digit
INK_THRESHOLD = 0.3


@dataclass(frozen=True)
class PlacedDigit:
    """One digit of a scene: its scikit-learn index, its class, its top-left corner and side."""

    digit: int
    label: int
    y: int
    x: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive."""
        return self.x, self.y, self.x + self.size, self.y + self.size


@dataclass(frozen=True)
class Scene:
    """A canvas of ``height x width`` pixels, its digits, and the seed of its background."""

    height: int
    width: int
    digits: tuple[PlacedDigit, ...]
    seed: int


def make_scenes(split: str, count: int, height: int = 64, width: int = 64, digits_per_scene: tuple[int, int] = (1, 3),
                sizes: tuple[int, int] = (20, 32), seed: int = SEED) -> list[Scene]:
    """``count`` scenes of ``split``: each with a number of digits drawn from
    ``digits_per_scene`` (inclusive range), each digit of a side drawn from ``sizes``
    (inclusive), placed where it overlaps no other digit of the scene.

    The digit images are drawn from the digits' ``split`` so that the classes are balanced:
    scene after scene, digits cycle through a seeded permutation of the split."""
    if split not in SPLITS:
        raise DataError(f"digit scenes have the splits {', '.join(SPLITS)}, not {split!r}")
    lo, hi = digits_per_scene
    if not 1 <= lo <= hi:
        raise DataError(f"digits_per_scene must be a range (lo, hi) with 1 <= lo <= hi, not {digits_per_scene}")
    if not 4 <= sizes[0] <= sizes[1] <= min(height, width):
        raise DataError(f"digit sizes {sizes} do not fit a {height}x{width} canvas")
    pool = digits_split(split)
    _, targets = digit_images()
    rng = np.random.Generator(np.random.PCG64([seed, SPLITS.index(split)]))
    order = rng.permutation(pool)
    scenes, cursor = [], 0
    for i in range(count):
        placed: list[PlacedDigit] = []
        for _ in range(int(rng.integers(lo, hi + 1))):
            size = int(rng.integers(sizes[0], sizes[1] + 1))
            spot = _free_spot(rng, placed, size, height, width)
            if spot is None:  # the canvas is full for a digit of this size
                continue
            digit = int(order[cursor % len(order)])
            cursor += 1
            placed.append(PlacedDigit(digit, int(targets[digit]), spot[0], spot[1], size))
        scenes.append(Scene(height, width, tuple(placed), int(rng.integers(2**31))))
    return scenes


def _free_spot(rng: np.random.Generator, placed: list[PlacedDigit], size: int, height: int,
               width: int, tries: int = 50) -> tuple[int, int] | None:
    for _ in range(tries):
        y, x = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        if all(y + size <= p.y or p.y + p.size <= y or x + size <= p.x or p.x + p.size <= x for p in placed):
            return y, x
    return None


@lru_cache(maxsize=4096)
def digit_sprite(digit: int, size: int) -> np.ndarray:
    """The digit (scikit-learn index) upsampled bicubically to ``size x size``, float on 0..1."""
    images, _ = digit_images()
    img = Image.fromarray(images[digit]).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A dark gradient (each channel from 0 to 60 of 255) with clutter: strokes and blobs as
    bright as digits, but no digits."""
    low, high = rng.uniform(0, 60, 3), rng.uniform(0, 60, 3)
    ramp = np.linspace(0, 1, width if rng.random() < 0.5 else height, dtype=np.float32)
    ramp = ramp[None, :, None] if ramp.size == width else ramp[:, None, None]
    canvas = np.broadcast_to(low + (high - low) * ramp, (height, width, 3)).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(canvas))
    draw = ImageDraw.Draw(img)
    area = height * width / (64 * 64)
    for _ in range(int(rng.integers(3, 7) * area)):
        colour = tuple(int(c) for c in rng.integers(60, 256, 3))
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        if rng.random() < 0.7:
            length, angle = rng.uniform(6, 24), rng.uniform(0, np.pi)
            x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
            draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(1.5, 4)
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=colour)
    return img


def render_scene(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 (H, W, 3), labels uint8 (H, W))``: the scene, and per pixel ``0`` for
    background or ``1 + digit`` where a digit's ink is (see the module docstring)."""
    rng = np.random.Generator(np.random.PCG64(scene.seed))
    image = np.asarray(_background(rng, scene.height, scene.width), dtype=np.float32)
    labels = np.zeros((scene.height, scene.width), dtype=np.uint8)
    for p in scene.digits:
        sprite = digit_sprite(p.digit, p.size)[..., None]
        colour = rng.uniform(150, 256, 3).astype(np.float32)
        region = image[p.y : p.y + p.size, p.x : p.x + p.size]
        region[:] = region * (1 - sprite) + colour * sprite  # the digit over the clutter
        ink = sprite[..., 0] >= INK_THRESHOLD
        labels[p.y : p.y + p.size, p.x : p.x + p.size][ink] = 1 + p.label
    return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


# ---------------------------------------------------------------------------------------
# One-digit scenes as a classification set (``digit_scenes:train|val|test``)
# ---------------------------------------------------------------------------------------

#: scenes per split of the classification set
SCENES_PER_SPLIT = {"train": 2500, "val": 300, "test": 600}
#: digit sides per split: training also shows larger digits, which a model learns to tell
#: apart first; validation and test keep the scenes' own 20 to 32 pixels
SCENE_DIGIT_SIZES = {"train": (20, 44), "val": (20, 32), "test": (20, 32)}
#: the canvas of the classification set's scenes
SCENE_SIZE = 64


def scene_split(split: str, count: int | None = None) -> list[Scene]:
    """The one-digit scenes of the classification set's ``split`` (the first ``count``;
    default :data:`SCENES_PER_SPLIT`): 64x64 canvases, digits of :data:`SCENE_DIGIT_SIZES`."""
    if split not in SPLITS:
        raise DataError(f"digit_scenes has the splits {', '.join(SPLITS)}, not {split!r}")
    n = SCENES_PER_SPLIT[split] if count is None else count
    return make_scenes(split, n, SCENE_SIZE, SCENE_SIZE, digits_per_scene=(1, 1), sizes=SCENE_DIGIT_SIZES[split])


class DigitScenes(ImageDataset):
    """One split of the one-digit scenes as a classification set: the class is the digit,
    ``boxes[i]`` its box in scene ``i`` (where the evidence is). Scenes are 64x64 RGB;
    the transform crops and resizes them like any image (``size`` is not used: the model's
    ``img_size`` is the transform's).

    ``fresh`` (default: the training split) redraws every scene in every epoch: sample ``i``
    keeps its digit image, so its class, but gets a new place, size and colour among new
    clutter, seeded by the data set's seed, the epoch and ``i`` (the same on every machine
    and after a resume). 2500 digits' worth of scenes then never repeat, which a model from
    a few thousand images needs: on the same 2500 scenes every epoch it learns them by heart.
    ``boxes`` are those of the fixed scenes (``fresh=False``), what the pointing game uses."""

    def __init__(self, split: str = "train", size: int = SCENE_SIZE, transform: Transform | None = None,
                 seed: int = 0, count: int | None = None, fresh: bool | None = None) -> None:
        super().__init__(transform, seed)
        self.split = split
        self.scenes = scene_split(split, count)
        self.fresh = split == "train" if fresh is None else fresh
        self.targets = [s.digits[0].label for s in self.scenes]
        self.boxes = [s.digits[0].box for s in self.scenes]
        self.classes = [str(c) for c in range(10)]
        self._full: dict[int, np.ndarray] = {}  # rendered fixed scenes: drawing one costs more than a crop

    def scene(self, index: int) -> Scene:
        """Scene ``index`` as drawn in the current epoch: with ``fresh``, its digit (the same
        image, so the same class) at a new place, size and colour among new clutter."""
        scene = self.scenes[index]
        if not self.fresh:
            return scene
        rng = np.random.Generator(np.random.PCG64([self.seed, self.epoch, index, SEED]))
        lo, hi = SCENE_DIGIT_SIZES[self.split]
        size = int(rng.integers(lo, hi + 1))
        y, x = (int(v) for v in rng.integers(0, SCENE_SIZE - size + 1, 2))
        d = scene.digits[0]
        return Scene(scene.height, scene.width, (PlacedDigit(d.digit, d.label, y, x, size),), int(rng.integers(2**31)))

    def load(self, index: int) -> Image.Image:
        if self.fresh:
            return Image.fromarray(render_scene(self.scene(index))[0])
        if index not in self._full:
            self._full[index] = render_scene(self.scenes[index])[0]
        return Image.fromarray(self._full[index])

    def describe(self, index: int) -> str:
        d = self.scene(index).digits[0]
        return f"digit_scenes:{self.split}[{index}] (digit {d.label}, scikit-learn index {d.digit}, box {d.box})"
