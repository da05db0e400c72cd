"""Image data sets: an ImageFolder reader and the base class the built-in sets share, and
:func:`read_image`, the one function through which tessera reads an image file (training,
evaluation, prediction, frames folders of videos).

Samples are decoded with Pillow and cropped to a fixed size in the DataLoader's worker
processes; they leave the workers as ``uint8`` tensors ``(3, H, W)``. Augmentation that
works on a whole batch runs later on the device (:mod:`tessera.data.augment`).

A sample that cannot be read is not an error: it comes back as a :class:`BadSample` with its
path and the reason, the collate function drops it and the loop reports it once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..errors import DataError

log = logging.getLogger("tessera")

#: file endings read as images (case-insensitive)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")

#: what a transform gets and returns: a PIL image and a random generator -> a PIL image
Transform = Callable[[Image.Image, np.random.Generator], Image.Image]


@dataclass(frozen=True)
class BadSample:
    """A sample that could not be read: its index, where it lives and why."""

    index: int
    path: str
    reason: str


def error_reason(error: BaseException, path: str) -> str:
    """The first line of an error's message without the path it names (reported beside it)."""
    text = (getattr(error, "strerror", None) or str(error)).strip()
    text = text.splitlines()[0] if text else type(error).__name__
    return text[len(path) + 2 :] if text.startswith(f"{path}: ") else text


#: Pillow's modes of 16-bit unsigned samples
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
#: EXIF's orientation tag
_ORIENTATION = 0x0112


def _full_scale(values: np.ndarray) -> float:
    """The range a sample container without a fixed depth (Pillow's 32-bit ``I`` and ``F``)
    was written for: the smallest of 0-1 (floats only), 0-255, 0-65535 and the 32-bit range
    that holds its largest value. A 16-bit PNG or PGM that a decoder widened to ``I`` is
    16-bit; an 8-bit image stored as integers stays 8-bit."""
    top = float(np.nanmax(values)) if values.size else 0.0
    floats = np.issubdtype(values.dtype, np.floating)
    for scale in ((1.0,) if floats else ()) + (255.0, 65535.0, 2.0**31 - 1):
        if top <= scale:
            return scale
    return top


def to_rgb(img: Image.Image) -> Image.Image:
    """An image as 8-bit RGB, as it is meant to be seen.

    * Turned upright by its EXIF orientation (a phone photo stored sideways).
    * Samples deeper than 8 bits are scaled to 0-255, never clipped: 16-bit images
      (``I;16``) by 255/65535; 32-bit integer (``I``) and float (``F``) images over the range
      they were written for (see :func:`_full_scale`: floats in 0-1 are the convention of
      scientific and HDR tools). Pillow's own ``convert("RGB")`` clips them, so that a 16-bit
      photograph becomes white.
    * Everything else (palette, grey, CMYK, alpha) is converted by Pillow; alpha is dropped.
    """
    if img.getexif().get(_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        values = np.asarray(img)
        full = 65535.0 if img.mode in _SIXTEEN_BIT_MODES else _full_scale(values)
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=full, neginf=0.0)
        img = Image.fromarray(np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8), "L")
    return img if img.mode == "RGB" else img.convert("RGB")


def _open(path: str | os.PathLike) -> Image.Image:
    """The one place image files are opened: decoded at once (the file is closed on return).
    Raises ``OSError`` (and Pillow's errors) for a file that cannot be read; an empty file
    says so."""
    if os.path.getsize(path) == 0:  # Pillow only says it cannot identify it
        raise OSError("the file is empty")
    with Image.open(path) as img:
        img.load()
        return img


def read_image(path: str | os.PathLike) -> Image.Image:
    """Image files as the models see them (training, evaluation, prediction and frames
    folders all come here): ``path`` as 8-bit RGB, upright (:func:`to_rgb`)."""
    return to_rgb(_open(path))


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """A PNG label map as ``uint8 (H, W)`` class indices (mode ``L``, or ``P``: the palette
    indices are the classes, as in PASCAL VOC). Raises ``ValueError`` for a colour image."""
    img = _open(path)
    if img.mode not in ("L", "P", "I;16", "I"):
        raise ValueError(f"a label map of mode {img.mode}: expected one class index per pixel (mode L or P)")
    labels = np.array(img)
    if labels.dtype != np.uint8:
        if labels.max(initial=0) > 255:
            raise ValueError(f"label {labels.max()} does not fit 8 bits")
        labels = labels.astype(np.uint8)
    return labels


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL RGB image as a ``uint8`` tensor ``(3, H, W)``."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


class SampleDataset(Dataset):
    """Base class of the data sets whose samples are read and cropped in the workers.

    Subclasses set ``classes`` and ``targets`` and implement :meth:`sample` (index and
    random generator to a ``uint8`` tensor) and :meth:`describe` (index to a path or name
    for messages). The generator is seeded by ``(seed, epoch, index)``: the random crop of a
    sample depends only on those three numbers, not on the worker that made it, the number
    of processes or where a resumed run restarted. A sample that raises one of
    :attr:`read_errors` comes back as a :class:`BadSample`.
    """

    classes: list[str]
    targets: list[int]
    #: exceptions that mean "this sample cannot be read" (anything else is a bug and raised)
    read_errors: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.targets)

    def sample(self, index: int, rng: np.random.Generator) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"sample {index}"

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | BadSample:
        try:
            return self.sample(index, np.random.default_rng((self.seed, self.epoch, index))), self.targets[index]
        except self.read_errors as e:
            where = self.describe(index)
            return BadSample(index, where, error_reason(e, where))


class ImageDataset(SampleDataset):
    """Base class of the image sets: subclasses implement :meth:`load` (index to a PIL
    image); ``transform`` is the worker-side crop (:mod:`tessera.data.transforms`)."""

    def __init__(self, transform: Transform | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.transform = transform

    def load(self, index: int) -> Image.Image:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        img = self.load(index)
        if self.transform is not None:
            img = self.transform(img, rng)
        return pil_to_tensor(img)


def find_classes(root: Path) -> list[str]:
    """The sub-directories of ``root`` (hidden ones aside), sorted: the class order."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def class_folder_samples(root: Path, classes: Sequence[str] | None,
                         files_under: Callable[[Path], tuple[list[Path], list[Path]]], none_found: str,
                         not_samples: str, skip_empty_classes: bool = False,
                         noun: str = "samples") -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, [(path, label)])`` of a folder of class folders: ``files_under(class
    folder)`` gives a class's samples and the files it leaves out, which are named once in a
    warning (``"{root}: ignored N {not_samples}: ..."``). ``classes`` fixes the class order (a
    validation folder takes the training folder's; a folder of another name is an error), by
    default the sub-directories of ``root``. No sample at all is a DataError ``"{root}: no
    {none_found}"``.

    When the classes come from the folder, a class folder without samples would give the
    model an output for a class it has no data of (torchvision's ImageFolder refuses it too):
    it is a DataError naming the folder (``noun``: what the samples are called), or, with
    ``skip_empty_classes``, it is left out of the classes with a warning. (A validation
    folder may lack samples of some classes.)"""
    if not root.is_dir():
        raise DataError(f"{root}: no such directory")
    found = find_classes(root)
    from_folder = classes is None
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{root}: class folders not among the model's {len(classes)} classes: "
                            f"{', '.join(unknown[:10])}")
    per_class: dict[str, list[Path]] = {}
    ignored: list[Path] = []
    for name in classes:
        if (root / name).is_dir():
            per_class[name], left_out = files_under(root / name)
            ignored += left_out
    report_ignored(root, ignored, not_samples)
    if not any(per_class.values()):
        raise DataError(f"{root}: no {none_found}")
    empty = [name for name in classes if from_folder and not per_class.get(name)]
    if empty and not skip_empty_classes:
        more = f" (and {len(empty) - 1} more empty class folders)" if len(empty) > 1 else ""
        raise DataError(f"{root / empty[0]}: a class folder without {noun}{more}; remove it, or leave empty "
                        f"classes out with data.skip_empty_classes=true")
    if empty:
        log.warning("%s: left out %d empty class folders (data.skip_empty_classes): %s", root, len(empty),
                    ", ".join(empty))
        classes = [name for name in classes if name not in empty]
    samples = [(str(p), idx) for idx, name in enumerate(classes) for p in per_class.get(name, [])]
    return list(classes), samples


def report_ignored(root: Path, files: Sequence[Path], what: str, shown: int = 20) -> None:
    """Name the files of a data set that are not read as samples, once, when the set is built."""
    if not files:
        return
    names = ", ".join(str(f) for f in files[:shown]) + (f" and {len(files) - shown} more" if len(files) > shown else "")
    log.warning("%s: ignored %d %s: %s", root, len(files), what, names)


def _images_under(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(image files, other files)`` under ``folder``, by their endings; hidden files and
    folders are left out of both."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if not f.startswith("."):
                (images if f.lower().endswith(IMG_EXTENSIONS) else others).append(Path(dirpath) / f)
    return images, others


class ImageFolder(ImageDataset):
    """``root/<class>/**/*.jpg`` (any of :data:`IMG_EXTENSIONS`); classes in sorted order.

    Args:
        root: the folder of class folders.
        classes: the class names to use (a validation folder takes the training folder's
            classes so that indices agree); a folder of another name is an error. By default,
            the sub-directories of ``root``.
        transform: worker-side crop (see :mod:`tessera.data.transforms`).
        seed: the seed of the per-sample random generators.
        skip_empty_classes: leave class folders without images out of the classes (with a
            warning) instead of refusing them; see :func:`class_folder_samples`.
    """

    def __init__(self, root: str | os.PathLike, classes: Sequence[str] | None = None,
                 transform: Transform | None = None, seed: int = 0, skip_empty_classes: bool = False) -> None:
        super().__init__(transform, seed)
        self.root = Path(root)
        self.classes, self.samples = class_folder_samples(
            self.root, classes, _images_under,
            f"images found (expected {self.root}/<class>/<image> with one of {', '.join(IMG_EXTENSIONS)})",
            "files that are not images (by their ending)", skip_empty_classes, "images")
        self.targets = [t for _, t in self.samples]

    def load(self, index: int) -> Image.Image:
        return read_image(self.samples[index][0])

    def describe(self, index: int) -> str:
        return self.samples[index][0]
