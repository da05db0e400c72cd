"""Video data: frames read by index (:mod:`.io`), clip sampling (:mod:`.sampling`), the
worker-side clips and crops of each split (:mod:`.clips`), and the data sets (:mod:`.datasets`).

This module registers the ``video`` kind of data (``data.kind: video``): a source is a folder
of class folders, an annotation list (a file), or a built-in set (``moving_digits:train``).
Samples leave the workers as ``uint8 (T, H, W, 3)`` clips (``(V, T, H, W, 3)`` with several
test views) and become normalised ``(B, 3, T, H, W)`` input on the device
(:class:`tessera.data.augment.VideoAugment`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ...errors import DataError
from .. import DataKind, register_data_kind
from .clips import ClipPipeline, three_crop_boxes
from .datasets import VideoDataset, VideoFolder, VideoList
from .io import VIDEO_EXTENSIONS, FrameArray, FrameFolder, UnreadableVideo, VideoFile, open_video, write_video
from .sampling import interval_clips, sample_frames, uniform_clip

if TYPE_CHECKING:
    from ...train.recipe import AugmentConfig, DataConfig

__all__ = [
    "BUILTIN_VIDEO_SETS", "ClipPipeline", "FrameArray", "FrameFolder", "UnreadableVideo", "VideoDataset", "VideoFile",
    "VideoFolder", "VideoList", "build_video_dataset", "interval_clips", "open_video", "sample_frames",
    "three_crop_boxes", "uniform_clip", "write_video",
]


def _moving_digits(split: str, pipeline: ClipPipeline, seed: int) -> VideoDataset:
    from ..moving_digits import MovingDigits

    return MovingDigits(split, pipeline, seed)


#: built-in video sets: ``name -> (split, pipeline, seed) -> data set``; a source ``name`` or
#: ``name:split`` selects one (the split defaults to the role's)
BUILTIN_VIDEO_SETS: dict[str, Callable[..., VideoDataset]] = {"moving_digits": _moving_digits}


def build_video_dataset(cfg: DataConfig, source: str, split: str, classes: Sequence[str] | None,
                        seed: int) -> VideoDataset:
    """The data set of ``source`` for ``split`` (``train``, ``val`` or ``test``)."""
    pipeline = ClipPipeline(cfg, split)
    path = Path(source)
    if path.is_dir():
        return VideoFolder(path, pipeline, classes, seed, cfg.skip_empty_classes)
    if path.is_file():
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            raise DataError(f"{path}: one video, not a data set (give a folder of class folders or an annotation "
                            f"list; tessera predict scores single videos)")
        names = cfg.class_names if classes is None else None
        return VideoList(path, pipeline, cfg.video_prefix, classes, names, seed)
    name, _, which = source.partition(":")
    if name in BUILTIN_VIDEO_SETS:
        ds = BUILTIN_VIDEO_SETS[name](which or split, pipeline, seed)
        if classes is not None and list(classes) != ds.classes:
            raise DataError(f"{source}: its classes {ds.classes} are not the model's {list(classes)}")
        return ds
    raise DataError(f"{source}: no such directory or annotation list (and not a built-in data set: "
                    f"{', '.join(BUILTIN_VIDEO_SETS)})")


def build_video_augment(cfg: DataConfig, augment: AugmentConfig | None, mean, std) -> nn.Module:
    from ..augment import VideoAugment

    if augment is None:
        return VideoAugment(mean, std, train=False)
    return VideoAugment(mean, std, train=True, hflip=cfg.hflip, randaugment_n=augment.randaugment_n,
                        randaugment_m=augment.randaugment_m, randaugment_groups=augment.randaugment_groups,
                        color_jitter=augment.color_jitter, reprob=augment.reprob, noise=augment.noise)


register_data_kind("video", DataKind(build_video_dataset, build_video_augment, lambda cfg: {}, unit="clip"))
