"""Prediction: the top classes of images and videos, and a class timeline along long videos.

``tessera predict`` is a thin layer over this module. Inputs are files, folders and glob
patterns (:func:`expand_inputs`); images are read with the project's one image reader,
prepared with the model's data config (:mod:`tessera.data.preprocess`) and classified in
batches (one forward pass per batch); a video is scored with the softmax averaged over its
test views (clips x crops), as the official protocol.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

#: one prediction: (class index, class name, probability), best first
Top = list[tuple[int, str, float]]


@dataclass
class Prediction:
    """The result for one input: ``top`` (or ``error``, a one-line reason)."""

    path: str
    top: Top | None = None
    error: str | None = None


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------

_GLOB_CHARS = set("*?[")


def _natural(path: str) -> list:
    import re

    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", path)]


def _files_under(folder: Path, endings: tuple[str, ...]) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".") and f.lower().endswith(endings)]
    return sorted(found, key=_natural)


def _videos_in(folder: Path) -> list[str]:
    """The videos a folder holds for a video model: its video files (at any depth), else the
    folder itself when it holds frame images, else its sub-folders that do."""
    from .data.video.io import VIDEO_EXTENSIONS, frame_files

    files = _files_under(folder, VIDEO_EXTENSIONS)
    if files:
        return files
    if frame_files(folder):
        return [str(folder)]
    subfolders = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: _natural(d.name))
    return [str(d) for d in subfolders if frame_files(d)]


def expand_inputs(inputs: Sequence[str], video: bool) -> Iterator[tuple[str, str | None]]:
    """``(path, problem)`` for every input: a file as it is; a folder's images (image models)
    or videos (video models: video files, or frames folders); a glob pattern's matches.
    ``problem`` is a one-line reason when an input gives nothing to predict."""
    from .data.images import IMG_EXTENSIONS

    for item in inputs:
        path = Path(item)
        if not path.exists() and _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True), key=_natural)
            if not matches:
                yield item, "the pattern matches no file"
                continue
        else:
            matches = [item]
        for match in matches:
            p = Path(match)
            if not p.exists():
                yield match, "no such file or directory"
            elif p.is_dir():
                found = _videos_in(p) if video else _files_under(p, IMG_EXTENSIONS)
                if not found:
                    what = "frame images or video files" if video else "image files"
                    yield match, f"a folder without {what}"
                yield from ((f, None) for f in found)
            else:
                yield match, None


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


def _top(probs: torch.Tensor, classes: Sequence[str], k: int) -> list[Top]:
    values, indices = probs.float().topk(min(k, probs.shape[-1]), dim=-1)
    return [[(int(i), classes[int(i)], float(p)) for p, i in zip(ps.tolist(), ids.tolist())]
            for ps, ids in zip(values, indices)]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _normaliser(cfg: dict[str, Any], device: torch.device, ndim: int) -> Callable[[torch.Tensor], torch.Tensor]:
    shape = (1, 3) + (1,) * (ndim - 2)
    mean = torch.tensor(cfg["mean"], device=device).view(shape)
    std = torch.tensor(cfg["std"], device=device).view(shape)
    return lambda x: (x.float() / 255.0 - mean) / std


@torch.no_grad()
def classify_images(model: nn.Module, cfg: dict[str, Any], classes: Sequence[str], images: Sequence[Any],
                    top_k: int = 5) -> list[Top]:
    """Top-``k`` of each PIL image, in one forward pass."""
    from .data.preprocess import ImageEvalTransform

    crop = ImageEvalTransform(cfg)
    device = _device(model)
    x = torch.stack([crop.crop_uint8(img) for img in images]).to(device)
    probs = torch.softmax(model.eval()(_normaliser(cfg, device, 4)(x)).float(), dim=-1)
    return _top(probs, classes, top_k)


def predict_image_files(model: nn.Module, cfg: dict[str, Any], classes: Sequence[str], paths: Sequence[str],
                        top_k: int = 5, batch_size: int = 32, workers: int = 2) -> Iterator[Prediction]:
    """Predictions for image files, ``batch_size`` per forward pass; the files of the next
    batch are decoded (by the project's image reader) while the model runs. A file that
    cannot be read gives a :class:`Prediction` with its ``error``."""
    from .data.images import error_reason, read_image
    from .data.preprocess import ImageEvalTransform

    crop = ImageEvalTransform(cfg)
    device = _device(model)
    normalise = _normaliser(cfg, device, 4)
    model.eval()

    def read_and_crop(path: str):
        try:
            return crop.crop_uint8(read_image(path)), None
        except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for files it cannot read
            return None, error_reason(e, path)

    batches = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = pool.map(lambda batch: [read_and_crop(p) for p in batch], batches)
        for batch, loaded in zip(batches, pending):
            good = [(p, t) for p, (t, _) in zip(batch, loaded) if t is not None]
            tops: dict[str, Top] = {}
            if good:
                with torch.no_grad():
                    x = torch.stack([t for _, t in good]).to(device)
                    probs = torch.softmax(model(normalise(x)).float(), dim=-1)
                tops = dict(zip((p for p, _ in good), _top(probs, classes, top_k)))
            for path, (_, error) in zip(batch, loaded):
                yield Prediction(path, tops.get(path), None if path in tops else error)


@torch.no_grad()
def predict_video(model: nn.Module, cfg: dict[str, Any], classes: Sequence[str], path: str, top_k: int = 5,
                  max_views: int | None = None) -> Top:
    """Top-``k`` of one video (a file or a frames folder) from the softmax averaged over its
    test views. Raises the reading error of a video that cannot be read."""
    from .data.preprocess import VideoTransform

    transform = VideoTransform(cfg, "test")
    device = _device(model)
    clips = transform.clips_uint8(path).to(device)  # (V, T, H, W, 3)
    x = _normaliser(cfg, device, 5)(clips.permute(0, 4, 1, 2, 3))
    step = max_views or cfg.get("max_testing_views") or x.shape[0]
    logits = torch.cat([model.eval()(part).float() for part in x.split(step)])
    return _top(torch.softmax(logits, dim=-1).mean(0, keepdim=True), classes, top_k)[0]


# ---------------------------------------------------------------------------------------
# Timelines of long videos
# ---------------------------------------------------------------------------------------


@dataclass
class Timeline:
    """Scores along a video: segment ``i`` spans ``starts[i]`` to ``ends[i]`` (seconds, or
    frames when the video has no timing) and has the class probabilities ``probs[i]``."""

    path: str
    starts: list[float]
    ends: list[float]
    probs: torch.Tensor
    unit: str = "s"


def _frame_times(source: Any) -> np.ndarray | None:
    """Every frame's time in seconds from the first, when the source knows it."""
    index = getattr(source, "index", None)
    stream = getattr(source, "stream", None)
    if index is not None and index.pts is not None and stream is not None and stream.time_base:
        return (index.pts - index.pts[0]).astype(np.float64) * float(stream.time_base)
    rate = getattr(stream, "average_rate", None) if stream is not None else None
    if rate:
        return np.arange(source.num_frames) / float(rate)
    return None


@torch.no_grad()
def video_timeline(model: nn.Module, cfg: dict[str, Any], path: str, segment_seconds: float | None = None,
                   max_views: int | None = None) -> Timeline:
    """Score consecutive segments of a video. A segment spans one clip (``clip_len`` frames
    ``frame_interval`` apart) unless ``segment_seconds`` is given; each is scored by one clip
    spread over it, with the model's crops (softmax averaged over the crops)."""
    from .data.video import open_video
    from .data.video.clips import centre_crop_box, three_crop_boxes

    clip_len, interval = int(cfg["clip_len"]), int(cfg["frame_interval"])
    size, crops = int(cfg["img_size"]), int(cfg.get("num_crops", 1))
    short = size if crops == 3 else math.floor(size / cfg["crop_pct"])
    device = _device(model)
    normalise = _normaliser(cfg, device, 5)
    with open_video(path, cfg.get("interpolation", "bilinear")) as source:
        n = source.num_frames
        times = _frame_times(source)
        if segment_seconds and times is not None and n > 1:
            fps = (n - 1) / max(times[-1], 1e-9)
            span = max(1, round(segment_seconds * fps))
        else:
            span = clip_len * interval
        starts = list(range(0, n, span))
        views, bounds = [], []
        for s in starts:
            e = min(n, s + span)
            # clip_len frames spread over the segment (every interval-th frame when it is a clip's span)
            idx = np.minimum(s + np.floor(np.arange(clip_len) * (e - s) / clip_len).astype(int), n - 1)
            frames = source.read(idx.tolist(), short)
            h, w = frames.shape[1:3]
            boxes = three_crop_boxes(w, h, size) if crops == 3 else [centre_crop_box(w, h, size)]
            views += [torch.from_numpy(np.ascontiguousarray(frames[:, top : top + size, left : left + size]))
                      for left, top in boxes]
            bounds.append((s, e))
    x = torch.stack(views).to(device).permute(0, 4, 1, 2, 3)  # (S * crops, 3, T, H, W)
    step = max_views or cfg.get("max_testing_views") or len(boxes)
    logits = torch.cat([model.eval()(normalise(part)).float() for part in x.split(step)])
    probs = torch.softmax(logits, dim=-1).view(len(starts), len(boxes), -1).mean(1).cpu()
    if times is not None:
        end_time = times[-1] + (times[-1] - times[-2] if n > 1 else 0.0)
        to_time = lambda f: float(times[f]) if f < n else float(end_time)  # noqa: E731
        unit = "s"
    else:
        to_time, unit = float, "frames"
    return Timeline(str(path), [to_time(s) for s, _ in bounds], [to_time(e) for _, e in bounds], probs, unit)


def plot_timeline(timeline: Timeline, classes: Sequence[str], path: str | os.PathLike, top: int = 8) -> Path:
    """A PNG strip: the ``top`` classes that score highest anywhere along the video (rows),
    their probability in each segment (columns, over time)."""
    from matplotlib.figure import Figure

    from .atomic import atomic_path

    probs = timeline.probs
    order = probs.max(0).values.argsort(descending=True)[: min(top, probs.shape[1])].tolist()
    rows = probs[:, order].T.numpy()
    fig = Figure(figsize=(max(6.0, 0.35 * len(timeline.starts) + 3), 0.45 * len(order) + 1.4))
    ax = fig.subplots()
    edges = timeline.starts + [timeline.ends[-1]]
    image = ax.pcolormesh(edges, np.arange(len(order) + 1), rows, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_yticks(np.arange(len(order)) + 0.5, [classes[i] for i in order])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)" if timeline.unit == "s" else "frame")
    ax.set_title(f"{Path(timeline.path).name}: top classes over time")
    fig.colorbar(image, ax=ax, label="probability", fraction=0.03, pad=0.02)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path

