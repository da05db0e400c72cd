"""``tessera explain --checkpoint SOURCE FILE...``: what the model looks at in each image or
video. For every file: the class explained (the top-1, or ``--target``), its score, and a
picture of the explanation over the input as the model sees it (the evaluation crop; for a
video, the validation clip): a PNG for images; for videos a strip of the clip's frames
(PNG) and an animation (GIF or MP4).

Methods:
  gradcam, gradcam++  Grad-CAM / Grad-CAM++ of the class at the family's default layer
                      (Swin: the last block's norm2 of the last stage with a map of 7 or
                      more tokens a side; the ViT family: the last block's norm1) or --layer
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

METHODS = ("gradcam", "gradcam++", "rollout", "attention")


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


def load_model_source(checkpoint: str | None, model_name: str | None, overrides: list[str], device):
    """The model of a ``--checkpoint SOURCE`` (and ``--model NAME``) and its run information
    (classes, preprocessing): ``(model in eval mode, info)``.

    * a run directory or weights file of ``tessera train``: the model and information it holds;
    * a weights directory (``config.json`` + ``model.safetensors``): :func:`tessera.from_pretrained`;
    * ``--model NAME`` (``KEY=VALUE`` arguments) with any checkpoint tessera reads, or without
      one (random weights); a registered name as SOURCE is the same as ``--model NAME``.

    Models without run information are preprocessed by their ``default_cfg`` and their
    classes named by index."""
    from ..errors import ConfigError
    from ..explain.inputs import model_info
    from ..registry import create_model, is_model
    from ..train.checkpoint import load_trained_model
    from ..weights import from_pretrained, load_checkpoint
    from ..weights.io import CONFIG_NAME
    from .convert import parse_overrides

    args = parse_overrides(overrides)
    if model_name is None and checkpoint is not None and not Path(checkpoint).exists() and is_model(checkpoint):
        model_name, checkpoint = checkpoint, None
    if model_name is not None:
        model = create_model(model_name, **args)
        if checkpoint is not None:
            load_checkpoint(model, checkpoint, verbose=False)
        return model.to(device).eval(), model_info(model)
    if checkpoint is None:
        raise ConfigError("give --checkpoint SOURCE (a run directory, a weights file or directory) or --model NAME")
    if args:
        raise ConfigError(f"KEY=VALUE arguments ({' '.join(overrides)}) go with --model NAME")
    if Path(checkpoint).is_dir() and (Path(checkpoint) / CONFIG_NAME).is_file():
        model = from_pretrained(checkpoint)
        return model.to(device).eval(), model_info(model)
    return load_trained_model(checkpoint, device)


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
