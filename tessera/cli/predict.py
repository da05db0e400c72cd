"""``tessera predict --checkpoint CKPT IMAGE...``: the top-k classes of each image with
their probabilities, from a model trained by ``tessera train`` (a run directory or a
weights file; the class names are stored with the weights)."""

from __future__ import annotations

import argparse
import json
import sys

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a trained model", description=__doc__)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", required=True, help="a run directory or a .safetensors file")
    p.add_argument("--top-k", type=count(1), default=5)
    p.add_argument("--json", action="store_true", help="one JSON object per line and image")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..train import distributed
    from ..train.checkpoint import load_trained_model
    from ..train.evaluation import predict_images

    model, info = load_trained_model(args.checkpoint, distributed.resolve_device(args.device))
    failed = 0
    for path in args.images:
        try:
            with Image.open(path) as img:
                top = predict_images(model, info, [img], args.top_k)[0]
        except (OSError, ValueError, SyntaxError) as e:
            print(f"tessera predict: error: {path}: not a readable image ({e})", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps({"image": path, "top_k": [{"label": c, "probability": p} for c, p in top]}))
        else:
            print(f"{path}: " + ", ".join(f"{c} ({p:.3f})" for c, p in top))
    return 2 if failed else 0
