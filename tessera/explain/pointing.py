"""The pointing game (Zhang et al., 2016): does an explanation's peak fall on the evidence?

For every image (and every frame of a clip), the explanation of the true class is computed
and its maximum located; it is a hit when it lies inside the evidence's box, or within a
tolerance of it. The original game allows 15 pixels at 224x224 (:func:`standard_tolerance`
scales that to the input: 4 pixels at 64, 2 at 32); the results keep each peak's distance
from the box, so the figure can be read strictly (tolerance 0) and with the tolerance.

The built-in data knows where its evidence is:

* digit scenes (:mod:`tessera.data.digit_scenes`) with one digit per scene: the class is
  the digit and the evidence its box;
* the moving digits (:mod:`tessera.data.moving_digits`): the digit's box in every frame,
  known from its motion. The canvas wraps around, so the box of a digit crossing an edge is
  split into up to four rectangles; the frame's crop may cut it further.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import nn

from .inputs import Geometry, Prepared, prepare_clip, prepare_image

#: a box ``(x0, y0, x1, y1)`` in pixels, ends exclusive
Box = tuple[int, int, int, int]


def wrapped_boxes(y: int, x: int, height: int, width: int, canvas: tuple[int, int]) -> list[Box]:
    """The rectangles covered by a ``height x width`` box whose top-left corner is at
    ``(y, x)`` on a canvas that wraps around (a box crossing an edge comes back at the
    other): up to four pieces."""
    ch, cw = canvas
    y, x = y % ch, x % cw
    rows = [(y, min(y + height, ch))] + ([(0, y + height - ch)] if y + height > ch else [])
    cols = [(x, min(x + width, cw))] + ([(0, x + width - cw)] if x + width > cw else [])
    return [(x0, y0, x1, y1) for y0, y1 in rows for x0, x1 in cols]


def box_distance(point: Sequence[int], boxes: Sequence[Box]) -> int:
    """How many pixels pixel ``(y, x)`` lies outside the nearest of ``boxes`` (the larger of
    the row and column distances; 0 inside)."""
    y, x = point
    return min(max(y0 - y, 0, y - (y1 - 1), x0 - x, x - (x1 - 1)) for x0, y0, x1, y1 in boxes)


def in_boxes(point: Sequence[int], boxes: Sequence[Box], tolerance: int = 0) -> bool:
    """Whether pixel ``(y, x)`` lies in one of ``boxes``, or within ``tolerance`` pixels."""
    return box_distance(point, boxes) <= tolerance


def standard_tolerance(side: int) -> int:
    """The pointing game's tolerance, 15 pixels at 224, for an input of ``side`` pixels."""
    return round(15 * side / 224)


def boxes_in_crop(boxes: Sequence[Box], geometry: Geometry, size: int) -> list[Box]:
    """Source boxes as crop pixels (the parts inside the crop)."""
    out = [geometry.box_to_crop(*b, size) for b in boxes]
    return [b for b in out if b is not None]


@dataclass
class PointingResult:
    """For every image (or frame): how far its peak lies from the evidence (0: inside), and
    whether the model's top-1 class was right; ``tolerance`` is the standard one for the input."""

    distances: list[int] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    unit: str = "image"
    tolerance: int = 0

    def hits(self, tolerance: int | None = None) -> int:
        """Peaks inside the boxes (``tolerance`` 0) or within ``tolerance`` pixels of them
        (default the standard tolerance)."""
        tolerance = self.tolerance if tolerance is None else tolerance
        return sum(d <= tolerance for d in self.distances)

    def accuracy(self, tolerance: int | None = None) -> float:
        """The pointing-game figure in percent (default: with the standard tolerance)."""
        return 100.0 * self.hits(tolerance) / max(len(self.distances), 1)

    @property
    def top1(self) -> float:
        return 100.0 * sum(self.correct) / max(len(self.correct), 1)

    def __str__(self) -> str:
        return (f"pointing game: {self.accuracy():.1f} % of {len(self.distances)} held-out {self.unit}s within "
                f"{self.tolerance} px of the box (15 px at 224), {self.accuracy(0):.1f} % inside it")


#: ``(model, input, targets) -> Explanation``: what the game scores (default Grad-CAM)
Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], object]


def _cam(method: str, layer: str | None) -> Explainer:
    from .cam import grad_cam

    return lambda model, x, target: grad_cam(model, x, target=target, layer=layer, method=method)


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def pointing_game_images(model: nn.Module, info: dict, samples: Sequence[tuple[Image.Image, int, Sequence[Box]]],
                         method: str = "gradcam", layer: str | None = None, batch_size: int = 32,
                         explain: Explainer | None = None) -> PointingResult:
    """The pointing game on images: ``samples`` are ``(image, class, evidence boxes in the
    image's pixels)``; each image is cut as the model's evaluation and explained for its
    class (by ``explain``, default Grad-CAM with ``method`` at ``layer``)."""
    explain = explain or _cam(method, layer)
    result = PointingResult(unit="image", tolerance=standard_tolerance(info["data"]["img_size"]))
    device = _device(model)
    for start in range(0, len(samples), batch_size):
        part = samples[start : start + batch_size]
        prepared = [prepare_image(img, info) for img, _, _ in part]
        x = torch.cat([p.tensor for p in prepared]).to(device)
        labels = torch.tensor([label for _, label, _ in part])
        out = explain(model, x, labels.to(device))
        peaks = out.peaks().cpu().tolist()
        predicted = out.probs.argmax(1).cpu()
        size = x.shape[-1]
        for p, (_, label, boxes), peak, guess in zip(prepared, part, peaks, predicted.tolist()):
            result.distances.append(box_distance(peak, boxes_in_crop(boxes, p.geometry, size)))
            result.correct.append(guess == label)
    return result


def pointing_game_clips(model: nn.Module, info: dict,
                        samples: Sequence[tuple[object, int, Callable[[int], Sequence[Box]]]],
                        method: str = "gradcam", layer: str | None = None, batch_size: int = 16,
                        explain: Explainer | None = None) -> PointingResult:
    """The pointing game on the frames of videos: ``samples`` are ``(frame source, class,
    frame index -> evidence boxes in that frame's pixels)``; each video gives the clip of the
    model's validation, explained for its class, and every frame of the clip counts where
    some evidence is in the crop."""
    explain = explain or _cam(method, layer)
    result = PointingResult(unit="frame", tolerance=standard_tolerance(info["data"]["img_size"]))
    device = _device(model)
    for start in range(0, len(samples), batch_size):
        part = samples[start : start + batch_size]
        prepared: list[Prepared] = [prepare_clip(source, info) for source, _, _ in part]
        x = torch.cat([p.tensor for p in prepared]).to(device)
        labels = torch.tensor([label for _, label, _ in part])
        out = explain(model, x, labels.to(device))
        predicted = out.probs.argmax(1).cpu().tolist()
        size = x.shape[-1]
        for i, (p, (_, label, boxes_of)) in enumerate(zip(prepared, part)):
            for t, frame in enumerate(p.frames):
                boxes = boxes_in_crop(boxes_of(frame), p.geometry, size)
                if not boxes:  # the digit is outside the crop: no evidence in this frame
                    continue
                peak = torch.unravel_index(out.maps[i, t].argmax(), out.maps.shape[2:])
                result.distances.append(box_distance([int(c) for c in peak], boxes))
                result.correct.append(predicted[i] == label)
    return result


# ---------------------------------------------------------------------------------------
# The built-in data
# ---------------------------------------------------------------------------------------


def digit_scene_samples(scenes) -> list[tuple[Image.Image, int, list[Box]]]:
    """``(image, class, [box])`` of one-digit scenes (:func:`tessera.data.digit_scenes.make_scenes`)."""
    from ..data.digit_scenes import render_scene

    out = []
    for scene in scenes:
        if len(scene.digits) != 1:
            raise ValueError(f"a scene for the pointing game holds one digit, not {len(scene.digits)}")
        image, _ = render_scene(scene)
        digit = scene.digits[0]
        out.append((Image.fromarray(image), digit.label, [digit.box]))
    return out


def moving_digit_samples(motions) -> list[tuple[object, int, Callable[[int], list[Box]]]]:
    """``(frames, class, frame -> boxes)`` of moving digits (:class:`tessera.data.moving_digits.Motion`):
    the digit's square in frame ``t`` starts at its start position moved ``t`` steps, on the
    wrapping canvas."""
    from ..data.moving_digits import CLASSES, DIGIT_SIZE, DIRECTIONS, HEIGHT, SPEED, WIDTH, render
    from ..data.video.io import FrameArray

    out = []
    for m in motions:
        dy, dx = DIRECTIONS[CLASSES[m.label]]

        def boxes(t: int, m=m, dy=dy, dx=dx) -> list[Box]:
            return wrapped_boxes(m.y0 + SPEED * dy * t, m.x0 + SPEED * dx * t, DIGIT_SIZE, DIGIT_SIZE, (HEIGHT, WIDTH))

        out.append((FrameArray(render(m)), m.label, boxes))
    return out


def scenes_pointing_game(model: nn.Module, info: dict, split: str = "test", count: int | None = None,
                         **kwargs) -> PointingResult:
    """The pointing game on the built-in one-digit scenes of ``split`` (the set the
    ``digit_scenes`` data gives for it)."""
    from ..data.digit_scenes import scene_split

    return pointing_game_images(model, info, digit_scene_samples(scene_split(split, count)), **kwargs)


def moving_digits_pointing_game(model: nn.Module, info: dict, split: str = "test", per_class: int | None = None,
                                **kwargs) -> PointingResult:
    """The pointing game on every frame of the built-in moving digits of ``split``."""
    from ..data.moving_digits import moving_digits_split

    return pointing_game_clips(model, info, moving_digit_samples(moving_digits_split(split, per_class)), **kwargs)

