"""``tessera predict --model NAME.TAG | --checkpoint SRC  INPUT...``: the top-k classes of
each image or video, by name, with their probabilities.

The model is published weights (``--model swin_t.ms_in1k``; a bare name takes its default
weights), a run directory or weights file of ``tessera train``, or any checkpoint tessera
reads (``--checkpoint swin_tiny_patch4_window7_224.pth``; ``--model NAME`` names its
architecture when the weights do not tell). Each is prepared as its weights were evaluated.

INPUT is a file, a folder (its images, or for a video model its videos: video files, or
folders of frame images) or a glob pattern. Images are classified in batches; a video is
scored with the softmax averaged over its test views (clips x crops). ``--timeline`` scores
consecutive segments of each video and draws the top classes over time as a PNG strip.

For a segmentation model, each image's predicted label map is written to ``--output``
(default ``predictions``) twice: ``NAME_overlay.png`` (the image with every pixel tinted in
its class colour) and ``NAME_labels.png`` (a palette PNG whose pixel values are the class
indices), and the classes covering most of the image are printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images or videos (class names and probabilities)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    p.add_argument("--model", help="NAME.TAG of published weights (NAME: its default weights); with --checkpoint, "
                                   "the architecture of weights that do not name it")
    p.add_argument("--checkpoint", help="a run directory, or a weights file or directory of any supported format")
    p.add_argument("--top-k", type=count(1), default=5)
    p.add_argument("--batch-size", type=count(1), default=32, help="images per forward pass (default 32)")
    p.add_argument("--json", action="store_true", help="one JSON object per line and input")
    p.add_argument("--timeline", nargs="?", const="", metavar="PNG",
                   help="videos: score segments along each video and draw the top classes over time "
                        "(default file: VIDEO-timeline.png in the current folder)")
    p.add_argument("--segment", type=float, metavar="SECONDS",
                   help="with --timeline: seconds per segment (default: the span of one clip)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--output", "-o", default="predictions",
                   help="segmentation: the folder of the overlay and label-map PNGs (default: predictions)")
    p.set_defaults(func=run)


def _show(path: str, top, as_json: bool, key: str) -> None:
    if as_json:
        print(json.dumps({key: path, "top_k": [{"label": c, "index": i, "probability": p} for i, c, p in top]}))
    else:
        print(f"{path}: " + ", ".join(f"{c} ({p:.3f})" for _, c, p in top))


def _timeline_file(option: str, video: str, many: bool) -> Path:
    if not option:
        return Path(f"{Path(video).stem}-timeline.png")
    path = Path(option)
    return path.with_name(f"{path.stem}-{Path(video).stem}{path.suffix or '.png'}") if many else path


def run(args: argparse.Namespace) -> int:
    from ..data.images import error_reason, read_image
    from ..data.video.io import READ_ERRORS
    from ..errors import ConfigError
    from ..predict import expand_inputs, plot_timeline, predict_image_files, predict_video, video_timeline
    from ..train import distributed
    from ..weights.resolve import resolve_model

    if args.model is None and args.checkpoint is None:
        raise ConfigError("give --model NAME.TAG (published weights) or --checkpoint (a run or weights file)")
    resolved = resolve_model(args.model, args.checkpoint, default_tag=True, require_weights=True,
                             device=distributed.resolve_device(args.device))
    model, cfg, classes = resolved.model, resolved.data, resolved.classes
    if getattr(model, "task", None) == "segmentation" or resolved.info.get("task") == "segmentation":
        from ..train.seg_inference import segmentation_info

        return run_segmentation(args, model, segmentation_info(resolved.run_info(), model))
    video = cfg["kind"] == "video"
    if args.timeline is not None and not video:
        raise ConfigError("--timeline is for video models")
    key = "video" if video else "image"
    failed = 0

    def fail(path: str, reason: str) -> None:
        nonlocal failed
        failed += 1
        if args.json:
            print(json.dumps({key: path, "error": reason}))
        print(f"tessera predict: error: {path}: {reason}", file=sys.stderr)

    inputs = list(expand_inputs(args.inputs, video))
    for path, problem in inputs:
        if problem == "no such file or directory":
            fail(path, f"not a readable {key} ({problem})")
        elif problem:
            fail(path, problem)
    paths = [p for p, problem in inputs if problem is None]
    if not video:
        for result in predict_image_files(model, cfg, classes, paths, args.top_k, args.batch_size):
            if result.error is not None:
                fail(result.path, f"not a readable image ({result.error})")
            else:
                _show(result.path, result.top, args.json, key)
        return 2 if failed else 0
    for path in paths:
        try:
            if args.timeline is None:
                _show(path, predict_video(model, cfg, classes, path, args.top_k), args.json, key)
                continue
            timeline = video_timeline(model, cfg, path, args.segment)
        except (*READ_ERRORS, SyntaxError) as e:
            fail(path, f"not a readable video ({error_reason(e, path)})")
            continue
        png = plot_timeline(timeline, classes, _timeline_file(args.timeline, path, len(paths) > 1))
        overall = timeline.probs.mean(0, keepdim=True)
        segments = []
        for start, end, probs in zip(timeline.starts, timeline.ends, timeline.probs):
            values, indices = probs.topk(min(args.top_k, probs.shape[0]))
            segments.append((start, end, [(int(i), classes[int(i)], float(v))
                                          for v, i in zip(values.tolist(), indices.tolist())]))
        if args.json:
            print(json.dumps({key: path, "unit": timeline.unit, "timeline_png": str(png), "segments": [
                {"start": s, "end": e, "top_k": [{"label": c, "index": i, "probability": p} for i, c, p in top]}
                for s, e, top in segments]}))
            continue
        values, indices = overall[0].topk(min(args.top_k, overall.shape[1]))
        print(f"{path}: " + ", ".join(f"{classes[int(i)]} ({float(v):.3f})"
                                      for v, i in zip(values.tolist(), indices.tolist())) + " (segments averaged)")
        unit = " s" if timeline.unit == "s" else " frames"
        for start, end, top in segments:
            print(f"  {start:7.1f} - {end:7.1f}{unit}: " + ", ".join(f"{c} ({p:.3f})" for _, c, p in top[:3]))
        print(f"  timeline: {png}")
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
    """Label maps of images with a segmentation model (see the module's description)."""
    import numpy as np

    from ..data.images import error_reason, read_image
    from ..data.seg_classes import palette
    from ..predict import expand_inputs
    from ..train.seg_inference import predict_segmentation

    classes = info["classes"]
    colours = palette(len(classes))
    folder = Path(args.output)
    failed = 0
    paths = []
    for path, problem in expand_inputs(args.inputs, False):
        if problem is None:
            paths.append(path)
            continue
        print(f"tessera predict: error: {path}: {problem}", file=sys.stderr)
        failed += 1
    for path in paths:
        try:
            image = read_image(path)
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
