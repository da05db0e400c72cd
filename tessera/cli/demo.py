"""``tessera demo``: train a small Swin from scratch on the built-in handwritten digits,
report its accuracy on the held-out test split, classify a few test images with the saved
checkpoint and explain them with Grad-CAM (pictures). It needs no download and takes about a
minute on two CPU cores.

``tessera demo --scenes``: a small Swin learns which handwritten digit lies, at a random
place and scale, on a cluttered canvas (the built-in digit scenes); besides its accuracy it
checks that the model looks at the digit (the pointing game: the share of test scenes whose
CAM peak falls in the digit's box, with the CAM, Grad-CAM or Grad-CAM++ at one block, that
points best on the validation scenes). The model first learns the plain digits (the
``demo`` recipe, in ``RUN/pretrain``) and starts the scenes from those weights; overrides
``pretrain.KEY=VALUE`` change that first stage only, ``model.args.KEY=VALUE`` both. About
six minutes of CPU time.

``tessera demo --video``: the same for a small Video Swin on the built-in moving digits
(digits moving in one of 8 directions; the class is the direction, which no single frame
shows): trained from scratch, tested with 2 clips x 3 crops per video, its CAM checked
against the digit's box in every frame of the test clips (chosen as for the scenes), a few
test videos written as mp4 files, explained (frame strips and animations) and classified
from those files. About ten minutes of CPU time.

``tessera demo --segmentation``: UperNet on a small Swin learns to segment the built-in
digit scenes (digits at random places and sizes on a cluttered canvas; background and ten
digit classes) from scratch; it prints the mIoU on the held-out test scenes and writes a few
of them with their predicted label maps (overlays and label-map PNGs), in about 4 minutes of
CPU time on one thread (held-out mIoU 0.82). It runs the plain
PyTorch implementations (``tessera.backends`` ``reference``) unless ``TESSERA_BACKEND``
says otherwise: for a model this small, measuring the faster candidates on the first
calls costs more than they save in a run of a few minutes."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small Swin on digits (or digit scenes, or a Video Swin on moving "
                                    "digits), test and explain it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to the demo recipe")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--scenes", action="store_true", help="digits on cluttered canvases, with the pointing game "
                                                           "(recipe 'scenes_demo')")
    kind.add_argument("--video", action="store_true", help="the video demo (recipe 'video_demo', moving digits), "
                                                          "with the pointing game")
    kind.add_argument("--segmentation", action="store_true",
                      help="the segmentation demo (recipe 'seg_demo', digit scenes)")
    p.add_argument("--explained", type=int, default=4, metavar="N", help="test samples explained in pictures "
                                                                           "(default 4)")
    p.add_argument("--output", "-o", help="the run directory, replaced if it holds a run (default: runs/demo, "
                                          "runs/scenes_demo, runs/video_demo, runs/seg_demo)")
    p.set_defaults(func=run)


def write_samples(folder: Path, size: int, count: int = 6) -> list[tuple[Path, str]]:
    """A few test digits as PNG files (what ``tessera predict`` and ``tessera explain`` take)."""
    from ..data.digits import Digits

    return write_image_samples(Digits("test", size=size), folder, count)


def write_scene_samples(folder: Path, count: int = 6) -> list[tuple[Path, str]]:
    """A few test scenes as PNG files."""
    from ..data.digit_scenes import DigitScenes

    return write_image_samples(DigitScenes("test"), folder, count)


def write_image_samples(test, folder: Path, count: int) -> list[tuple[Path, str]]:
    """``count`` images spread over the image set ``test`` as PNG files, with their class names."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        index = i * (len(test) // count)
        path = folder / f"test_{index:03d}.png"
        test.load(index).save(path)
        out.append((path, test.classes[test.targets[index]]))
    return out


def write_video_samples(folder: Path, count: int = 8) -> list[tuple[Path, str]]:
    """One test video per direction (spread over the split) as mp4 files."""
    from ..data.moving_digits import CLASSES, moving_digits_split, render
    from ..data.video import write_video

    motions = moving_digits_split("test")
    out = []
    for i in range(count):
        index = i * (len(motions) // count) + i
        path = folder / f"test_{index:03d}.mp4"
        write_video(path, render(motions[index]))
        out.append((path, CLASSES[motions[index].label]))
    return out


def write_segmentation_samples(folder: Path, count: int = 6) -> list[tuple[Path, object]]:
    """A few held-out digit scenes as PNG files, with their true label maps."""
    from PIL import Image

    from ..data.segmentation import DigitScenes

    test = DigitScenes("test")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        index = i * (len(test) // count)
        image, labels = test.load(index)
        path = folder / f"test_{index:03d}.png"
        Image.fromarray(image).save(path)
        out.append((path, labels))
    return out


def run_segmentation(args: argparse.Namespace, start: float, cpu_start: float) -> int:
    from .. import backends

    with backends.use(os.environ.get("TESSERA_BACKEND") or "reference"):
        return _run_segmentation(args, start, cpu_start)


def _run_segmentation(args: argparse.Namespace, start: float, cpu_start: float) -> int:
    import numpy as np

    from ..data.images import read_image
    from ..data.seg_classes import palette
    from ..train import load_trained_model
    from ..train.seg_inference import predict_segmentation
    from .predict import write_segmentation

    out = Path(args.output or "runs/seg_demo")
    print(f"tessera demo --segmentation: UperNet on a small Swin learns to segment digits in cluttered scenes "
          f"(recipe 'seg_demo', run in {out})")
    test = _train("seg_demo", "digit_scenes:test", args.overrides, out)["test"]
    print(f"held-out mIoU: {test['miou'] / 100:.3f}  (pixel accuracy {test['acc']:.2f} %, mean Dice "
          f"{test['mdice']:.2f} %; {test['num_samples']} test scenes, {out / test['checkpoint']})")
    model, info = load_trained_model(out)
    colours = palette(len(info["classes"]))
    samples = write_segmentation_samples(out / "samples")
    for path, truth in samples:
        image = read_image(path)
        labels = predict_segmentation(model, info, [image])[0]
        overlay_path, _ = write_segmentation(image, labels, colours, out / "samples", path.stem)
        valid = truth != 0
        digits = sorted({info["classes"][c] for c in np.unique(truth[valid])})
        agree = float((labels[valid] == truth[valid]).mean()) if valid.any() else float("nan")
        print(f"  {overlay_path}: digits {', '.join(digits)}; {100 * agree:.1f} % of their pixels right")
    print(f"took {time.perf_counter() - start:.0f} s ({time.process_time() - cpu_start:.0f} s of CPU time "
          f"in this process). Next:")
    print(f"  tessera evaluate --checkpoint {out} --data digit_scenes     # per-class IoU, confusion matrix")
    print(f"  tessera predict --checkpoint {out} {out}/samples/test_000.png -o predictions   # any images")
    print(f"  curves: {out}/curves.png   metrics: {out}/metrics.jsonl")
    return 0


def explain_samples(model, info, samples: list[tuple[Path, str]], folder: Path, method: str = "gradcam",
                    layer: str | None = None) -> list[dict]:
    """The CAM (``method`` at ``layer``, default the family's layer) of the samples' files,
    pictures written into ``folder`` (as ``tessera explain``)."""
    import shutil

    from ..explain.files import ExplainSettings, explain_file

    shutil.rmtree(folder, ignore_errors=True)
    settings = ExplainSettings(method=method, layer=layer)
    return [explain_file(model, info, path, folder, settings) for path, _ in samples]


def pointing_game(model, info, video: bool, out: Path):
    """The pointing game on the held-out test split, written to ``pointing.json``, with the
    CAM (Grad-CAM, Grad-CAM++ or LayerCAM, at the ``norm2`` of one Swin block) that points
    best on the validation split. Which block's map is sharp enough depends on how large the
    evidence is against the input, and the methods weigh the gradients differently (Grad-CAM
    averages them per channel, Grad-CAM++ keeps the positive ones, LayerCAM keeps each
    position's own), which moves the peak when the evidence is small; both are chosen like
    any other setting, on held-out data that the figure is not measured on.
    Returns ``(result, method, layer)``."""
    import json

    from ..atomic import write_text_atomic
    from ..explain.cam import METHODS
    from ..explain.pointing import moving_digits_pointing_game, scenes_pointing_game
    from ..explain.targets import swin_block_layers

    play = moving_digits_pointing_game if video else scenes_pointing_game
    on_val = {(method, layer): play(model, info, "val", method=method, layer=layer)
              for method in METHODS for layer in swin_block_layers(model)}
    method, layer = max(on_val, key=lambda c: (on_val[c].accuracy(0), on_val[c].accuracy()))
    result = play(model, info, "test", method=method, layer=layer)
    write_text_atomic(out / "pointing.json", json.dumps(
        {"method": method, "layer": layer, "unit": result.unit, "count": len(result.distances),
         "tolerance": result.tolerance, "pointing_game": result.accuracy(), "hits": result.hits(),
         "inside_the_box": result.accuracy(0), "hits_inside": result.hits(0), "top1": result.top1,
         "validation_inside_the_box": {m: {name: r.accuracy(0) for (m2, name), r in on_val.items() if m2 == m}
                                       for m in METHODS}}, indent=2) + "\n")
    return result, method, layer


def split_pretrain_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """The scenes demo's overrides as ``(digits stage, scenes stage)``: ``pretrain.KEY=V``
    goes to the digits stage only; ``model.args.KEY=V`` to both, whose architectures must
    agree; anything else to the scenes."""
    pretrain, scenes = [], []
    for item in overrides:
        if item.startswith("pretrain."):
            pretrain.append(item.removeprefix("pretrain."))
            continue
        if item.startswith("model.args."):
            pretrain.append(item)
        scenes.append(item)
    return pretrain, scenes


def _train(name: str, test_root: str, overrides: list[str], out: Path) -> dict:
    from ..train import Trainer, load_recipe

    recipe = load_recipe(name, [f"data.test_root={test_root}", *overrides])
    trainer = Trainer(recipe, out, overwrite=True)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    return summary


def run(args: argparse.Namespace) -> int:
    from ..explain.files import METHOD_NAMES
    from ..train import load_trained_model, predict_images, predict_videos

    start, cpu_start = time.perf_counter(), time.process_time()
    if args.segmentation:
        return run_segmentation(args, start, cpu_start)
    if args.video:
        out = Path(args.output or "runs/video_demo")
        print(f"tessera demo --video: a small Video Swin learns which way scikit-learn's digits move "
              f"(recipe 'video_demo', run in {out})")
        test = _train("video_demo", "moving_digits:test", args.overrides, out)["test"]
        print(f"test top-1: {test['top1']:.2f} % video level ({test['views']} views per video), "
              f"{test['clip_top1']:.2f} % clip level  (top-5 {test['top5']:.2f} %, {test['num_samples']} held-out "
              f"videos, {out / test['checkpoint']})")
        samples = write_video_samples(out / "samples")
        model, info = load_trained_model(out)
        predictions = predict_videos(model, info, [p for p, _ in samples], top_k=3)
        pattern = "samples/*.mp4"
        evaluate = "moving_digits"
        evidence = "the moving digit's box in its frame"
    elif args.scenes:
        out = Path(args.output or "runs/scenes_demo")
        print(f"tessera demo --scenes: a small Swin learns which handwritten digit lies somewhere on a cluttered "
              f"canvas (recipe 'scenes_demo', run in {out})")
        pretrain, scenes = split_pretrain_overrides(args.overrides)
        print(f"first on the plain digits (recipe 'demo', run in {out / 'pretrain'}):")
        first = _train("demo", "digits:test", pretrain, out / "pretrain")["test"]
        print(f"plain digits test top-1: {first['top1']:.2f} %; now the scenes, starting from those weights:")
        scenes = [f"model.pretrained={out / 'pretrain' / first['checkpoint']}", *scenes]
        test = _train("scenes_demo", "digit_scenes:test", scenes, out)["test"]
        print(f"test top-1: {test['top1']:.2f} %  (top-5 {test['top5']:.2f} %, {test['num_samples']} held-out scenes, "
              f"{out / test['checkpoint']})")
        from ..data.images import read_image

        model, info = load_trained_model(out)
        samples = write_scene_samples(out / "samples")
        predictions = predict_images(model, info, [read_image(p) for p, _ in samples], top_k=3)
        pattern = "samples/*.png"
        evaluate = "digit_scenes"
        evidence = "the digit's box"
    else:
        out = Path(args.output or "runs/demo")
        print(f"tessera demo: a small Swin learns scikit-learn's handwritten digits (recipe 'demo', run in {out})")
        test = _train("demo", "digits:test", args.overrides, out)["test"]
        print(f"test top-1: {test['top1']:.2f} %  (top-5 {test['top5']:.2f} %, {test['num_samples']} held-out digits, "
              f"{out / test['checkpoint']})")
        from ..data.images import read_image

        model, info = load_trained_model(out)
        samples = write_samples(out / "samples", info["data"]["img_size"])
        predictions = predict_images(model, info, [read_image(p) for p, _ in samples], top_k=3)
        pattern = "samples/*.png"
        evaluate = "digits"
        evidence = None  # a digit fills its whole image: nothing for the pointing game to tell
    method, layer = "gradcam", None
    if evidence is not None:
        result, method, layer = pointing_game(model, info, args.video, out)
        print(f"pointing game: the {METHOD_NAMES[method]} peak ({layer}; the method and layer that point best on the "
              f"validation split) "
              f"of the true class falls inside {evidence} for "
              f"{result.accuracy(0):.1f} % of {len(result.distances)} held-out {result.unit}s, within "
              f"{result.tolerance} px of it (15 px at 224) for {result.accuracy():.1f} % ({out / 'pointing.json'})")
    for (path, truth), top in zip(samples, predictions):
        guesses = ", ".join(f"{c} ({p:.2f})" for c, p in top)
        print(f"  {path}: true {truth}, predicted {guesses}")
    explained = explain_samples(model, info, samples[: args.explained], out / "explained", method, layer)
    if explained:
        print(f"explained ({METHOD_NAMES[method]} of the top-1 class{f', {layer}' if layer else ''}): "
              f"{', '.join(o for e in explained for o in e['outputs'])}")
    print(f"took {time.perf_counter() - start:.0f} s ({time.process_time() - cpu_start:.0f} s of CPU time "
          f"in this process). Next:")
    print(f"  tessera evaluate --checkpoint {out} --data {evaluate}        # per-class accuracy, confusion matrix")
    print(f"  tessera predict --checkpoint {out} {out}/{pattern}    # any {'video' if args.video else 'image'} files")
    shown = f" --method {method}" + (f" --layer {layer}" if layer else "")
    print(f"  tessera explain --checkpoint {out} {out}/{pattern}{shown}    # also --method attention, rollout")
    print(f"  curves: {out}/curves.png   metrics: {out}/metrics.jsonl")
    return 0
