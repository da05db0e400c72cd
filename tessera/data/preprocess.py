"""Preprocessing as data: what a model's weights expect, and the transforms that give it.

A *data config* is a plain dict in the keys of a training run's ``data`` section, so the
same code reads the preprocessing of published weights, of a run, and of a bare model:

* ``kind``: ``"image"`` or ``"video"``; ``img_size``: the square side the model sees;
  ``input_size``: ``(C, H, W)`` or ``(C, T, H, W)``;
* ``crop_pct`` and ``resize``: evaluation resizes the short side to
  ``resize = floor(img_size / crop_pct)`` and cuts the centre ``img_size`` square;
* ``interpolation`` (``bicubic``, ``bilinear``), ``mean``, ``std`` (on 0..1 pixels);
* videos also: ``clip_len``, ``frame_interval`` (or ``frame_uniform``), ``num_clips`` x
  ``num_crops`` test views (see :mod:`tessera.data.video.clips`).

``tessera.data_config(model_or_name)`` gives it; ``eval_transform`` and ``train_transform``
turn it into callables (a PIL image, or a video, to the model's normalised input).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

#: the official Video Swin Kinetics test views, for video models without their own
DEFAULT_VIDEO_VIEWS = {"clip_len": 32, "frame_interval": 2, "num_clips": 4, "num_crops": 3, "frame_uniform": False}


def make_data_config(img_size: int, crop_pct: float, interpolation: str, mean: Sequence[float],
                     std: Sequence[float], video: Mapping[str, Any] | None = None, in_chans: int = 3) -> dict[str, Any]:
    """A data config (see the module docstring) from its parts; ``video`` holds the clip and
    view keys of a video model."""
    cfg: dict[str, Any] = {
        "kind": "video" if video else "image",
        "img_size": int(img_size),
        "input_size": (in_chans, int(img_size), int(img_size)),
        "crop_pct": float(crop_pct),
        "resize": math.floor(img_size / crop_pct),
        "interpolation": interpolation,
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
    }
    if video:
        views = {**DEFAULT_VIDEO_VIEWS, **video}
        cfg.update(views)
        cfg["input_size"] = (in_chans, views["clip_len"], int(img_size), int(img_size))
    return cfg


def model_data_config(model: Any) -> dict[str, Any]:
    """A model's own data config: its weights' (``pretrained_cfg``) when it has them, else
    from its ``default_cfg`` (video models get the official Kinetics views)."""
    pretrained = getattr(model, "pretrained_cfg", None) or {}
    if "data" in pretrained:
        return dict(pretrained["data"])
    d = getattr(model, "default_cfg", None) or {}
    size = tuple(d.get("input_size", (3, 224, 224)))
    video = {**DEFAULT_VIDEO_VIEWS, "clip_len": size[1]} if len(size) == 4 else None
    return make_data_config(size[-1], d.get("crop_pct", 0.875), d.get("interpolation", "bicubic"),
                            d.get("mean", (0.485, 0.456, 0.406)), d.get("std", (0.229, 0.224, 0.225)), video,
                            in_chans=size[0])


def complete_data_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A run's ``data`` section (or any partial config) with every key of a data config."""
    video = {k: data[k] for k in DEFAULT_VIDEO_VIEWS if k in data} if data.get("kind") == "video" else None
    cfg = make_data_config(data.get("img_size", 224), data.get("crop_pct", 0.875), data.get("interpolation", "bicubic"),
                           data.get("mean") or (0.485, 0.456, 0.406), data.get("std") or (0.229, 0.224, 0.225),
                           video if data.get("kind") == "video" else None)
    return {**data, **{k: v for k, v in cfg.items() if k not in data or data[k] is None}}


def data_config(model_or_name: Any) -> dict[str, Any]:
    """The preprocessing a model's weights expect, as a data config (module docstring).

    Takes a ``name.tag`` (the published weights' own evaluation), a registered name (its
    default weights', else the model's defaults), a model object, a run directory or
    weights file (its training data settings), or a data config (completed).
    """
    from torch import nn

    if isinstance(model_or_name, nn.Module):
        return model_data_config(model_or_name)
    if isinstance(model_or_name, Mapping):
        return complete_data_config(model_or_name.get("data", model_or_name))
    from ..registry import is_model
    from ..weights.zoo import get_pretrained, is_pretrained_name, pretrained_tags

    name = str(model_or_name)
    if is_pretrained_name(name) or (is_model(name) and pretrained_tags(name)):
        return get_pretrained(name).data_config()
    if is_model(name):  # a model without published weights: its defaults, read without allocating it
        import torch

        from ..registry import create_model

        with torch.device("meta"):
            return model_data_config(create_model(name))
    from ..weights.resolve import resolve_model

    return resolve_model(name, load_weights=False, default_tag=True).data


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8 (..., 3, H, W)`` -> float, minus mean, over std (per channel)."""
    shape = (3,) + (1,) * 2
    m = torch.tensor(mean, dtype=torch.float32).view(shape)
    s = torch.tensor(std, dtype=torch.float32).view(shape)
    return (x.float() / 255.0 - m) / s


class ImageEvalTransform:
    """PIL image -> normalised ``float (3, img_size, img_size)``: the short side resized to
    ``resize``, the centre square cut (see :class:`tessera.data.transforms.ResizeCenterCrop`)."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        from .transforms import ResizeCenterCrop

        self.cfg = dict(cfg)
        self.crop = ResizeCenterCrop(cfg["img_size"], cfg["crop_pct"], cfg["interpolation"])

    def crop_uint8(self, img) -> torch.Tensor:
        """The resized and cropped image as ``uint8 (3, H, W)`` (before normalisation)."""
        from .images import pil_to_tensor

        return pil_to_tensor(self.crop(img.convert("RGB")))

    def __call__(self, img) -> torch.Tensor:
        return _normalise(self.crop_uint8(img), self.cfg["mean"], self.cfg["std"])


class ImageTrainTransform:
    """``(PIL image, numpy Generator) -> normalised float (3, img_size, img_size)``: a random
    resized crop (area ``scale``, aspect ``ratio``) and a horizontal flip (``hflip``)."""

    def __init__(self, cfg: Mapping[str, Any], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5) -> None:
        from .transforms import RandomResizedCropFlip

        self.cfg = dict(cfg)
        self.crop = RandomResizedCropFlip(cfg["img_size"], tuple(scale), tuple(ratio), hflip, cfg["interpolation"])

    def __call__(self, img, rng: np.random.Generator | None = None) -> torch.Tensor:
        from .images import pil_to_tensor

        rng = rng if rng is not None else np.random.default_rng()
        return _normalise(pil_to_tensor(self.crop(img.convert("RGB"), rng)), self.cfg["mean"], self.cfg["std"])


def _recipe_data(cfg: Mapping[str, Any]):
    from ..train.evaluation import data_config as recipe_data

    return recipe_data({"data": cfg})


class VideoTransform:
    """A video (a file path, a frames folder or a frame source) -> normalised
    ``float (V, 3, T, H, W)`` views of ``split`` (``test``: every test view; ``train``: one
    random clip and crop, ``V = 1``)."""

    def __init__(self, cfg: Mapping[str, Any], split: str = "test") -> None:
        from .video import ClipPipeline

        self.cfg = dict(cfg)
        self.pipeline = ClipPipeline(_recipe_data(cfg), split)

    @property
    def num_views(self) -> int:
        return self.pipeline.num_views

    def clips_uint8(self, video, rng: np.random.Generator | None = None) -> torch.Tensor:
        """The views as ``uint8 (V, T, H, W, 3)``, before normalisation."""
        from .video import open_video

        rng = rng if rng is not None else np.random.default_rng(0)
        if isinstance(video, (str,)) or hasattr(video, "__fspath__"):
            with open_video(video, self.pipeline.interpolation) as source:
                clips = self.pipeline(source, rng)
        else:
            clips = self.pipeline(video, rng)
        return clips if clips.dim() == 5 else clips[None]

    def __call__(self, video, rng: np.random.Generator | None = None) -> torch.Tensor:
        clips = self.clips_uint8(video, rng)  # (V, T, H, W, 3)
        x = clips.permute(0, 4, 1, 2, 3)  # (V, 3, T, H, W)
        m = torch.tensor(self.cfg["mean"], dtype=torch.float32).view(3, 1, 1, 1)
        s = torch.tensor(self.cfg["std"], dtype=torch.float32).view(3, 1, 1, 1)
        return (x.float() / 255.0 - m) / s


def eval_transform(model_or_config: Any):
    """The evaluation transform of a model, a name or a data config: an
    :class:`ImageEvalTransform` (PIL image -> tensor) for images, a :class:`VideoTransform`
    (video -> its test views) for videos."""
    cfg = data_config(model_or_config)
    return VideoTransform(cfg, "test") if cfg["kind"] == "video" else ImageEvalTransform(cfg)


def train_transform(model_or_config: Any, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5):
    """The training crop of a model, a name or a data config: an :class:`ImageTrainTransform`
    for images (random resized crop and flip; the rest of the augmentation runs on the device
    in tessera's training loop), a :class:`VideoTransform` of one random clip for videos."""
    cfg = data_config(model_or_config)
    if cfg["kind"] == "video":
        return VideoTransform({**cfg, "scale": tuple(scale), "ratio": tuple(ratio)}, "train")
    return ImageTrainTransform(cfg, scale, ratio, hflip)
