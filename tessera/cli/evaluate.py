"""``tessera evaluate --model NAME.TAG | --checkpoint SRC --data DATA [--json]``: top-1,
top-5, loss and per-class accuracy of a model on a data set, and a confusion-matrix PNG.

The model is published weights (``--model swin_t.ms_in1k``), a run directory or weights
file of ``tessera train``, or any checkpoint tessera reads (``--checkpoint``), prepared as
its weights were evaluated. DATA is a folder of class folders, a built-in set (``digits``,
``moving_digits``: their test split) or, for videos, an annotation list (paths relative to
the list's folder, or to ``--video-prefix``). Class folders are matched to the model's
classes by name; for ImageNet weights they may also be named by WordNet synset, as
ImageNet's own folders are (``n01440764/``, ...).

A video model is scored with its test views (``num_clips`` clips x ``num_crops`` crops;
``--clips``/``--crops`` change them): the video-level scores average the softmax over the
views (the official protocol), the clip-level scores take every view on its own.

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
    p.add_argument("--model", help="NAME.TAG of published weights (NAME: its default weights); with --checkpoint, "
                                   "the architecture of weights that do not name it")
    p.add_argument("--checkpoint", help="a run directory, or a weights file or directory of any supported format")
    p.add_argument("--data", required=True,
                   help="a folder of class folders, an annotation list (videos), or a built-in set (digits)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--batch-size", type=count(1), default=64, help="samples (videos: with all their views) per batch")
    p.add_argument("--workers", type=count(0), help="DataLoader workers (default: the cores available, at most 8)")
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


def _folder_classes(data: str, classes: list[str], label_set: str | None) -> list[str]:
    """The names the class folders of ``data`` are matched with: the model's class names, or
    for an ImageNet label set, the WordNet synsets when the folders are named by them."""
    from ..data.images import find_classes
    from ..labels import synsets

    ids = synsets(label_set) if label_set else None
    folder = Path(data)
    if ids is None or not folder.is_dir():
        return classes
    found = find_classes(folder)
    return ids if found and all(re.fullmatch(r"n\d{8}", f) for f in found) else classes


def _top5(value: float | None, before: str = "") -> str:
    """`` top-5 x %`` where top-5 is reported (more than five classes), else nothing."""
    return "" if value is None else f"{before}top-5 {value:.2f} %"


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
    from ..data.loader import ShardSampler, SkippedSamples, build_loader, default_num_workers
    from ..errors import ConfigError, DataError
    from ..train import distributed
    from ..train.evaluation import clip_scores, data_config, evaluate
    from ..train.metrics import ClassificationMeter
    from ..train.plots import plot_confusion
    from ..weights.resolve import resolve_model

    if args.model is None and args.checkpoint is None:
        raise ConfigError("give --model NAME.TAG (published weights) or --checkpoint (a run or weights file)")
    info = distributed.DistInfo(device=distributed.resolve_device(args.device))
    resolved = resolve_model(args.model, args.checkpoint, default_tag=True, require_weights=True, device=info.device)
    model, run_info = resolved.model, resolved.run_info()
    if getattr(model, "task", None) == "segmentation" or run_info.get("task") == "segmentation":
        from ..train.seg_inference import segmentation_info

        return run_segmentation(args, model, segmentation_info(run_info, model), info, resolved)
    d = run_info["data"]
    cfg = data_config(run_info)  # the weights' data settings
    video = cfg.kind == "video"
    cfg.video_prefix = args.video_prefix  # a list's paths: relative to the list, not to the training's prefix
    if args.clips is not None:
        cfg.num_clips = args.clips
    if args.crops is not None:
        cfg.num_crops = args.crops
    classes = run_info["classes"]
    dataset = build_dataset(cfg, "test", classes=_folder_classes(args.data, classes, resolved.label_set),
                            source=args.data)
    workers = args.workers if args.workers is not None else default_num_workers()
    loader = build_loader(dataset, ShardSampler(len(dataset)), args.batch_size, workers, info.device.type == "cuda")
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
    counts = meter.confusion.sum(1).tolist()
    # a large label set (ImageNet's) is reported on the classes the data has
    shown = [i for i, n in enumerate(counts) if n or len(classes) <= 50]
    accuracy = meter.per_class_accuracy()
    per_class = {classes[i]: accuracy[i] for i in shown}
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(args.data.rstrip("/")).name or "data").strip("-")
    source = Path(resolved.source)
    default_dir = source.parent if source.exists() else Path(".")
    confusion = Path(args.confusion or default_dir / f"confusion-{slug}.png")
    matrix = meter.confusion.cpu()[shown][:, shown].tolist()
    plot_confusion(matrix, [classes[i] for i in shown], confusion,
                   title=f"{args.data} ({res['num_samples']} samples)")
    if args.json:
        print(json.dumps({**res, "per_class_top1": per_class, "skipped_samples": len(skipped),
                          "checkpoint": resolved.source, "model": resolved.name, "confusion_png": str(confusion)}))
        return 0
    epoch = f", epoch {run_info['epoch']}" if "epoch" in run_info else ""
    print(f"model        {resolved.name} ({getattr(model, 'model_name', None) or type(model).__name__}{epoch})")
    unit = "videos" if video else "samples"
    print(f"data         {args.data}: {res['num_samples']} {unit}, {len(classes)} classes"
          + (f", {len(skipped)} unreadable skipped" if len(skipped) else ""))
    if video:
        protocol = f"{cfg.num_clips if not cfg.frame_uniform else 1} clips x {cfg.num_crops} crops"
        print(f"video level  top-1 {res['top1']:.2f} %{_top5(res['top5'], '  ')}  "
              f"(softmax averaged over {views} views: {protocol})")
        print(f"clip level   top-1 {res['clip_top1']:.2f} %{_top5(res['clip_top5'], '  ')}  "
              f"({res['num_clips']} views scored one by one)")
    else:
        print(f"top-1        {res['top1']:.2f} %")
        if res["top5"] is not None:
            print(f"top-5        {res['top5']:.2f} %")
    print(f"loss         {res['loss']:.4f}")
    hidden = len(classes) - len(shown)
    print("per-class top-1" + (f" ({hidden} classes without samples not shown):" if hidden else ":"))
    width = max(len(classes[i]) for i in shown)
    for i in shown:
        name, acc, n = classes[i], accuracy[i], counts[i]
        print(f"  {name:<{width}}  {acc:6.2f} %  ({n} {unit})" if n else f"  {name:<{width}}     -     (0 {unit})")
    print(f"confusion matrix: {confusion}")
    return 0


def run_segmentation(args: argparse.Namespace, model, run_info: dict, info, resolved) -> int:
    """Score a segmentation model (see the module's description)."""
    import dataclasses

    from ..data import build_augment, build_dataset
    from ..data.loader import ShardSampler, SkippedSamples, build_loader, default_num_workers
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
    workers = args.workers if args.workers is not None else default_num_workers()
    loader = build_loader(dataset, ShardSampler(len(dataset)), args.batch_size, workers, info.device.type == "cuda")
    skipped = SkippedSamples("evaluation", len(dataset), 1.0)
    meter = evaluate_segmentation(model, loader, build_augment(cfg, None, d["mean"], d["std"]).to(info.device),
                                  protocol, len(classes), info, skipped=skipped,
                                  progress=None if args.json else "evaluate", ignore_index=cfg.ignore_index,
                                  align_corners=bool(getattr(model, "align_corners", False)))
    res = segmentation_report(meter, classes, protocol)
    if not res["num_samples"]:
        raise DataError(f"{args.data}: none of its {len(dataset)} samples could be read (each is named above)")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(args.data.rstrip("/")).name or "data").strip("-")
    source = Path(resolved.source)
    confusion = Path(args.confusion or (source.parent if source.exists() else Path(".")) / f"confusion-{slug}.png")
    plot_confusion(meter.confusion.cpu().tolist(), classes, confusion,
                   title=f"{args.data} ({res['num_samples']} images, pixels)")
    if args.json:
        print(json.dumps({**res, "skipped_samples": len(skipped), "checkpoint": resolved.source,
                          "model": resolved.name, "confusion_png": str(confusion)}))
        return 0
    epoch = f", epoch {run_info['epoch']}" if "epoch" in run_info else ""
    print(f"model        {resolved.name} ({run_info['model']}{epoch})")
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
