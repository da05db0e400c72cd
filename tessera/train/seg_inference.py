"""Segmentation inference as mmseg's ``EncoderDecoder`` does it, on normalised images at
their own size ``(B, 3, H, W)``:

* the image is rescaled (bilinear, keeping its aspect ratio) to the test scale: the largest
  size within ``img_scale = (long, short)`` times each of ``ratios`` (its own size times
  the ratio without ``img_scale``);
* ``whole``: the model runs on the rescaled image; ``slide``: on windows of ``crop``
  ``stride`` apart, the last row and column of windows flush with the far edges, their
  logits summed and divided by the number of windows covering each pixel (windows larger
  than the image shrink to it);
* the logits are resized back to ``(H, W)`` (bilinear, ``align_corners=False``), a flipped
  view flipped back; with several views (scales x flips) the softmax is averaged.

:func:`segment` returns the log-probabilities (``log_softmax`` of the one view, or the log
of the averaged softmax), whose arg-max is the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.segmentation import rescale_size
from ..models.seg.base import resize
from .evaluation import autocast


@dataclass(frozen=True)
class EvalProtocol:
    """How a segmentation model is evaluated (the recipe's ``data.test_*`` keys)."""

    mode: str = "whole"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] | None = None
    img_scale: tuple[int, int] | None = None
    ratios: tuple[float, ...] = (1.0,)
    flip: bool = False

    @classmethod
    def from_data(cls, d) -> EvalProtocol:
        """From a :class:`~tessera.train.recipe.DataConfig` or the ``data`` dict of a run."""
        get = (lambda k: d.get(k)) if isinstance(d, dict) else (lambda k: getattr(d, k))
        crop = get("crop_size") or (get("img_size"), get("img_size"))
        stride = get("test_stride")
        return cls(get("test_mode") or "whole", tuple(crop), tuple(stride) if stride else None,
                   tuple(get("img_scale")) if get("img_scale") else None, tuple(get("test_ratios") or (1.0,)),
                   bool(get("test_flip")))

    @property
    def window_stride(self) -> tuple[int, int]:
        return self.stride or (self.crop[0] * 2 // 3, self.crop[1] * 2 // 3)

    def describe(self) -> str:
        scale = f"scale {self.img_scale[0]}x{self.img_scale[1]}" if self.img_scale else "own size"
        views = f", ratios {', '.join(f'{r:g}' for r in self.ratios)}" if self.ratios != (1.0,) else ""
        flips = " + flips" if self.flip else ""
        how = (f"sliding {self.crop[0]}x{self.crop[1]} windows, stride {self.window_stride[0]}x{self.window_stride[1]}"
               if self.mode == "slide" else "whole image")
        return f"{how}, {scale}{views}{flips}"


def eval_size(height: int, width: int, img_scale: Sequence[int] | None, ratio: float) -> tuple[int, int]:
    """``(h, w)`` of an image rescaled for testing (mmseg's ``Resize(keep_ratio=True)``)."""
    base = img_scale if img_scale is not None else (width, height)
    new_w, new_h = rescale_size(width, height, (int(base[0] * ratio), int(base[1] * ratio)))
    return new_h, new_w


def window_boxes(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of the sliding windows over a ``height x width`` image
    (mmseg's ``slide_inference``)."""
    (ch, cw), (sh, sw) = crop, stride
    rows = max(height - ch + sh - 1, 0) // sh + 1
    cols = max(width - cw + sw - 1, 0) // sw + 1
    boxes = []
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * sh + ch, height), min(c * sw + cw, width)
            boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return boxes


def slide_logits(model: nn.Module, x: torch.Tensor, crop: Sequence[int], stride: Sequence[int],
                 amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``(B, 3, H, W) -> (B, K, H, W)``: the logits averaged over the sliding windows."""
    out = count = None
    for top, bottom, left, right in window_boxes(*x.shape[-2:], crop, stride):
        with autocast(x.device, amp_dtype):
            logits = model(x[..., top:bottom, left:right]).float()
        if out is None:
            out = logits.new_zeros((*logits.shape[:2], *x.shape[-2:]))
            count = logits.new_zeros((1, 1, *x.shape[-2:]))
        out[..., top:bottom, left:right] += logits
        count[..., top:bottom, left:right] += 1
    return out / count


def view_logits(model: nn.Module, x: torch.Tensor, protocol: EvalProtocol,
                amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The model's logits on an already rescaled (and flipped) batch, whole or sliding."""
    if protocol.mode == "slide":
        return slide_logits(model, x, protocol.crop, protocol.window_stride, amp_dtype)
    with autocast(x.device, amp_dtype):
        return model(x).float()


@torch.no_grad()
def segment(model: nn.Module, x: torch.Tensor, protocol: EvalProtocol, amp_dtype: torch.dtype | None = None,
            align_corners: bool = False) -> torch.Tensor:
    """Log-probabilities ``(B, K, H, W)`` of normalised images ``(B, 3, H, W)`` at their own
    size, under ``protocol`` (see the module docstring). The model is used as it is (put it
    in eval mode first)."""
    height, width = x.shape[-2:]
    views = [(ratio, flip) for ratio in protocol.ratios for flip in ((False, True) if protocol.flip else (False,))]
    total = None
    for ratio, flip in views:
        size = eval_size(height, width, protocol.img_scale, ratio)
        xi = resize(x, size, align_corners)
        if flip:
            xi = xi.flip(-1)
        logits = resize(view_logits(model, xi, protocol, amp_dtype), (height, width), align_corners)
        if flip:
            logits = logits.flip(-1)
        if len(views) == 1:
            return torch.log_softmax(logits, dim=1)
        probs = torch.softmax(logits, dim=1)
        total = probs if total is None else total.add_(probs)
    return (total / len(views)).clamp_min_(1e-12).log_()


# ---------------------------------------------------------------------------------------
# Predictions as pictures
# ---------------------------------------------------------------------------------------


def overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.5,
            keep: int | None = None) -> np.ndarray:
    """``uint8 (H, W, 3)``: the image with each pixel blended with its class colour
    (``alpha`` of the colour); pixels of class ``keep`` (e.g. a background) stay as they are."""
    mixed = image.astype(np.float32) * (1 - alpha) + colours[labels].astype(np.float32) * alpha
    if keep is not None:
        mixed[labels == keep] = image[labels == keep]
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def label_map_image(labels: np.ndarray, colours: np.ndarray):
    """A palette PNG (mode ``P``) whose pixel values are the class indices and whose palette
    shows them in their colours: readable as a label map, viewable as a picture."""
    from PIL import Image

    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), dtype=np.uint8)
    flat[: len(colours)] = colours[:256]
    img.putpalette(flat.reshape(-1).tolist())
    return img


# ---------------------------------------------------------------------------------------
# Evaluation over a data set
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader, transform: nn.Module, protocol: EvalProtocol, num_classes: int,
                          info, amp_dtype: torch.dtype | None = None, skipped=None, progress: str | None = None,
                          ignore_index: int = 255, align_corners: bool = False):
    """Run ``model`` (in eval mode) over ``loader`` (images and label maps at their own
    size) under ``protocol``; ``transform`` maps ``uint8`` images to the model's input.
    Returns the :class:`~tessera.train.seg_metrics.SegmentationMeter`, summed over processes;
    its loss is the cross-entropy of the (view-averaged) prediction per labelled pixel."""
    from tqdm import tqdm

    from .seg_metrics import SegmentationMeter

    was_training = model.training
    model.eval()
    meter = SegmentationMeter(num_classes, ignore_index, info.device)
    batches = tqdm(loader, desc=progress, leave=False, disable=None) if progress and info.is_main else loader
    for x, y, bad in batches:
        if skipped is not None:
            skipped.add(bad)
        if x is None:
            continue
        # a batch of one size at once, images of their own sizes one by one
        groups = [(x, y)] if isinstance(x, torch.Tensor) else [(xi[None], yi[None]) for xi, yi in zip(x, y)]
        for xb, yb in groups:
            xb = transform(xb.to(info.device, non_blocking=True))
            yb = yb.to(info.device, non_blocking=True).long()
            log_probs = segment(model, xb, protocol, amp_dtype, align_corners)
            loss = F.nll_loss(log_probs, yb, ignore_index=ignore_index, reduction="sum") if (
                yb != ignore_index).any() else torch.zeros((), device=yb.device)
            meter.update(log_probs.argmax(1), yb, loss)
    model.train(was_training)
    return meter.reduce(info)


@torch.no_grad()
def predict_segmentation(model: nn.Module, info: dict, images: list, protocol: EvalProtocol | None = None,
                         ) -> list[np.ndarray]:
    """The label map ``uint8 (H, W)`` of each PIL image, at its own size, with the model's
    normalisation and test protocol (from its run information, unless ``protocol``)."""
    from ..data.augment import ImageAugment

    device = next(model.parameters()).device
    normalise = ImageAugment(info["data"]["mean"], info["data"]["std"]).to(device)
    protocol = protocol or EvalProtocol.from_data(info["data"])
    model.eval()
    out = []
    for img in images:
        x = torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)[None].to(device)
        log_probs = segment(model, normalise(x), protocol, align_corners=bool(getattr(model, "align_corners", False)))
        out.append(log_probs.argmax(1)[0].to(torch.uint8).cpu().numpy())
    return out


def segmentation_info(info: dict, model: nn.Module) -> dict:
    """The run information of a segmentation model whose weights did not come from a
    ``tessera train`` run (an mmseg or Swin-Unet checkpoint): ``task`` and a segmentation
    ``data`` section. A 150-class model is taken for ADE20K as the official configs test it
    (its class names, ``reduce_zero_label``, whole images rescaled to 2048x512); a model of
    VOC's 21 or Cityscapes' 19 classes gets their names; other data is tested at its own
    size."""
    from ..data.seg_classes import ADE20K, CITYSCAPES, VOC

    if info.get("task") == "segmentation":
        return info
    num_classes = int(getattr(model, "num_classes", 0) or len(info.get("classes") or ()))
    size = tuple(model.default_cfg.get("input_size", (3, 512, 512))[-2:])
    data = {**info.get("data", {}), "kind": "segmentation", "img_size": size[0], "crop_size": size,
            "layout": "auto", "ignore_index": 255, "test_mode": "whole"}
    classes = list(info.get("classes") or range(num_classes))
    if num_classes == len(ADE20K):
        data.update(reduce_zero_label=True, img_scale=(2048, 512))
        classes = list(ADE20K)
    elif num_classes in (len(VOC), len(CITYSCAPES)):
        classes = list(VOC if num_classes == len(VOC) else CITYSCAPES)
    return {**info, "task": "segmentation", "data": data, "classes": [str(c) for c in classes]}
