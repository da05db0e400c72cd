"""``tessera evaluate --checkpoint CKPT --data DATA [--json]``: top-1, top-5, loss and
per-class accuracy of a trained model on a data set, and a confusion-matrix PNG.

CKPT is a run directory (its best weights) or a weights file written by ``tessera train``;
DATA is what the model was trained on: a folder of class folders or a built-in set
(``digits``, ``moving_digits``: their test split) for images and videos, or an annotation
list for videos (paths relative to the list's folder, or to ``--video-prefix``).

A video model is scored with the test views of its recipe (``data.num_clips`` clips x
``data.num_crops`` crops; ``--clips``/``--crops`` change them): the video-level scores
average the softmax over the views (the official protocol), the clip-level scores take
every view on its own.

A segmentation model is scored on a segmentation folder (ADE20K, VOC, Cityscapes layouts,
``PATH:SPLIT`` for another split) or ``digit_scenes``: mIoU, pixel accuracy, mean accuracy,
mean Dice and each class's IoU, accuracy and Dice, with the test protocol of its recipe
(``--mode``, ``--stride``, ``--ratios``, ``--flip`` change it; ``--aug-test`` is mmseg's
multi-scale + flip testing: ratios 0.5 to 1.75 and flips).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a trained model on a data set", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run directory or a .safetensors file")
    p.add_argument("--data", required=True,
                   help="a folder of class folders, an annotation list (videos), or a built-in set (digits)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch-size", type=count(1), default=64, help="samples (videos: with all their views) per batch")
    p.add_argument("--workers", type=count(0), default=2)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--confusion", help="where to write the confusion matrix (default: beside the checkpoint)")
    p.add_argument("--video-prefix", help="videos: the folder an annotation list's paths are relative to")
    p.add_argument("--clips", type=count(1), help="videos: test clips per video (default: the recipe's data.num_clips)")
    p.add_argument("--crops", type=int, choices=(1, 3), help="videos: spatial crops per clip (default: data.num_crops)")
    p.add_argument("--mode", choices=("whole", "slide"), help="segmentation: whole-image or sliding-window inference")
    p.add_argument("--stride", type=_pair, help="segmentation: the sliding windows' stride H,W (or one number)")
    p.add_argument("--ratios", type=_ratios, help="segmentation: test scales as ratios of the test scale, e.g. 0.5,1,1.5")
    p.add_argument("--flip", action="store_true", help="segmentation: add horizontally flipped views")
    p.add_argument("--aug-test", action="store_true",
                   help="segmentation: multi-scale + flip testing (ratios 0.5, 0.75, 1, 1.25, 1.5, 1.75 and flips)")
    p.set_defaults(func=run)


def _pair(text: str) -> tuple[int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected one or two positive integers H,W, got {text!r}")
    return values * 2 if len(values) == 1 else values


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers separated by commas, got {text!r}")
    return values


#: mmseg's multi-scale testing ratios (the published multi-scale + flip numbers)
AUG_TEST_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def run(args: argparse.Namespace) -> int:
    from ..data import build_augment, build_dataset
    from ..data.loader import ShardSampler, SkippedSamples, build_loader
    from ..errors import DataError
    from ..train import distributed
    from ..train.checkpoint import load_trained_model
    from ..train.evaluation import clip_scores, data_config, evaluate
    from ..train.metrics import ClassificationMeter
    from ..train.plots import plot_confusion

    info = distributed.DistInfo(device=distributed.resolve_device(args.device))
    model, run_info = load_trained_model(args.checkpoint, info.device)
    if run_info.get("task") == "segmentation":
        return run_segmentation(args, model, run_info, info)
    d = run_info["data"]
    cfg = data_config(run_info)  # the training run's data settings
    video = cfg.kind == "video"
    cfg.video_prefix = args.video_prefix  # a list's paths: relative to the list, not to the training's prefix
    if args.clips is not None:
        cfg.num_clips = args.clips
    if args.crops is not None:
        cfg.num_crops = args.crops
    classes = run_info["classes"]
    dataset = build_dataset(cfg, "test", classes=classes, source=args.data)
    loader = build_loader(dataset, ShardSampler(len(dataset)), args.batch_size, args.workers,
                          info.device.type == "cuda")
    skipped = SkippedSamples("evaluation", len(dataset), 1.0)
    views = getattr(dataset, "num_views", 1)
    clips = ClassificationMeter(len(classes), info.device) if video else None
    meter = evaluate(model, loader, build_augment(cfg, None, d["mean"], d["std"]).to(info.device), len(classes),
                     info, skipped=skipped, progress=None if args.json else "evaluate", per_view=clips,
                     max_views=cfg.max_testing_views)
    res = meter.result()
    if not res["num_samples"]:
        raise DataError(f"{args.data}: none of its {len(dataset)} samples could be read (each is named above)")
    if clips is not None:
        res.update(clip_scores(clips, views))
    per_class = dict(zip(classes, meter.per_class_accuracy()))
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(args.data.rstrip("/")).name or "data").strip("-")
    confusion = Path(args.confusion or Path(run_info["checkpoint"]).parent / f"confusion-{slug}.png")
    plot_confusion(meter.confusion.cpu().tolist(), classes, confusion, title=f"{args.data} ({res['num_samples']} samples)")
    if args.json:
        print(json.dumps({**res, "per_class_top1": per_class, "skipped_samples": len(skipped),
                          "checkpoint": run_info["checkpoint"], "confusion_png": str(confusion)}))
        return 0
    print(f"checkpoint   {run_info['checkpoint']} ({run_info['model']}, epoch {run_info.get('epoch', '?')})")
    unit = "videos" if video else "samples"
    print(f"data         {args.data}: {res['num_samples']} {unit}, {len(classes)} classes"
          + (f", {len(skipped)} unreadable skipped" if len(skipped) else ""))
    if video:
        protocol = f"{cfg.num_clips if not cfg.frame_uniform else 1} clips x {cfg.num_crops} crops"
        print(f"video level  top-1 {res['top1']:.2f} %  top-5 {res['top5']:.2f} %  "
              f"(softmax averaged over {views} views: {protocol})")
        print(f"clip level   top-1 {res['clip_top1']:.2f} %  top-5 {res['clip_top5']:.2f} %  "
              f"({res['num_clips']} views scored one by one)")
    else:
        print(f"top-1        {res['top1']:.2f} %")
        print(f"top-5        {res['top5']:.2f} %")
    print(f"loss         {res['loss']:.4f}")
    print("per-class top-1:")
    counts = meter.confusion.sum(1).tolist()
    width = max(len(c) for c in classes)
    for (name, acc), n in zip(per_class.items(), counts):
        print(f"  {name:<{width}}  {acc:6.2f} %  ({n} {unit})" if n else f"  {name:<{width}}     -     (0 {unit})")
    print(f"confusion matrix: {confusion}")
    return 0


def run_segmentation(args: argparse.Namespace, model, run_info: dict, info) -> int:
    import dataclasses

    from ..data import build_augment, build_dataset
    from ..data.loader import ShardSampler, SkippedSamples, build_loader
    from ..errors import DataError
    from ..train.evaluation import data_config
    from ..train.plots import plot_confusion
    from ..train.seg_inference import EvalProtocol, evaluate_segmentation
    from ..train.tasks import segmentation_report

    d = run_info["data"]
    cfg = data_config(run_info)
    protocol = EvalProtocol.from_data(cfg)
    changes = {"mode": args.mode, "stride": args.stride, "ratios": AUG_TEST_RATIOS if args.aug_test else args.ratios,
               "flip": True if (args.flip or args.aug_test) else None}
    protocol = dataclasses.replace(protocol, **{k: v for k, v in changes.items() if v is not None})
    classes = run_info["classes"]
    dataset = build_dataset(cfg, "test", classes=classes, source=args.data)
    loader = build_loader(dataset, ShardSampler(len(dataset)), args.batch_size, args.workers,
                          info.device.type == "cuda")
    skipped = SkippedSamples("evaluation", len(dataset), 1.0)
    meter = evaluate_segmentation(model, loader, build_augment(cfg, None, d["mean"], d["std"]).to(info.device),
                                  protocol, len(classes), info, skipped=skipped,
                                  progress=None if args.json else "evaluate", ignore_index=cfg.ignore_index,
                                  align_corners=bool(getattr(model, "align_corners", False)))
    res = segmentation_report(meter, classes, protocol)
    if not res["num_samples"]:
        raise DataError(f"{args.data}: none of its {len(dataset)} samples could be read (each is named above)")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(args.data.rstrip("/")).name or "data").strip("-")
    confusion = Path(args.confusion or Path(run_info["checkpoint"]).parent / f"confusion-{slug}.png")
    plot_confusion(meter.confusion.cpu().tolist(), classes, confusion,
                   title=f"{args.data} ({res['num_samples']} images, pixels)")
    if args.json:
        print(json.dumps({**res, "skipped_samples": len(skipped), "checkpoint": run_info["checkpoint"],
                          "confusion_png": str(confusion)}))
        return 0
    print(f"checkpoint   {run_info['checkpoint']} ({run_info['model']}, epoch {run_info.get('epoch', '?')})")
    print(f"data         {args.data}: {res['num_samples']} images, {res['num_pixels']} labelled pixels, "
          f"{len(classes)} classes" + (f", {len(skipped)} unreadable skipped" if len(skipped) else ""))
    print(f"protocol     {res['protocol']}")
    print(f"mIoU         {res['miou']:.2f} %")
    print(f"pixel acc    {res['acc']:.2f} %   mean acc {res['macc']:.2f} %   mean Dice {res['mdice']:.2f} %")
    print(f"loss         {res['loss']:.4f} (per labelled pixel)")
    print("per class:          IoU      acc     Dice")
    width = max(len(c) for c in classes)
    for name, scores in res["per_class"].items():
        cells = "  ".join("     -  " if v != v else f"{v:6.2f} %" for v in scores.values())
        print(f"  {name:<{width}}  {cells}")
    print(f"confusion matrix (pixels): {confusion}")
    return 0
