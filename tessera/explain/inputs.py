"""Inputs as the model sees them, and the way back to the file's pixels.

An image is cut as in evaluation (short side to ``floor(img_size / crop_pct)``, centre
crop); a video gives one clip as in validation (the middle clip of ``clip_len`` frames
``frame_interval`` apart, short side resized, centre crop). What an explanation says about a
crop pixel is said about the file through :class:`Geometry`: crop coordinates to the
file's pixel (and frame) coordinates.

The preprocessing comes from a trained model's run information (``info["data"]``: size,
crop, interpolation, normalisation, clip sampling), as :mod:`tessera.train.evaluation` uses
it; for any other model source :func:`tessera.weights.resolve.resolve_model` makes the same
from its weights' data config (``ResolvedModel.run_info()``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Geometry:
    """Where the ``size x size`` crop lies in the source: the source (``width x height``)
    was resized by ``scale = (sx, sy)`` and the crop starts at ``(left, top)`` of the resized one."""

    width: int
    height: int
    scale: tuple[float, float]
    left: int
    top: int

    def to_source(self, y: float, x: float) -> tuple[int, int]:
        """A crop pixel ``(y, x)`` -> the source pixel it was resampled around."""
        sx, sy = self.scale
        sy_pix = (y + self.top + 0.5) / sy - 0.5
        sx_pix = (x + self.left + 0.5) / sx - 0.5
        return (int(min(max(round(sy_pix), 0), self.height - 1)), int(min(max(round(sx_pix), 0), self.width - 1)))

    def box_to_crop(self, x0: float, y0: float, x1: float, y1: float, size: int) -> tuple[int, int, int, int] | None:
        """A source box ``(x0, y0, x1, y1)`` (exclusive ends) in crop pixels, cut to the
        crop; ``None`` when none of it is in the crop."""
        sx, sy = self.scale
        cx0, cx1 = max(0, round(x0 * sx) - self.left), min(size, round(x1 * sx) - self.left)
        cy0, cy1 = max(0, round(y0 * sy) - self.top), min(size, round(y1 * sy) - self.top)
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        return cx0, cy0, cx1, cy1


@dataclass
class Prepared:
    """One input: ``tensor`` ``(1, C, H, W)`` or ``(1, C, T, H, W)`` normalised for the model;
    ``pixels`` the same unnormalised, float RGB ``(H, W, 3)`` or ``(T, H, W, 3)`` in ``[0, 1]``;
    ``frames`` the source frame of each clip frame (videos); ``geometry`` the crop."""

    tensor: torch.Tensor
    pixels: np.ndarray
    geometry: Geometry
    frames: list[int] | None = None


def _normalise(pixels: torch.Tensor, info: dict) -> torch.Tensor:
    """``(..., 3)`` floats in [0, 1] -> normalised channels-first."""
    mean = torch.tensor(info["data"]["mean"], dtype=torch.float32)
    std = torch.tensor(info["data"]["std"], dtype=torch.float32)
    return ((pixels - mean) / std).movedim(-1, 0)


def prepare_image(image: Image.Image, info: dict) -> Prepared:
    """An image as the model's evaluation sees it."""
    from ..train.evaluation import eval_transform

    image = image.convert("RGB")
    crop = eval_transform(info)
    (rw, rh), left, top = crop.geometry(*image.size)
    pixels = np.asarray(crop(image), dtype=np.float32) / 255.0
    tensor = _normalise(torch.from_numpy(pixels), info)[None]
    geometry = Geometry(image.size[0], image.size[1], (rw / image.size[0], rh / image.size[1]), left, top)
    return Prepared(tensor, pixels, geometry)


def prepare_clip(source, info: dict) -> Prepared:
    """One clip of a video (a frame source: file, frames folder, frames in memory) as the
    model's validation sees it: the middle clip, centre crop."""
    from ..data.video.clips import ClipPipeline, centre_crop_box
    from ..data.video.io import short_side_size
    from ..train.evaluation import data_config

    cfg = data_config(info)
    pipeline = ClipPipeline(cfg, "val")
    rng = np.random.default_rng(0)
    frames = pipeline.indices(source.num_frames, rng).reshape(-1).tolist()
    clip = pipeline(source, rng).numpy()  # (T, S, S, 3) uint8, the same indices (validation is deterministic)
    width, height = _frame_size(source)
    rw, rh = short_side_size(width, height, pipeline.short_side)
    left, top = centre_crop_box(rw, rh, pipeline.size)
    pixels = clip.astype(np.float32) / 255.0
    tensor = _normalise(torch.from_numpy(pixels), info)[None]  # (1, 3, T, S, S)
    geometry = Geometry(width, height, (rw / width, rh / height), left, top)
    return Prepared(tensor, pixels, geometry, frames)


def _frame_size(source) -> tuple[int, int]:
    """``(width, height)`` of a frame source's frames at their own size."""
    frame = source.read([0])[0]
    return frame.shape[1], frame.shape[0]
