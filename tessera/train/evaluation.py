"""Evaluation of a classifier over a loader, the same for the training loop's validation
and for ``tessera evaluate``.

A data set whose samples hold several views (``dataset.num_views > 1``: the inputs come as
``(B, V, ...)``, e.g. clips x crops of a video) is scored by the mean of the softmax over
the views, as the official video protocol (``average_clips='prob'``): that is the
video-level score; each view scored on its own gives the clip-level score. Plain samples
are scored by their own softmax.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.loader import SkippedSamples
from .distributed import DistInfo
from .metrics import ClassificationMeter


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device`` (a no-op for ``None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def view_probs(model: nn.Module, x: torch.Tensor, amp_dtype: torch.dtype | None,
               max_views: int | None = None) -> torch.Tensor:
    """``(B, V, ...)`` -> the softmax of every view ``(B, V, C)``, running at most
    ``max_views`` views per forward pass (all at once for None)."""
    b, v = x.shape[:2]
    flat = x.flatten(0, 1)
    step = max_views or flat.shape[0]
    with autocast(x.device, amp_dtype):
        logits = torch.cat([model(part).float() for part in flat.split(step)])
    return torch.softmax(logits.float(), dim=-1).view(b, v, -1)


def log_probs_over_views(model: nn.Module, x: torch.Tensor, views: int, amp_dtype: torch.dtype | None,
                         max_views: int | None = None) -> torch.Tensor:
    """``(B, ...)`` -> log-softmax ``(B, C)``; ``(B, V, ...)`` with ``views = V`` -> log of the
    softmax averaged over the V views."""
    if views <= 1:
        with autocast(x.device, amp_dtype):
            return torch.log_softmax(model(x).float(), dim=-1)
    return view_probs(model, x, amp_dtype, max_views).mean(1).clamp_min(1e-12).log()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    transform: nn.Module,
    num_classes: int,
    info: DistInfo,
    amp_dtype: torch.dtype | None = None,
    skipped: SkippedSamples | None = None,
    progress: str | None = None,
    per_view: ClassificationMeter | None = None,
    max_views: int | None = None,
) -> ClassificationMeter:
    """Run ``model`` (in eval mode) over ``loader``; ``transform`` maps the device batch of
    ``uint8`` samples to the model's input. Returns the meter, summed over processes.

    With several views per sample, the meter scores the mean of their softmax (video
    level); ``per_view``, when given, scores every view on its own (clip level);
    ``max_views`` bounds the views per forward pass."""
    was_training = model.training
    model.eval()
    meter = ClassificationMeter(num_classes, info.device)
    views = getattr(loader.dataset, "num_views", 1)
    batches = tqdm(loader, desc=progress, leave=False, disable=None) if progress and info.is_main else loader
    for x, y, bad in batches:
        if skipped is not None:
            skipped.add(bad)
        if x is None:
            continue
        x = x.to(info.device, non_blocking=True)
        y = y.to(info.device, non_blocking=True)
        if views > 1:
            out = transform(x.flatten(0, 1))
            probs = view_probs(model, out.view(*x.shape[:2], *out.shape[1:]), amp_dtype, max_views)
            meter.update(probs.mean(1).clamp_min(1e-12).log(), y)
            if per_view is not None:
                per_view.update(probs.flatten(0, 1).clamp_min(1e-12).log(), y.repeat_interleave(views))
        else:
            log_probs = log_probs_over_views(model, transform(x), 1, amp_dtype)
            meter.update(log_probs, y)
            if per_view is not None:
                per_view.update(log_probs, y)
    model.train(was_training)
    if per_view is not None:
        per_view.reduce(info)
    return meter.reduce(info)


def clip_scores(per_view: ClassificationMeter, views: int) -> dict[str, float]:
    """The clip-level entries of a video evaluation's results: ``views`` per video,
    ``clip_top1``, ``clip_top5`` and ``num_clips`` (the views scored one by one)."""
    res = per_view.result()
    return {"views": views, "clip_top1": res["top1"], "clip_top5": res["top5"], "num_clips": res["num_samples"]}


def data_config(info: dict):
    """The data section of a trained model's run information as a
    :class:`~tessera.train.recipe.DataConfig` (keys it does not know are left out)."""
    import dataclasses

    from .recipe import DataConfig

    known = {f.name for f in dataclasses.fields(DataConfig)}
    return DataConfig(**{k: v for k, v in info["data"].items() if k in known})


def eval_transform(info: dict):
    """The worker-side crop of a trained model's evaluation, from its run information."""
    from ..data.transforms import ResizeCenterCrop

    d = info["data"]
    return ResizeCenterCrop(d["img_size"], d.get("crop_pct", 0.875), d.get("interpolation", "bicubic"))


@torch.no_grad()
def predict_images(model: nn.Module, info: dict, images: list, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``k`` ``(class name, probability)`` for each PIL image, with the model's
    evaluation crop and normalisation (from its run information). Images are taken upright
    and in 8-bit RGB as :func:`tessera.data.images.to_rgb` makes them (EXIF orientation,
    16-bit and float samples scaled)."""
    from ..data.augment import ImageAugment
    from ..data.images import pil_to_tensor, to_rgb

    crop = eval_transform(info)
    device = next(model.parameters()).device
    normalise = ImageAugment(info["data"]["mean"], info["data"]["std"]).to(device)
    x = torch.stack([pil_to_tensor(crop(to_rgb(img))) for img in images]).to(device)
    probs = torch.softmax(model.eval()(normalise(x)).float(), dim=-1)
    top = probs.topk(min(top_k, probs.shape[1]), dim=-1)
    classes = info["classes"]
    return [[(classes[i], float(p)) for p, i in zip(ps.tolist(), ids.tolist())]
            for ps, ids in zip(top.values, top.indices)]


@torch.no_grad()
def predict_videos(model: nn.Module, info: dict, paths: list, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``k`` ``(class name, probability)`` for each video (a file or a frames folder),
    from the softmax averaged over the model's test views (clips x crops, from its run
    information). Raises the reading error of a video that cannot be read."""
    import numpy as np

    from ..data.augment import VideoAugment
    from ..data.video import ClipPipeline, open_video

    cfg = data_config(info)
    pipeline = ClipPipeline(cfg, "test")
    device = next(model.parameters()).device
    normalise = VideoAugment(info["data"]["mean"], info["data"]["std"]).to(device)
    model.eval()
    out = []
    for path in paths:
        with open_video(path, pipeline.interpolation) as source:
            clips = pipeline(source, np.random.default_rng(0)).to(device)
        x = clips if pipeline.num_views > 1 else clips[None]
        probs = view_probs(model, normalise(x)[None], None, cfg.max_testing_views).mean(1)[0]
        top = probs.topk(min(top_k, probs.shape[0]))
        out.append([(info["classes"][i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())])
    return out
