"""Data for training and evaluation: readers, built-in data sets, worker-side crops,
device-side augmentation and mixup, samplers and loaders.

The training loop knows data only through :func:`build_dataset` and
:func:`build_augment`, which dispatch on the recipe's ``data.kind``. A kind of data (images
here; videos in :mod:`tessera.data.video`) registers a :class:`DataKind` with
:func:`register_data_kind`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError, DataError
from .digit_scenes import DigitScenes
from .digits import Digits
from .images import BadSample, ImageDataset, ImageFolder
from .mixup import Mixup
from .splits import SubsetDataset, stratified_split
from .transforms import RandomResizedCropFlip, ResizeCenterCrop

if TYPE_CHECKING:
    from ..train.recipe import AugmentConfig, DataConfig
    from .augment import ImageAugment, VideoAugment


def __getattr__(name: str) -> Any:
    # the device-side augmentation brings in kornia: imported when a training run needs it,
    # so that inference, benchmarks and preprocessing start without it
    if name in ("ImageAugment", "VideoAugment"):
        from . import augment

        return getattr(augment, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BadSample", "DataKind", "DigitScenes", "Digits", "ImageAugment", "ImageDataset", "ImageFolder", "Mixup",
    "SubsetDataset", "VideoAugment", "build_augment", "build_dataset", "build_train_and_val", "data_kind",
    "register_data_kind", "split_root", "stratified_split",
]

#: the recipe key of each split's source
SPLIT_KEYS = {"train": "root", "val": "val_root", "test": "test_root"}


@dataclass(frozen=True)
class DataKind:
    """What the loop needs from a kind of data.

    Attributes:
        build: ``(data_cfg, source, split, classes, seed) -> Dataset`` whose items are
            ``(uint8 tensor, label)`` or :class:`BadSample`; ``split`` is ``train``
            (random crops) or ``val``/``test`` (deterministic); ``classes`` fixes the class
            order (``None`` for the training set, which defines it). The data set has
            ``classes`` and ``set_epoch(epoch)``, and ``num_views`` when its samples hold
            several views each (scored by the mean of their softmax).
        augment: ``(data_cfg, augment_cfg or None, mean, std) -> nn.Module`` mapping a device
            batch of ``uint8`` samples to the model's normalised input; ``None`` for evaluation.
        model_kwargs: ``data_cfg -> dict`` of constructor arguments the model needs to fit
            the data (``img_size`` for images).
        unit: what one sample is called in the progress reports (``img``, ``clip``).
    """

    build: Callable[..., Dataset]
    augment: Callable[..., nn.Module]
    model_kwargs: Callable[[Any], dict]
    unit: str = "img"


_KINDS: dict[str, DataKind] = {}
#: the kinds of this package beyond images, imported when first asked for (videos need PyAV)
_BUILTIN_KINDS = {"video": ".video", "segmentation": ".segmentation"}


def register_data_kind(name: str, kind: DataKind) -> None:
    _KINDS[name] = kind


def data_kind(name: str) -> DataKind:
    if name not in _KINDS and name in _BUILTIN_KINDS:
        importlib.import_module(_BUILTIN_KINDS[name], __name__)  # it registers itself
    if name not in _KINDS:
        known = sorted({*_KINDS, *_BUILTIN_KINDS})
        raise ConfigError(f"data.kind: unknown kind {name!r}; known kinds: {', '.join(known)}")
    return _KINDS[name]


def split_root(cfg: DataConfig, split: str) -> str | None:
    return getattr(cfg, SPLIT_KEYS[split])


def build_dataset(cfg: DataConfig, split: str = "train", classes: Sequence[str] | None = None,
                  seed: int = 0, source: str | None = None) -> Dataset:
    """The data set of ``split`` (``train``, ``val`` or ``test``) from the recipe's data
    section, or from ``source`` when given (a folder or a built-in set)."""
    source = source if source is not None else split_root(cfg, split)
    if not source:
        raise ConfigError(f"data.{SPLIT_KEYS[split]}: no data set given for the {split} split")
    return data_kind(cfg.kind).build(cfg, str(source), split, classes, seed)


def build_train_and_val(cfg: DataConfig, seed: int = 0) -> tuple[Dataset, Dataset | None, list[str]]:
    """The training and the validation set of a recipe, and a line saying where the
    validation set comes from when it is held out: ``data.val_root`` when given; else
    ``data.val_split`` of the training source, stratified and drawn with ``seed`` (the
    held-out samples get the evaluation crop and are not trained on); else none."""
    train = build_dataset(cfg, "train", seed=seed)
    if cfg.val_root:
        return train, build_dataset(cfg, "val", classes=train.classes, seed=seed), []
    if not cfg.val_split:
        return train, None, []
    kept, held = stratified_split(train.targets, cfg.val_split, seed)
    if not held:
        return train, None, [f"data.val_split={cfg.val_split:g}: every class has a single sample, none is held "
                             f"out; training without validation (give data.val_root)"]
    val = build_dataset(cfg, "val", classes=train.classes, seed=seed, source=cfg.root)
    note = (f"no data.val_root: {len(held)} of the {len(train)} training samples held out for validation "
            f"(data.val_split={cfg.val_split:g}, stratified, seed {seed})")
    return SubsetDataset(train, kept), SubsetDataset(val, held), [note]


def build_augment(cfg: DataConfig, augment: AugmentConfig | None, mean: Sequence[float],
                  std: Sequence[float]) -> nn.Module:
    """The device-side pipeline: training augmentation with ``augment``, else evaluation."""
    return data_kind(cfg.kind).augment(cfg, augment, mean, std)


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

#: built-in image sets: ``name -> (split, size, transform, seed) -> data set``; a source
#: ``name`` or ``name:split`` selects one (the split defaults to the role's)
BUILTIN_IMAGE_SETS: dict[str, Callable[..., ImageDataset]] = {"digits": Digits, "digit_scenes": DigitScenes}


def _image_transform(cfg: DataConfig, split: str):
    if split == "train":
        return RandomResizedCropFlip(cfg.img_size, cfg.scale, cfg.ratio, cfg.hflip, cfg.interpolation)
    return ResizeCenterCrop(cfg.img_size, cfg.crop_pct, cfg.interpolation)


def build_image_dataset(cfg: DataConfig, source: str, split: str, classes: Sequence[str] | None,
                        seed: int) -> ImageDataset:
    transform = _image_transform(cfg, split)
    if Path(source).is_dir():
        return ImageFolder(source, classes=classes, transform=transform, seed=seed,
                           skip_empty_classes=cfg.skip_empty_classes)
    name, _, which = source.partition(":")
    if name in BUILTIN_IMAGE_SETS:
        ds = BUILTIN_IMAGE_SETS[name](which or split, size=cfg.img_size, transform=transform, seed=seed)
        if classes is not None and list(classes) != ds.classes:
            raise DataError(f"{source}: its classes {ds.classes} are not the model's {list(classes)}")
        return ds
    raise DataError(f"{source}: no such directory (and not a built-in data set: {', '.join(BUILTIN_IMAGE_SETS)})")


def build_image_augment(cfg: DataConfig, augment: AugmentConfig | None, mean, std) -> nn.Module:
    from .augment import ImageAugment

    if augment is None:
        return ImageAugment(mean, std, train=False)
    return ImageAugment(mean, std, train=True, randaugment_n=augment.randaugment_n,
                        randaugment_m=augment.randaugment_m, randaugment_groups=augment.randaugment_groups,
                        color_jitter=augment.color_jitter, reprob=augment.reprob, noise=augment.noise)


register_data_kind("image", DataKind(build_image_dataset, build_image_augment,
                                     lambda cfg: {"img_size": cfg.img_size}))

