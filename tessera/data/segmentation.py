"""Semantic segmentation data (``data.kind: segmentation``): images with per-pixel label maps.

Sources (``data.root``, ``data.val_root``, ``data.test_root``, or ``tessera evaluate --data``):

* a data set folder in one of the common layouts (``data.layout``, detected by default):

  - ``ade20k``: ``images/<split>/*.jpg`` and ``annotations/<split>/*.png`` (ADEChallengeData2016;
    splits ``training`` and ``validation``; its label 0 is "other": ``reduce_zero_label``);
  - ``voc``: ``JPEGImages/*.jpg``, ``SegmentationClass/*.png`` (or ``SegmentationClassAug``)
    and the split lists ``ImageSets/Segmentation/<split>.txt`` (``train``, ``val``);
  - ``cityscapes``: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (``train``, ``val``);
  - ``pairs``: ``images/`` and ``annotations/`` (or ``labels/``, ``masks/``), an image and its
    label map sharing a name, no splits.

  The split is the role's (``training``/``train`` for ``data.root``, ``validation``/``val``
  for the others) unless the source names one: ``PATH:SPLIT``. The class names come from
  ``classes.txt`` in the folder, else ``data.class_names``, else the layout's own (ADE20K's
  150, VOC's 21, Cityscapes' 19).
* ``digit_scenes`` (``digit_scenes:train|val|test``): the built-in scenes of
  :mod:`tessera.data.digit_scenes`, 11 classes (background and the ten digits).

Label maps are PNGs with one class index per pixel (mode ``L`` or ``P``); ``ignore_index``
(255) marks pixels that count nowhere. A sample whose image or label map cannot be read, or
whose sizes differ, is reported and skipped like an unreadable image.

Training samples go through mmseg's pipeline, the same random draws for the image and its
labels (:class:`SegmentationTrainTransform`): a random rescale keeping the aspect ratio, a
random crop (redrawn while one class dominates it), a horizontal flip, photometric
distortion of the image, and padding to the crop (labels padded with ``ignore_index``).
Evaluation samples are the image and its labels as they are: the rescaling to the test
scale, the sliding windows and the flips happen on the device
(:mod:`tessera.train.seg_inference`), and the predictions are scored at the labels' size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError
from . import DataKind, register_data_kind
from .augment import ImageAugment
from .images import IMG_EXTENSIONS, BadSample, SampleDataset, error_reason, log, read_image, read_label_map
from .seg_classes import ADE20K, CITYSCAPES, VOC

if TYPE_CHECKING:
    from ..train.recipe import DataConfig

LAYOUTS = ("ade20k", "voc", "cityscapes", "pairs")
#: the folder names a split may have, by role
SPLIT_NAMES = {"train": ("training", "train"), "val": ("validation", "val"), "test": ("validation", "val", "test")}
LABEL_DIRS = ("annotations", "labels", "masks")


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def reduce_zero_label(labels: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """ADE20K's labels: 0 ("other") becomes ``ignore_index``, every other label ``l`` becomes
    ``l - 1`` (``ignore_index`` itself stays)."""
    out = labels.astype(np.int16) - 1
    out[labels == 0] = ignore_index
    out[labels == ignore_index] = ignore_index
    return out.astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Layouts
# ---------------------------------------------------------------------------------------


def _images_in(folder: Path, suffix: str = "") -> dict[str, Path]:
    """Image files under ``folder`` by name without ``suffix`` + extension (or without the
    extension), recursively, hidden files left out."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue
        name = path.name
        if suffix:
            if not name.endswith(suffix):
                continue
            key = str(path.relative_to(folder))[: -len(suffix)]
        elif name.lower().endswith(IMG_EXTENSIONS):
            key = str(path.relative_to(folder).with_suffix(""))
        else:
            continue
        found[key] = path
    return found


def _split_dir(parent: Path, split: str | None, role: str) -> Path:
    candidates = [split] if split else list(SPLIT_NAMES[role])
    for name in candidates:
        if (parent / name).is_dir():
            return parent / name
    raise DataError(f"{parent}: no split folder {' or '.join(candidates)}")


def detect_layout(root: Path) -> str:
    """The layout of a data set folder (see the module docstring)."""
    if (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir():
        return "cityscapes"
    if (root / "JPEGImages").is_dir() and any((root / d).is_dir() for d in ("SegmentationClass",
                                                                           "SegmentationClassAug")):
        return "voc"
    if (root / "images").is_dir() and any((root / d).is_dir() for d in LABEL_DIRS):
        label_dir = next(root / d for d in LABEL_DIRS if (root / d).is_dir())
        has_splits = any(p.is_dir() for p in (root / "images").iterdir()) and any(
            p.is_dir() for p in label_dir.iterdir())
        return "ade20k" if has_splits else "pairs"
    raise DataError(f"{root}: not a segmentation data set folder (expected images/ and annotations/, "
                    f"JPEGImages/ and SegmentationClass/, or leftImg8bit/ and gtFine/)")


def find_pairs(root: Path, layout: str, split: str | None, role: str) -> tuple[list[tuple[Path, Path]], int]:
    """``([(image, label map)], images without a label map)`` of a split of ``root``."""
    if layout in ("ade20k", "pairs"):
        label_root = next((root / d for d in LABEL_DIRS if (root / d).is_dir()), None)
        if not (root / "images").is_dir() or label_root is None:
            raise DataError(f"{root}: the {layout} layout needs images/ and annotations/ folders")
        if layout == "ade20k":
            image_dir = _split_dir(root / "images", split, role)
            label_dir = label_root / image_dir.name
        else:
            image_dir, label_dir = root / "images", label_root
        images, labels = _images_in(image_dir), _images_in(label_dir)
    elif layout == "voc":
        label_dir = next(root / d for d in ("SegmentationClass", "SegmentationClassAug") if (root / d).is_dir())
        images, labels = _images_in(root / "JPEGImages"), _images_in(label_dir)
        split = split or SPLIT_NAMES[role][-1]
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if listing.is_file():
            names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
            images = {n: images[n] for n in names if n in images}
            labels = {n: labels[n] for n in names if n in labels}
    elif layout == "cityscapes":
        image_dir = _split_dir(root / "leftImg8bit", split, role)
        images = _images_in(image_dir, "_leftImg8bit.png")
        labels = _images_in(root / "gtFine" / image_dir.name, "_gtFine_labelTrainIds.png")
    else:
        raise DataError(f"unknown segmentation layout {layout!r}; known: {', '.join(LAYOUTS)}")
    pairs = [(images[k], labels[k]) for k in sorted(images) if k in labels]
    return pairs, len(images) - len(pairs)


def layout_classes(layout: str) -> tuple[str, ...] | None:
    return {"ade20k": ADE20K, "voc": VOC, "cityscapes": CITYSCAPES}.get(layout)


# ---------------------------------------------------------------------------------------
# Joint transforms
# ---------------------------------------------------------------------------------------


def rescale_size(width: int, height: int, scale: Sequence[int]) -> tuple[int, int]:
    """``(width, height)`` rescaled by ``min(long / max(w, h), short / min(w, h))`` for
    ``scale = (long, short)`` in either order (mmcv's ``rescale_size``: the largest size
    that fits both bounds, the aspect ratio kept, rounded half up)."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resizing of ``uint8 (H, W, 3)`` without antialiasing (OpenCV's
    ``INTER_LINEAR``, mmseg's), rounded back to ``uint8``."""
    if image.shape[:2] == (height, width):
        return image
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
    # rounded in NumPy: tiny element-wise torch ops pay for waking its thread pool
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def resize_labels(labels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resizing of ``uint8 (H, W)`` labels (source index ``floor(i * scale)``,
    as OpenCV's ``INTER_NEAREST``)."""
    if labels.shape == (height, width):
        return labels
    x = torch.from_numpy(np.ascontiguousarray(labels))[None, None].float()
    return F.interpolate(x, size=(height, width), mode="nearest")[0, 0].numpy().astype(np.uint8)


def photometric_distortion(image: np.ndarray, rng: np.random.Generator, brightness: float = 32,
                           contrast: tuple[float, float] = (0.5, 1.5), saturation: tuple[float, float] = (0.5, 1.5),
                           hue: int = 18) -> np.ndarray:
    """mmseg's ``PhotoMetricDistortion`` of ``uint8 (H, W, 3)``: each step with probability
    1/2: brightness (+U(-32, 32)), contrast (x U(0.5, 1.5)) either first or last, saturation
    (x U(0.5, 1.5)) and hue (+U{-18..17} on OpenCV's 0-180 scale) in HSV; values clipped and
    truncated to ``uint8`` after each step, as there."""

    def convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    if rng.integers(2):
        image = convert(image, beta=rng.uniform(-brightness, brightness))
    contrast_first = rng.integers(2) == 1
    if contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(*contrast))
    if rng.integers(2):
        hsv = np.array(Image.fromarray(image).convert("HSV"))
        hsv[..., 1] = convert(hsv[..., 1], alpha=rng.uniform(*saturation))
        image = np.array(Image.fromarray(hsv, "HSV").convert("RGB"))
    if rng.integers(2):
        hsv = np.array(Image.fromarray(image).convert("HSV"))
        shift = round(int(rng.integers(-hue, hue)) * 256 / 180)  # PIL's hue runs over 0-255
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
        image = np.array(Image.fromarray(hsv, "HSV").convert("RGB"))
    if not contrast_first and rng.integers(2):
        image = convert(image, alpha=rng.uniform(*contrast))
    return image


class SegmentationTrainTransform:
    """mmseg's training pipeline on an image and its labels, with the same random draws for
    both: ``Resize(img_scale, ratio_range, keep_ratio)``, ``RandomCrop(crop, cat_max_ratio)``,
    ``RandomFlip(hflip)``, ``PhotoMetricDistortion`` (optional), ``Pad(crop)`` (the image
    with 0, the labels with ``ignore_index``).

    Call: ``(image uint8 (H, W, 3), labels uint8 (H, W), rng) -> (image (h, w, 3), labels
    (h, w))`` with ``(h, w) = crop``.
    """

    def __init__(self, crop: Sequence[int], img_scale: Sequence[int] | None = None,
                 ratio_range: Sequence[float] = (0.5, 2.0), cat_max_ratio: float = 1.0, hflip: float = 0.5,
                 photometric: bool = False, ignore_index: int = 255) -> None:
        self.crop = tuple(crop)
        self.img_scale, self.ratio_range = img_scale, tuple(ratio_range)
        self.cat_max_ratio, self.hflip, self.photometric = cat_max_ratio, hflip, photometric
        self.ignore_index = ignore_index

    def _crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        top = int(rng.integers(0, max(height - self.crop[0], 0) + 1))
        left = int(rng.integers(0, max(width - self.crop[1], 0) + 1))
        return top, left

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = labels.shape
        ratio = rng.uniform(*self.ratio_range)
        base = self.img_scale if self.img_scale is not None else (w, h)
        new_w, new_h = rescale_size(w, h, (int(base[0] * ratio), int(base[1] * ratio)))
        image, labels = resize_image(image, new_w, new_h), resize_labels(labels, new_w, new_h)
        ch, cw = self.crop
        top, left = self._crop_box(new_h, new_w, rng)
        if self.cat_max_ratio < 1.0:  # up to 10 draws, as mmseg's RandomCrop
            for _ in range(10):
                values, counts = np.unique(labels[top : top + ch, left : left + cw], return_counts=True)
                counts = counts[values != self.ignore_index]
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                top, left = self._crop_box(new_h, new_w, rng)
        image, labels = image[top : top + ch, left : left + cw], labels[top : top + ch, left : left + cw]
        if self.hflip > 0 and rng.random() < self.hflip:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if self.photometric:
            image = photometric_distortion(np.ascontiguousarray(image), rng)
        pad_h, pad_w = ch - image.shape[0], cw - image.shape[1]
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
            labels = np.pad(labels, ((0, pad_h), (0, pad_w)), constant_values=self.ignore_index)
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)


# ---------------------------------------------------------------------------------------
# Data sets
# ---------------------------------------------------------------------------------------


class SegmentationDataset(SampleDataset):
    """Base class of the segmentation sets: subclasses implement :meth:`load` (index to
    ``(image uint8 (H, W, 3), labels uint8 (H, W))``) and :meth:`describe`, and set
    ``classes``. Items are ``(image uint8 (3, H, W), labels uint8 (H, W))`` tensors, or a
    :class:`BadSample`.

    Args:
        transform: the joint training transform (None: the sample as it is).
        reduce_zero_label: apply :func:`reduce_zero_label` to the labels.
        ignore_index: the label that counts nowhere.
        seed: the seed of the per-sample random generators.
    """

    classes: list[str]

    def __init__(self, transform: SegmentationTrainTransform | None = None, reduce_zero_label: bool = False,
                 ignore_index: int = 255, seed: int = 0) -> None:
        super().__init__(seed)
        self.transform = transform
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.load(index)
        if image.shape[:2] != labels.shape:
            raise ValueError(f"the image is {image.shape[1]}x{image.shape[0]} but its label map "
                             f"{labels.shape[1]}x{labels.shape[0]}")
        if self.reduce_zero_label:
            labels = reduce_zero_label(labels, self.ignore_index)
        if self.transform is not None:
            image, labels = self.transform(image, labels, rng)
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous(), torch.from_numpy(
            np.ascontiguousarray(labels))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor] | BadSample:
        try:
            return self.sample(index, np.random.default_rng((self.seed, self.epoch, index)))
        except self.read_errors as e:
            where = self.describe(index)
            return BadSample(index, where, error_reason(e, where))


class SegmentationFolder(SegmentationDataset):
    """A data set folder in one of the :data:`LAYOUTS` (see the module docstring).

    Args:
        root: the data set folder.
        split: the split folder or list name (None: the role's).
        role: ``train``, ``val`` or ``test`` (which split names to look for).
        layout: one of :data:`LAYOUTS`, or ``auto``.
        classes: the class names (None: ``classes.txt``, ``class_names``, or the layout's).
        class_names: a file of class names, one per line.
        Others: as :class:`SegmentationDataset`.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = None, role: str = "train", layout: str = "auto",
                 classes: Sequence[str] | None = None, class_names: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such directory")
        self.layout = detect_layout(self.root) if layout == "auto" else layout
        self.pairs, unlabelled = find_pairs(self.root, self.layout, split, role)
        if not self.pairs:
            raise DataError(f"{self.root}: no image with a label map found ({self.layout} layout)")
        if unlabelled:
            log.warning("%s: %d images without a label map are left out", self.root, unlabelled)
        own = self._class_names(class_names)
        if classes is not None and own is not None and list(own) != list(classes):
            raise DataError(f"{self.root}: its classes ({len(own)}) are not the model's ({len(classes)})")
        if classes is None and own is None:
            raise DataError(f"{self.root}: no class names; put them in {self.root / 'classes.txt'} (one per line, "
                            f"in label order) or give data.class_names")
        self.classes = list(classes if classes is not None else own)

    def _class_names(self, class_names: str | None) -> list[str] | None:
        for path in (self.root / "classes.txt", Path(class_names) if class_names else None):
            if path is not None and path.is_file():
                return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        names = layout_classes(self.layout)
        return list(names) if names is not None else None

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.pairs[index]
        return np.array(read_image(image_path)), read_label_map(label_path)

    def describe(self, index: int) -> str:
        return str(self.pairs[index][0])


#: scenes per split of the built-in digit scenes
DIGIT_SCENE_COUNTS = {"train": 2000, "val": 200, "test": 400}
DIGIT_SCENE_CLASSES = ["background", *(str(d) for d in range(10))]
DIGIT_SCENE_SIZE = 64
DIGIT_SIZES = (20, 32)
DIGITS_PER_SCENE = (1, 3)


@lru_cache(maxsize=6)
def _rendered_scenes(split: str, count: int, size: int, digit_sizes: tuple[int, int],
                     per_scene: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    from .digit_scenes import make_scenes, render_scene

    scenes = make_scenes(split, count, size, size, digits_per_scene=per_scene, sizes=digit_sizes)
    rendered = [render_scene(s) for s in scenes]
    return np.stack([r[0] for r in rendered]), np.stack([r[1] for r in rendered])


class DigitScenes(SegmentationDataset):
    """The built-in digit scenes (:mod:`tessera.data.digit_scenes`): ``size x size``
    canvases with ``digits_per_scene`` digits of ``digit_sizes`` pixels; label 0
    background, ``1 + d`` digit ``d``. A fixed split: the scenes of a split use only that
    split's digit images, and the validation and test scenes are the same on every machine.

    ``fresh=True`` (the training split) draws a new scene for every sample of every epoch
    (seeded by the data set's seed, the epoch and the index): the training digits at ever
    new places, sizes and colours, among new clutter.
    """

    def __init__(self, split: str = "train", count: int | None = None, size: int = DIGIT_SCENE_SIZE,
                 digit_sizes: tuple[int, int] = DIGIT_SIZES, digits_per_scene: tuple[int, int] = DIGITS_PER_SCENE,
                 fresh: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if split not in DIGIT_SCENE_COUNTS:
            raise DataError(f"digit_scenes has the splits {', '.join(DIGIT_SCENE_COUNTS)}, not {split!r}")
        self.split, self.count = split, count or DIGIT_SCENE_COUNTS[split]
        self.size, self.digit_sizes, self.digits_per_scene = size, tuple(digit_sizes), tuple(digits_per_scene)
        self.fresh = fresh
        if fresh:
            self.set_epoch(0)
        else:
            self.images, self.labels = _rendered_scenes(split, self.count, size, self.digit_sizes,
                                                        self.digits_per_scene)
        self.classes = list(DIGIT_SCENE_CLASSES)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self.fresh:  # the epoch's scenes (drawn at once: cheap), rendered sample by sample
            from .digit_scenes import make_scenes

            seed = int(np.random.default_rng((self.seed, epoch)).integers(2**31))
            self.scenes = make_scenes(self.split, self.count, self.size, self.size, self.digits_per_scene,
                                      self.digit_sizes, seed)

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self.fresh:
            from .digit_scenes import render_scene

            return render_scene(self.scenes[index])
        return self.images[index], self.labels[index]

    def describe(self, index: int) -> str:
        return f"digit_scenes:{self.split}[{index}]"


# ---------------------------------------------------------------------------------------
# The data kind
# ---------------------------------------------------------------------------------------


def crop_size(cfg: DataConfig) -> tuple[int, int]:
    return tuple(cfg.crop_size) if cfg.crop_size is not None else (cfg.img_size, cfg.img_size)


def train_transform(cfg: DataConfig) -> SegmentationTrainTransform:
    return SegmentationTrainTransform(crop_size(cfg), cfg.img_scale, cfg.ratio_range, cfg.cat_max_ratio, cfg.hflip,
                                      cfg.photometric, cfg.ignore_index)


def _split_source(source: str) -> tuple[str, str | None]:
    """``PATH:SPLIT`` -> ``(PATH, SPLIT)``; a path that exists as given has no split."""
    if Path(source).exists() or ":" not in source:
        return source, None
    path, _, split = source.rpartition(":")
    return path, split or None


def build_segmentation_dataset(cfg: DataConfig, source: str, split: str, classes: Sequence[str] | None,
                               seed: int) -> SegmentationDataset:
    common = dict(transform=train_transform(cfg) if split == "train" else None, ignore_index=cfg.ignore_index,
                  seed=seed)
    path, which = _split_source(source)
    if path == "digit_scenes":
        ds = DigitScenes(which or split, fresh=split == "train", **common)
        if classes is not None and list(classes) != ds.classes:
            raise DataError(f"{source}: its classes {ds.classes} are not the model's {list(classes)}")
        return ds
    if not Path(path).is_dir():
        raise DataError(f"{source}: no such directory (and not the built-in digit_scenes)")
    return SegmentationFolder(path, which, split, cfg.layout, classes, cfg.class_names,
                              reduce_zero_label=cfg.reduce_zero_label, **common)


def build_segmentation_augment(cfg: DataConfig, augment, mean, std) -> ImageAugment:
    """Normalisation only: the training augmentation happens in the workers, on the image
    and its labels together."""
    return ImageAugment(mean, std, train=False)


register_data_kind("segmentation", DataKind(build_segmentation_dataset, build_segmentation_augment,
                                            lambda cfg: {"img_size": crop_size(cfg)}))
