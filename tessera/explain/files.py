"""Explaining image and video files: the input cut as the model's evaluation cuts it, the
explanation, its pictures written beside each other, and a record of what was explained
(class, score, peak in the file's pixels) for ``tessera explain``.

Pictures, for a file ``NAME``, in the output folder:

* images: ``NAME.METHOD.png``, the input and the heat map over it with the class, its score,
  the peak and a colour scale;
* videos: ``NAME.METHOD.png``, the clip's frames in a strip with their heat maps, and
  ``NAME.METHOD.gif`` (or ``.mp4``), the same as an animation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .inputs import Prepared, prepare_clip, prepare_image
from .overlay import animation_frames, explanation_figure, save_figure, strip_figure, write_animation
from .targets import ExplainError, is_video_model

METHOD_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM",
                "rollout": "attention rollout", "attention": "window attention"}
ALL_METHODS = tuple(METHOD_NAMES)


@dataclass
class ExplainSettings:
    """What to explain and how (the options of ``tessera explain``).

    ``target``: a class name or index (default the top-1); ``layer``: the CAM layer;
    ``stage``, ``block``, ``head``, ``query`` (input pixels ``(y, x)`` or ``(t, y, x)``):
    the window attention shown; ``animation``: ``gif`` or ``mp4``."""

    method: str = "gradcam"
    target: str | None = None
    layer: str | None = None
    stage: int = 0
    block: int = 1
    head: int | None = None
    query: tuple[int, ...] | None = None
    head_fusion: str = "mean"
    discard_ratio: float = 0.0
    animation: str = "gif"


def class_index(target: str | None, classes: list[str]) -> int | None:
    """A class given by name or index -> its index (``None`` stays ``None``)."""
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    try:
        index = int(target)
    except ValueError:
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise ExplainError(f"--target {target!r} is not one of the model's classes ({shown})") from None
    if not 0 <= index < len(classes):
        raise ExplainError(f"--target {index} is outside the model's {len(classes)} classes")
    return index


def explain_tensor(model: nn.Module, x: torch.Tensor, settings: ExplainSettings, target: int | None):
    """Dispatch to the method: an :class:`~tessera.explain.cam.Explanation` (or a
    :class:`~tessera.explain.attention.WindowAttentionMap` for ``attention``)."""
    from .attention import window_attention
    from .cam import METHODS, grad_cam
    from .rollout import attention_rollout

    if settings.method in METHODS:
        return grad_cam(model, x, target=target, layer=settings.layer, method=settings.method)
    if settings.method == "rollout":
        if is_video_model(model):
            raise ExplainError("attention rollout is for class-token image models; use gradcam for video")
        return attention_rollout(model, x, target=target, head_fusion=settings.head_fusion,
                                 discard_ratio=settings.discard_ratio)
    if settings.method == "attention":
        return window_attention(model, x, settings.stage, settings.block, settings.query, settings.head, target)
    raise ExplainError(f"unknown method {settings.method!r}; expected one of {', '.join(ALL_METHODS)}")


def _maps_and_title(result, settings: ExplainSettings, classes: list[str]) -> tuple[torch.Tensor, str, str]:
    """``(maps of the one sample, normalised, the title's method part, the layer)``."""
    index = int(result.target[0])
    name = classes[index] if index < len(classes) else str(index)
    score = float(result.score[0])
    maps = result.maps[0].float()
    maps = maps / maps.max().clamp_min(1e-12)
    if settings.method == "attention":
        head = "mean of the heads" if result.head is None else f"head {result.head}"
        where = f"stage {result.stage}, block {result.block}, {head}"
        what = f"window attention of the query at {tuple(result.query_pixel)} ({where})"
    else:
        what = f"{METHOD_NAMES[settings.method]} at {result.layer}"
    return maps, f"class {name}: {score:.3f}\n{what}", name


def explain_file(model: nn.Module, info: dict, path: str | os.PathLike, out_dir: str | os.PathLike,
                 settings: ExplainSettings) -> dict[str, Any]:
    """Explain one image or video file and write its pictures into ``out_dir``. Returns the
    record ``tessera explain --json`` prints: ``file``, ``method``, ``layer``, ``class``,
    ``class_index``, ``score``, ``peak`` (``x``, ``y`` and for video ``t``: the file's pixel
    and frame) and ``outputs``."""
    from ..data.images import read_image
    from ..data.video import open_video

    path = Path(path)
    classes = list(info["classes"])
    target = class_index(settings.target, classes)
    video = is_video_model(model)
    device = next(model.parameters()).device
    if video:
        with open_video(path, info["data"].get("interpolation", "bilinear")) as source:
            prepared = prepare_clip(source, info)
    else:
        prepared = prepare_image(read_image(path), info)
    result = explain_tensor(model, prepared.tensor.to(device), settings, target)
    maps, title, name = _maps_and_title(result, settings, classes)
    peak = [int(c) for c in torch.unravel_index(result.maps[0].argmax(), result.maps.shape[1:])]
    out_dir = Path(out_dir)
    stem = f"{path.stem}.{settings.method}"
    outline = result.in_window if settings.method == "attention" else None
    outputs = (_write_video(prepared, maps, title, out_dir, stem, settings, outline, result) if video
               else _write_image(prepared, maps, title, peak, out_dir, stem, outline, result))
    record = {"file": str(path), "method": settings.method, "layer": result.layer, "class": name,
              "class_index": int(result.target[0]), "score": round(float(result.score[0]), 6),
              "peak": _peak_in_file(peak, prepared), "outputs": [str(o) for o in outputs]}
    return record


def _peak_in_file(peak: list[int], prepared: Prepared) -> dict[str, int]:
    """The peak (crop pixels, ``(y, x)`` or ``(t, y, x)``) in the file's pixels and frames."""
    y, x = prepared.geometry.to_source(peak[-2], peak[-1])
    out = {"x": x, "y": y}
    if prepared.frames is not None:
        out["t"] = int(prepared.frames[peak[0]])
    return out


def _outline_pixels(in_window: torch.Tensor, stride, size) -> np.ndarray:
    """The window's tokens as a boolean pixel mask cut to the input ``size``."""
    mask = in_window
    for axis, s in enumerate(stride):
        mask = mask.repeat_interleave(s, dim=axis)
    return mask[tuple(slice(0, s) for s in size)].numpy()


def _write_image(prepared: Prepared, maps, title, peak, out_dir: Path, stem: str, outline, result) -> list[Path]:
    size = prepared.pixels.shape[:2]
    mask = None if outline is None else _outline_pixels(outline, result.stride, size)
    fig = explanation_figure(prepared.pixels, maps.cpu().numpy(), title, peak=peak, outline=mask)
    return [save_figure(fig, out_dir / f"{stem}.png")]


def _write_video(prepared: Prepared, maps, title, out_dir: Path, stem: str, settings: ExplainSettings,
                 outline, result) -> list[Path]:
    frames = prepared.pixels
    heat = maps.cpu().numpy()
    labels = [f"frame {f}" for f in prepared.frames]
    peaks = [np.unravel_index(int(np.argmax(h)), h.shape) for h in heat]
    strip = save_figure(strip_figure(frames, heat, title, labels, peaks), out_dir / f"{stem}.png")
    if settings.animation not in ("gif", "mp4"):
        raise ExplainError(f"--animation {settings.animation!r}: expected gif or mp4")
    pictures = animation_frames(frames, heat, title, labels)
    animation = write_animation(out_dir / f"{stem}.{settings.animation}", pictures)
    return [strip, animation]
