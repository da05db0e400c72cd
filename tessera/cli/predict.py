"""``tessera predict --checkpoint CKPT FILE...``: the top-k classes of each image (image
models) or video (video models: a video file or a folder of frame images) with their
probabilities, from a model trained by ``tessera train`` (a run directory or a weights
file; the class names are stored with the weights). A video is scored with the softmax
averaged over its test views (the recipe's clips x crops).

For a segmentation model, each image's predicted label map is written to ``--output``
(default ``predictions``) twice: ``NAME_overlay.png`` (the image with every pixel tinted in
its class colour) and ``NAME_labels.png`` (a palette PNG whose pixel values are the class
indices), and the classes covering most of the image are printed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images or videos with a trained model", description=__doc__)
    p.add_argument("images", nargs="+", metavar="FILE", help="images, or videos for a video model")
    p.add_argument("--checkpoint", required=True, help="a run directory or a .safetensors file")
    p.add_argument("--top-k", type=count(1), default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per line and file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--output", "-o", default="predictions",
                   help="segmentation: the folder of the overlay and label-map PNGs (default: predictions)")
    p.set_defaults(func=run)


def _predict_image(model, info, path: str, top_k: int):
    from PIL import Image

    from ..train.evaluation import predict_images

    with Image.open(path) as img:
        return predict_images(model, info, [img], top_k)[0]


def run(args: argparse.Namespace) -> int:
    from ..data.images import error_reason
    from ..data.video.io import READ_ERRORS
    from ..train import distributed
    from ..train.checkpoint import load_trained_model
    from ..train.evaluation import predict_videos

    model, info = load_trained_model(args.checkpoint, distributed.resolve_device(args.device))
    if info.get("task") == "segmentation":
        return run_segmentation(args, model, info)
    video = info["data"].get("kind") == "video"
    what, key = ("video", "video") if video else ("image", "image")
    failed = 0
    for path in args.images:
        try:
            top = predict_videos(model, info, [path], args.top_k)[0] if video else _predict_image(model, info, path,
                                                                                                  args.top_k)
        except (*READ_ERRORS, SyntaxError) as e:
            print(f"tessera predict: error: {path}: not a readable {what} ({error_reason(e, path)})", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({key: path, "top_k": [{"label": c, "probability": p} for c, p in top]}))
        else:
            print(f"{path}: " + ", ".join(f"{c} ({p:.3f})" for c, p in top))
    return 2 if failed else 0


def write_segmentation(image, labels, colours, folder: Path, stem: str) -> tuple[Path, Path]:
    """``stem_overlay.png`` and ``stem_labels.png`` of one prediction in ``folder``."""
    import numpy as np
    from PIL import Image

    from ..atomic import atomic_path
    from ..train.seg_inference import label_map_image, overlay

    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{stem}_overlay.png", folder / f"{stem}_labels.png"
    pictures = Image.fromarray(overlay(np.array(image.convert("RGB")), labels, colours)), label_map_image(labels,
                                                                                                        colours)
    for path, picture in zip(paths, pictures):
        with atomic_path(path) as tmp:
            picture.save(tmp, format="PNG")
    return paths


def run_segmentation(args: argparse.Namespace, model, info: dict) -> int:
    import numpy as np
    from PIL import Image

    from ..data.images import error_reason
    from ..data.seg_classes import palette
    from ..train.seg_inference import predict_segmentation

    classes = info["classes"]
    colours = palette(len(classes))
    folder = Path(args.output)
    failed = 0
    for path in args.images:
        try:
            with Image.open(path) as img:
                image = img.convert("RGB")
        except (OSError, ValueError, SyntaxError) as e:
            print(f"tessera predict: error: {path}: not a readable image ({error_reason(e, path)})", file=sys.stderr)
            failed += 1
            continue
        labels = predict_segmentation(model, info, [image])[0]
        overlay_path, labels_path = write_segmentation(image, labels, colours, folder, Path(path).stem)
        counts = np.bincount(labels.ravel(), minlength=len(classes)) / labels.size
        top = [(classes[i], float(counts[i])) for i in np.argsort(-counts)[: args.top_k] if counts[i] > 0]
        if args.json:
            print(json.dumps({"image": path, "overlay": str(overlay_path), "labels": str(labels_path),
                              "classes": [{"label": c, "fraction": f} for c, f in top]}))
        else:
            shares = ", ".join(f"{c} {100 * f:.1f} %" for c, f in top)
            print(f"{path}: {overlay_path}, {labels_path}  ({shares})")
    return 2 if failed else 0
