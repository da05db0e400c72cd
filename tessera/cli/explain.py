"""``tessera explain --checkpoint SOURCE FILE...``: what the model looks at in each image or
video. For every file: the class explained (the top-1, or ``--target``), its score, and a
picture of the explanation over the input as the model sees it (the evaluation crop; for a
video, the validation clip): a PNG for images; for videos a strip of the clip's frames
(PNG) and an animation (GIF or MP4).

Methods:
  gradcam, gradcam++  Grad-CAM / Grad-CAM++ of the class at the family's default layer
  layercam            (Swin: the last block's norm2 of the last stage with a map of 7 or
                      more tokens a side; the ViT family: the last block's norm1) or --layer;
                      LayerCAM weighs every position by its own gradient, which suits the
                      fine maps of early layers (e.g. --layer layers.0.blocks.-1.norm2)
  rollout             attention rollout of the class token (ViT, DeiT, DeepViT, CaiT, CPVT, CeiT)
  attention           Swin: the attention of one query (--query) over its window, in block
                      --block of stage --stage, one --head or their mean

SOURCE is a run directory or weights file of ``tessera train``, a weights directory
(config.json + model.safetensors), or any checkpoint with --model NAME; a registered name
alone gives random weights. --json prints one line per file with the class, its score and
the peak of the map in the file's pixels (x, y, and the frame t for video)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import count

METHODS = ("gradcam", "gradcam++", "layercam", "rollout", "attention")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="Grad-CAM, attention rollout and window attention of images and videos",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="images, or videos (files or frame folders); KEY=VALUE items are constructor arguments for "
                        "--model")
    p.add_argument("--checkpoint", help="a run directory, weights file or directory, or checkpoint (with --model)")
    p.add_argument("--model", help="the registered model to build (its weights from --checkpoint, any format)")
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument("--target", help="the class to explain, by name or index (default: the top-1)")
    p.add_argument("--layer", help="the CAM's layer, e.g. layers.-1.blocks.-1.norm2 (default: the family's)")
    p.add_argument("--stage", type=int, default=0, help="attention: the stage (default 0)")
    p.add_argument("--block", type=int, default=1, help="attention: the block in the stage (default 1, shifted)")
    p.add_argument("--head", type=int, help="attention: one head (default: the mean of the heads)")
    p.add_argument("--query", help="attention: the query pixel X,Y (video X,Y,T) of the input as the model sees "
                                   "it (default: the centre)")
    p.add_argument("--head-fusion", choices=("mean", "max", "min"), default="mean", help="rollout: over the heads")
    p.add_argument("--discard-ratio", type=float, default=0.0, help="rollout: fraction of the weakest weights dropped")
    p.add_argument("--animation", choices=("gif", "mp4"), default="gif", help="video: the animation's format")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--img-size", type=count(1), help="the input's side (default: the run's, or the model's own)")
    size.add_argument("--clip", help="video: frames and side of the clip, T,S (default: the run's, or the model's)")
    p.add_argument("--output", "-o", default="explanations", help="the folder of the pictures (default: explanations)")
    p.add_argument("--json", action="store_true", help="one JSON object per line and file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run, overrides=[])


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """``(files, KEY=VALUE arguments)``: an item is an argument when it looks like one and no
    such file exists."""
    import re

    files, overrides = [], []
    for item in items:
        is_argument = re.match(r"^[A-Za-z_]\w*=", item) and not Path(item).exists()
        (overrides if is_argument else files).append(item)
    return files, overrides


def load_model_source(checkpoint: str | None, model_name: str | None, overrides: list[str], device,
                      load_weights: bool = True):
    """The model of ``--model`` / ``--checkpoint`` (any source the other commands take,
    :func:`tessera.weights.resolve.resolve_model`) and its run information (classes,
    preprocessing): ``(model in eval mode, info)``.

    A bare registered name means its published default weights, as in ``tessera predict``,
    unless ``KEY=VALUE`` constructor arguments are given: then that architecture is built,
    with random weights unless ``--checkpoint`` holds some."""
    from ..errors import ConfigError
    from ..weights.resolve import resolve_model
    from .convert import parse_overrides

    if model_name is None and checkpoint is None:
        raise ConfigError("give --checkpoint SOURCE (a run directory, weights file or directory, NAME.TAG) or "
                          "--model NAME")
    args = parse_overrides(overrides)
    resolved = resolve_model(model_name, checkpoint, load_weights=load_weights, default_tag=load_weights and not args,
                             device=device, verbose=False, **args)
    return resolved.model.eval(), resolved.run_info()


def parse_query(text: str | None) -> tuple[int, ...] | None:
    """``X,Y`` or ``X,Y,T`` -> ``(y, x)`` or ``(t, y, x)``."""
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 3):
        raise ConfigError(f"--query {text!r}: expected X,Y (or X,Y,T for video), in pixels")
    return tuple(reversed(values[:2])) if len(values) == 2 else (values[2], values[1], values[0])


def video_model(info: dict) -> bool:
    return info["data"].get("kind") == "video"


def parse_clip(text: str) -> tuple[int, int]:
    """``T,S`` -> ``(T, S)``: frames per clip and the crop's side."""
    from ..errors import ConfigError

    try:
        t, side = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--clip {text!r}: expected T,S (frames, side)") from None
    if t < 1 or side < 1:
        raise ConfigError(f"--clip {text!r}: expected positive sizes")
    return t, side


def run(args: argparse.Namespace) -> int:
    from ..data.images import error_reason
    from ..data.video.io import READ_ERRORS
    from ..errors import ConfigError
    from ..explain.files import ExplainSettings, explain_file
    from ..explain.targets import ExplainError
    from ..train import distributed

    files, overrides = split_overrides(args.files)
    model, info = load_model_source(args.checkpoint, args.model, [*overrides, *args.overrides],
                                    distributed.resolve_device(args.device))
    if args.img_size is not None:
        info["data"]["img_size"] = args.img_size
    if args.clip is not None:
        if not video_model(info):
            raise ConfigError("--clip is for video models; give --img-size")
        info["data"]["clip_len"], info["data"]["img_size"] = parse_clip(args.clip)
    settings = ExplainSettings(args.method, args.target, args.layer, args.stage, args.block, args.head,
                               parse_query(args.query), args.head_fusion, args.discard_ratio, args.animation)
    video = video_model(info)
    failed = 0
    if not files:
        raise ConfigError("no FILE to explain")
    for path in files:
        try:
            record = explain_file(model, info, path, args.output, settings)
        except (ExplainError, ConfigError):
            raise  # about the options, not the file: one error for the command
        except (*READ_ERRORS, SyntaxError) as e:
            if isinstance(e, OSError) and e.filename not in (None, path):
                raise  # a file of ours (the output folder), not the input
            what = "video" if video else "image"
            print(f"tessera explain: error: {path}: not a readable {what} ({error_reason(e, path)})", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(record))
        else:
            peak = record["peak"]
            where = f"x={peak['x']}, y={peak['y']}" + (f", frame {peak['t']}" if "t" in peak else "")
            print(f"{path}: {record['class']} ({record['score']:.3f}), peak at {where} -> "
                  f"{', '.join(record['outputs'])}")
    return 2 if failed else 0
