"""``tessera evaluate --checkpoint CKPT --data ROOT [--json]``: top-1, top-5, loss and
per-class accuracy of a trained model on a data set, and a confusion-matrix PNG.

CKPT is a run directory (its best weights) or a weights file written by ``tessera train``;
ROOT is a folder of class folders or a built-in set (``digits`` is its test split).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained model on a data set", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run directory or a .safetensors file")
    p.add_argument("--data", required=True, help="a folder of class folders, or a built-in set (digits)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch-size", type=count(1), default=64)
    p.add_argument("--workers", type=count(0), default=2)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--confusion", help="where to write the confusion matrix (default: beside the checkpoint)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data import build_augment, build_dataset
    from ..data.loader import ShardSampler, SkippedSamples, build_loader
    from ..train import distributed
    from ..train.checkpoint import load_trained_model
    from ..train.evaluation import evaluate
    from ..train.plots import plot_confusion
    from ..train.recipe import DataConfig

    info = distributed.DistInfo(device=distributed.resolve_device(args.device))
    model, run_info = load_trained_model(args.checkpoint, info.device)
    d = run_info["data"]
    known = {f.name for f in dataclasses.fields(DataConfig)}
    cfg = DataConfig(**{k: v for k, v in d.items() if k in known})  # the training run's data settings
    classes = run_info["classes"]
    dataset = build_dataset(cfg, "test", classes=classes, source=args.data)
    loader = build_loader(dataset, ShardSampler(len(dataset)), args.batch_size, args.workers,
                          info.device.type == "cuda")
    skipped = SkippedSamples("evaluation", len(dataset), 1.0)
    meter = evaluate(model, loader, build_augment(cfg, None, d["mean"], d["std"]).to(info.device), len(classes),
                     info, skipped=skipped, progress=None if args.json else "evaluate")
    res = meter.result()
    per_class = dict(zip(classes, meter.per_class_accuracy()))
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(args.data.rstrip("/")).name or "data").strip("-")
    confusion = Path(args.confusion or Path(run_info["checkpoint"]).parent / f"confusion-{slug}.png")
    plot_confusion(meter.confusion.cpu().tolist(), classes, confusion, title=f"{args.data} ({res['num_samples']} samples)")
    if args.json:
        print(json.dumps({**res, "per_class_top1": per_class, "skipped_samples": len(skipped),
                          "checkpoint": run_info["checkpoint"], "confusion_png": str(confusion)}))
        return 0
    print(f"checkpoint   {run_info['checkpoint']} ({run_info['model']}, epoch {run_info.get('epoch', '?')})")
    print(f"data         {args.data}: {res['num_samples']} samples, {len(classes)} classes"
          + (f", {len(skipped)} unreadable skipped" if len(skipped) else ""))
    print(f"top-1        {res['top1']:.2f} %")
    print(f"top-5        {res['top5']:.2f} %")
    print(f"loss         {res['loss']:.4f}")
    print("per-class top-1:")
    counts = meter.confusion.sum(1).tolist()
    width = max(len(c) for c in classes)
    for (name, acc), n in zip(per_class.items(), counts):
        print(f"  {name:<{width}}  {acc:6.2f} %  ({n} samples)" if n else f"  {name:<{width}}     -     (0 samples)")
    print(f"confusion matrix: {confusion}")
    return 0
