"""Evaluation of a classifier over a loader, the same for the training loop's validation
and for ``tessera evaluate``.

A data set whose samples hold several views (``dataset.num_views > 1``: the inputs come as
``(B, V, ...)``, e.g. clips x crops of a video) is scored by the mean of the softmax over
the views, as the official video protocol; plain samples by their own softmax.
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


def log_probs_over_views(model: nn.Module, x: torch.Tensor, views: int, amp_dtype: torch.dtype | None) -> torch.Tensor:
    """``(B, ...)`` -> log-softmax ``(B, C)``; ``(B, V, ...)`` with ``views = V`` -> log of the
    softmax averaged over the V views."""
    if views <= 1:
        with autocast(x.device, amp_dtype):
            return torch.log_softmax(model(x).float(), dim=-1)
    b = x.shape[0]
    with autocast(x.device, amp_dtype):
        logits = model(x.flatten(0, 1)).float()
    probs = torch.softmax(logits, dim=-1).view(b, views, -1).mean(1)
    return probs.clamp_min(1e-12).log()


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
) -> ClassificationMeter:
    """Run ``model`` (in eval mode) over ``loader``; ``transform`` maps the device batch of
    ``uint8`` samples to the model's input. Returns the meter, summed over processes."""
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
            x = transform(x.flatten(0, 1)).view(*x.shape[:2], *x.shape[2:])
        else:
            x = transform(x)
        meter.update(log_probs_over_views(model, x, views, amp_dtype), y)
    model.train(was_training)
    return meter.reduce(info)


def eval_transform(info: dict):
    """The worker-side crop of a trained model's evaluation, from its run information."""
    from ..data.transforms import ResizeCenterCrop

    d = info["data"]
    return ResizeCenterCrop(d["img_size"], d.get("crop_pct", 0.875), d.get("interpolation", "bicubic"))


@torch.no_grad()
def predict_images(model: nn.Module, info: dict, images: list, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``k`` ``(class name, probability)`` for each PIL image, with the model's
    evaluation crop and normalisation (from its run information)."""
    from ..data.augment import ImageAugment
    from ..data.images import pil_to_tensor

    crop = eval_transform(info)
    device = next(model.parameters()).device
    normalise = ImageAugment(info["data"]["mean"], info["data"]["std"]).to(device)
    x = torch.stack([pil_to_tensor(crop(img.convert("RGB"))) for img in images]).to(device)
    probs = torch.softmax(model.eval()(normalise(x)).float(), dim=-1)
    top = probs.topk(min(top_k, probs.shape[1]), dim=-1)
    classes = info["classes"]
    return [[(classes[i], float(p)) for p, i in zip(ps.tolist(), ids.tolist())]
            for ps, ids in zip(top.values, top.indices)]
