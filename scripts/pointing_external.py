"""The pointing game of a demo model on digit scenes and moving digits drawn here, with none
of tessera's own scene or video generators: other canvases, other clutter, other seeds,
digits resized another way. Only scikit-learn's held-out digits are shared (the digits'
test split, so that the model has never seen them).

    .venv/bin/python scripts/pointing_external.py runs/scenes_demo   # image scenes
    .venv/bin/python scripts/pointing_external.py runs/video_demo    # moving digits

Prints the share of samples (frames for video) whose CAM peak for the true class lies inside
the digit's box, and within the game's tolerance of it (15 px at 224), for two boxes: the
box around the digit's ink (stricter), and the square the digit was drawn in, which is what
the built-in data's boxes are. The CAM is the one the demo chose on its validation split
(``pointing.json`` in the run: method and layer), unless ``--method`` or ``--layer`` say
otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tessera.data.digits import digit_images, digits_split
from tessera.explain.cam import METHODS
from tessera.explain.pointing import pointing_game_clips, pointing_game_images
from tessera.train import load_trained_model

#: the box of a digit: the rows and columns of its sprite that hold ink (> 20 % of full)
INK = 0.2


def held_out_digits(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, int]]:
    images, labels = digit_images()
    picks = rng.choice(digits_split("test"), size=count)
    return [(images[i], int(labels[i])) for i in picks]


def sprite(digit: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 digit as a ``side x side`` float image in [0, 1], resized with a Lanczos filter
    and blurred a little (tessera's generators resize otherwise)."""
    img = Image.fromarray(digit).resize((side, side), Image.Resampling.LANCZOS).filter(ImageFilter.GaussianBlur(0.6))
    return np.clip(np.asarray(img, dtype=np.float32) / 255.0, 0, 1)


def ink_box(s: np.ndarray, x: int, y: int) -> list[tuple[int, int, int, int]]:
    """The box around the ink of sprite ``s`` (part of one) drawn at ``(x, y)``: one box, or
    none where no pixel holds ink."""
    rows, cols = np.nonzero(s.max(1) > INK)[0], np.nonzero(s.max(0) > INK)[0]
    if not len(rows):
        return []
    return [(x + int(cols[0]), y + int(rows[0]), x + int(cols[-1]) + 1, y + int(rows[-1]) + 1)]


def cluttered_canvas(rng: np.random.Generator, size: int) -> np.ndarray:
    """A canvas of ``size`` with a tinted noise floor, random lines and rings as bright as a
    digit: float RGB in [0, 1]."""
    base = rng.uniform(0.0, 0.25, 3)[None, None] + rng.normal(0, 0.04, (size, size, 3))
    clutter = Image.new("L", (size, size))
    draw = ImageDraw.Draw(clutter)
    for _ in range(rng.integers(3, 7)):
        x0, y0, x1, y1 = rng.integers(0, size, 4).tolist()
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=int(rng.integers(120, 255)), width=int(rng.integers(1, 3)))
        else:
            r = int(rng.integers(3, 9))
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), outline=int(rng.integers(120, 255)), width=1)
    return np.clip(base + (np.asarray(clutter, np.float32) / 255.0)[..., None] * 0.8, 0, 1)


def external_scenes(count: int, seed: int, size: int = 72) -> list[tuple[Image.Image, int, dict]]:
    """``(image, class, {"ink": [box], "square": [box]})``: one held-out digit of 22 to 36
    pixels on a cluttered ``size x size`` canvas (resized to the model's input by its
    evaluation crop)."""
    rng = np.random.default_rng(seed)
    out = []
    for digit, label in held_out_digits(rng, count):
        side = int(rng.integers(22, 37))
        s = sprite(digit, side)
        canvas = cluttered_canvas(rng, size)
        x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
        tint = rng.uniform(0.75, 1.0, 3)
        patch = canvas[y : y + side, x : x + side]
        canvas[y : y + side, x : x + side] = np.maximum(patch, s[..., None] * tint)
        boxes = {"ink": ink_box(s, x, y), "square": [(x, y, x + side, y + side)]}
        out.append((Image.fromarray(np.round(canvas * 255).astype(np.uint8)), label, boxes))
    return out


def external_videos(count: int, seed: int, info: dict, height: int = 32, width: int = 40, frames: int = 24,
                    speed: int | None = None):
    """``(frames, class, frame -> {"ink": boxes, "square": boxes})``: a held-out digit moving
    in a straight line (no wrap-around: it leaves the canvas instead) over faint noise, placed
    so that it is whole in the clip the model's validation takes (the middle ``clip_len``
    frames)."""
    from tessera.data.moving_digits import CLASSES, DIRECTIONS, SPEED  # what a class means: (dy, dx) per frame
    from tessera.data.video.io import FrameArray

    speed = SPEED if speed is None else speed  # pixels per frame: the classes' own speed

    rng = np.random.default_rng(seed)
    clip = info["data"]["clip_len"] * info["data"].get("frame_interval", 1)
    first = (frames - clip) // 2
    out = []
    for digit, _ in held_out_digits(rng, count):
        label = int(rng.integers(0, len(CLASSES)))
        dy, dx = DIRECTIONS[CLASSES[label]]
        side = int(rng.integers(13, 18))
        s = sprite(digit, side)
        travel = speed * (clip - 1)
        # the position at the clip's first frame, chosen so that its last frame is inside too
        ys = (max(0, -dy * travel), height - side - max(0, dy * travel))
        xs = (max(0, -dx * travel), width - side - max(0, dx * travel))
        y0, x0 = int(rng.integers(ys[0], ys[1] + 1)), int(rng.integers(xs[0], xs[1] + 1))
        video = np.clip(rng.normal(0.03, 0.02, (frames, height, width)), 0, 1).astype(np.float32)
        boxes = {}
        for t in range(frames):
            y, x = y0 + speed * dy * (t - first), x0 + speed * dx * (t - first)
            top, left = max(y, 0), max(x, 0)
            bottom, right = min(y + side, height), min(x + side, width)
            if top >= bottom or left >= right:
                boxes[t] = {"ink": [], "square": []}
                continue
            part = s[top - y : bottom - y, left - x : right - x]
            video[t, top:bottom, left:right] = np.maximum(video[t, top:bottom, left:right], part)
            boxes[t] = {"ink": ink_box(part, left, top), "square": [(left, top, right, bottom)]}
        rgb = np.repeat(np.round(video * 255).astype(np.uint8)[..., None], 3, axis=-1)
        out.append((FrameArray(rgb), label, lambda t, boxes=boxes: boxes[t]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory of tessera demo (image or --video)")
    parser.add_argument("--count", type=int, default=600, help="scenes or videos (default 600, 360 for video)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--method", choices=METHODS,
                        help="default: the run's pointing.json, else gradcam")
    parser.add_argument("--layer", help="default: the run's pointing.json, else the family's CAM layer")
    args = parser.parse_args()
    model, info = load_trained_model(args.run)
    chosen_file = Path(args.run) / "pointing.json"
    chosen = json.loads(chosen_file.read_text()) if chosen_file.is_file() else {}
    cam = {"method": args.method or chosen.get("method", "gradcam"), "layer": args.layer or chosen.get("layer")}
    video = info["data"].get("kind") == "video"
    if video:
        samples = external_videos(args.count if args.count != 600 else 360, args.seed, info)
        what = "moving digits drawn here"
    else:
        samples = external_scenes(args.count, args.seed)
        what = "digit scenes drawn here"
    print(f"{what}: {cam['method']} ({cam['layer'] or 'default layer'}) peak of the true class")
    for box, name in (("ink", "the box around the digit's ink"), ("square", "the square the digit was drawn in")):
        if video:
            result = pointing_game_clips(model, info, [(frames, label, lambda t, boxes=boxes, box=box: boxes(t)[box])
                                                       for frames, label, boxes in samples], **cam)
        else:
            result = pointing_game_images(model, info, [(image, label, boxes[box]) for image, label, boxes in samples],
                                          **cam)
        print(f"  inside {name}: {result.accuracy(0):.1f} % of {len(result.distances)} {result.unit}s, within "
              f"{result.tolerance} px: {result.accuracy():.1f} %; top-1 {result.top1:.1f} %")


if __name__ == "__main__":
    main()
