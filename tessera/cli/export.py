"""``tessera export MODEL_OR_CHECKPOINT --format onnx|torch-export --output FILE``: write a
model as an ONNX graph or a torch.export program, then run the file and compare it with the
PyTorch model. The model is anything the other commands take: a registered name, published
weights (``swin_t.ms_in1k``), a run directory (``runs/demo``) or its ``best.safetensors``, a
weights directory or a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import count

SUFFIXES = {".onnx": "onnx", ".pt2": "torch-export"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or torch.export, verified by running it",
                       description=__doc__)
    p.add_argument("model", metavar="MODEL_OR_CHECKPOINT",
                   help="a registered name (random weights), NAME.TAG (published weights), a run directory or "
                        "its weights file, a weights directory, or a Swin / Video Swin checkpoint")
    p.add_argument("--format", choices=sorted(SUFFIXES.values()),
                   help="default: from the output's suffix (.onnx, .pt2)")
    p.add_argument("--output", "-o", required=True, type=Path, help="the file to write")
    p.add_argument("--checkpoint", help="weights to load into the model (any supported checkpoint format)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--img-size", type=count(1), help="image side (default: the model's own)")
    size.add_argument("--clip", help="video clip size T,H,W (default: the model's own)")
    p.add_argument("--batch-size", type=count(1), default=1, help="the batch of the export (default 1)")
    p.add_argument("--dynamic-batch", action="store_true", help="leave the batch axis dynamic")
    p.add_argument("--opset", type=int, help="ONNX opset (18 or newer; default: the exporter's)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not run the exported file to compare it with the model")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="the largest absolute difference from PyTorch that the check accepts (default 1e-4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..export import export

    fmt = args.format or SUFFIXES.get(args.output.suffix)
    if fmt is None:
        raise ConfigError(f"{args.output}: give --format onnx or --format torch-export (or a .onnx / .pt2 name)")
    from ..export import parse_clip
    from ..weights.resolve import resolve_model

    if args.clip is not None:
        parse_clip(args.clip)  # a typo is reported before the model is built
    resolved = resolve_model(args.model, args.checkpoint)
    weights = f"weights from {resolved.source}" if resolved.has_weights else \
        "random weights; NAME.TAG or --checkpoint loads trained ones"
    result = export(
        resolved.model, fmt, args.output, img_size=args.img_size, clip=args.clip,
        batch_size=args.batch_size, dynamic_batch=args.dynamic_batch, opset=args.opset, verify=args.verify,
        atol=args.atol,
        on_start=lambda shape: print(f"exporting {args.model} ({weights}) at input {shape} to {fmt} ...", flush=True),
    )
    print(result)
    return 0
