"""``tessera predict --checkpoint CKPT FILE...``: the top-k classes of each image (image
models) or video (video models: a video file or a folder of frame images) with their
probabilities, from a model trained by ``tessera train`` (a run directory or a weights
file; the class names are stored with the weights). A video is scored with the softmax
averaged over its test views (the recipe's clips x crops)."""

from __future__ import annotations

import argparse
import json
import sys

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images or videos with a trained model", description=__doc__)
    p.add_argument("images", nargs="+", metavar="FILE", help="images, or videos for a video model")
    p.add_argument("--checkpoint", required=True, help="a run directory or a .safetensors file")
    p.add_argument("--top-k", type=count(1), default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per line and file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def _predict_image(model, info, path: str, top_k: int):
    from ..data.images import read_image
    from ..train.evaluation import predict_images

    return predict_images(model, info, [read_image(path)], top_k)[0]


def run(args: argparse.Namespace) -> int:
    from ..data.images import error_reason
    from ..data.video.io import READ_ERRORS
    from ..train import distributed
    from ..train.checkpoint import load_trained_model
    from ..train.evaluation import predict_videos

    model, info = load_trained_model(args.checkpoint, distributed.resolve_device(args.device))
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
