"""Explanations drawn on their input: heat maps over images and video frames, with the class
explained, its score and a colour scale; strips of frames and animations (GIF, or MP4
through PyAV) for video.

Figures are matplotlib ``Figure`` objects rendered by Agg (no display, pyplot untouched)
and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ..atomic import atomic_path

#: the colour scale of every heat map
CMAP = "jet"


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def figure_pixels(fig: Figure, dpi: int = 100) -> np.ndarray:
    """``fig`` rendered to ``uint8 (H, W, 3)``."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def blend(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (float RGB ``(H, W, 3)`` in ``[0, 1]``) under the colour-mapped ``heat``
    (``(H, W)`` in ``[0, 1]``): float RGB."""
    colours = colormaps[CMAP](np.clip(heat, 0, 1))[..., :3]
    return (1 - alpha) * image + alpha * colours


def _colour_bar(fig: Figure, ax, label: str) -> None:
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=CMAP), ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=6)


def explanation_figure(image: np.ndarray, heat: np.ndarray, title: str, peak: Sequence[int] | None = None,
                       outline: np.ndarray | None = None, scale: str = "relevance (1 = the map's maximum)") -> Figure:
    """Two panels: the input as the model saw it, and the heat map over it with a colour
    scale; ``peak`` ``(y, x)`` is marked, ``outline`` (a boolean ``(H, W)`` mask, e.g. a
    window) is drawn around."""
    fig = Figure(figsize=(6.4, 3.4))
    left, right = fig.subplots(1, 2)
    left.imshow(np.clip(image, 0, 1), interpolation="nearest")
    left.set_title("input", fontsize=8)
    right.imshow(np.clip(blend(image, heat), 0, 1), interpolation="nearest")
    if outline is not None and outline.any():
        right.contour(outline.astype(float), levels=[0.5], colors="white", linewidths=1.2)
    if peak is not None:
        right.plot([peak[1]], [peak[0]], marker="+", color="white", markersize=12, markeredgewidth=2)
    right.set_title(title, fontsize=8)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    _colour_bar(fig, right, scale)
    fig.tight_layout()
    return fig


def strip_figure(frames: np.ndarray, heat: np.ndarray, title: str, frame_labels: Sequence[str],
                 peaks: Sequence[Sequence[int]] | None = None, per_row: int = 8,
                 scale: str = "relevance (1 = the clip's maximum)") -> Figure:
    """The frames of a clip ``(T, H, W, 3)`` with their heat maps ``(T, H, W)`` in rows of
    ``per_row``, the title above and one colour scale for all."""
    t = len(frames)
    cols = min(per_row, t)
    rows = -(-t // cols)
    fig = Figure(figsize=(1.5 * cols + 0.8, 1.6 * rows + 0.5))
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= t:
            ax.axis("off")
            continue
        ax.imshow(np.clip(blend(frames[i], heat[i]), 0, 1), interpolation="nearest")
        if peaks is not None:
            ax.plot([peaks[i][1]], [peaks[i][0]], marker="+", color="white", markersize=9, markeredgewidth=1.6)
        ax.set_title(frame_labels[i], fontsize=7)
    fig.suptitle(title, fontsize=8)
    _colour_bar(fig, axes, scale)
    return fig


def animation_frames(frames: np.ndarray, heat: np.ndarray, title: str, frame_labels: Sequence[str],
                     size: float = 3.2) -> np.ndarray:
    """One picture per frame (the heat map over it, the title and frame label, a colour
    scale): ``uint8 (T, H', W', 3)``. One figure is drawn and its image replaced frame by frame."""
    fig = Figure(figsize=(size + 0.9, size + 0.5))
    ax = fig.subplots()
    image = ax.imshow(np.clip(blend(frames[0], heat[0]), 0, 1), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    caption = ax.set_title(f"{title}\n{frame_labels[0]}", fontsize=7)
    _colour_bar(fig, ax, "relevance")
    fig.tight_layout()
    out = []
    for i in range(len(frames)):
        image.set_data(np.clip(blend(frames[i], heat[i]), 0, 1))
        caption.set_text(f"{title}\n{frame_labels[i]}")
        out.append(figure_pixels(fig))
    return np.stack(out)


def write_animation(path: str | os.PathLike, pictures: np.ndarray, fps: int = 4) -> Path:
    """Write ``uint8 (T, H, W, 3)`` pictures as an animated GIF (``.gif``, Pillow) or a video
    (``.mp4`` and the other video endings, PyAV), atomically."""
    from PIL import Image

    from ..data.video.io import write_video

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(p) for p in pictures]
        with atomic_path(path) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=int(1000 / fps), loop=0)
    else:
        h, w = pictures.shape[1:3]
        even = pictures[:, : h - h % 2, : w - w % 2]  # H.264 wants even sizes
        # beside the target with its ending (the encoder follows it), renamed when complete
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
        try:
            write_video(tmp, np.ascontiguousarray(even), fps=fps)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path
