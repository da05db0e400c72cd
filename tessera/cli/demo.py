"""``tessera demo``: train a small Swin from scratch on the built-in handwritten digits,
report its accuracy on the held-out test split, and classify a few test images with the
saved checkpoint. It needs no download and takes about a minute on two CPU cores."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train a small Swin on digits and test it", description=__doc__)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="changes to the demo recipe")
    p.add_argument("--output", "-o", default="runs/demo", help="the run directory (replaced if it holds a run)")
    p.set_defaults(func=run)


def write_samples(folder: Path, size: int, count: int = 6) -> list[tuple[Path, str]]:
    """A few test digits as PNG files (what ``tessera predict`` takes)."""
    from ..data.digits import Digits

    test = Digits("test", size=size)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(count):
        index = i * (len(test) // count)
        path = folder / f"test_{index:03d}.png"
        test.load(index).save(path)
        out.append((path, test.classes[test.targets[index]]))
    return out


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    from ..train import Trainer, load_recipe, load_trained_model, predict_images

    start = time.perf_counter()
    recipe = load_recipe("demo", ["data.test_root=digits:test", *args.overrides])
    out = Path(args.output)
    print(f"tessera demo: a small Swin learns scikit-learn's handwritten digits (recipe 'demo', run in {out})")
    trainer = Trainer(recipe, out, overwrite=True)
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    test = summary["test"]
    print(f"test top-1: {test['top1']:.2f} %  (top-5 {test['top5']:.2f} %, {test['num_samples']} held-out digits, "
          f"{out / test['checkpoint']})")

    samples = write_samples(out / "samples", recipe.data.img_size)
    model, info = load_trained_model(out)
    images = [Image.open(p) for p, _ in samples]
    for (path, truth), top in zip(samples, predict_images(model, info, images, top_k=3)):
        guesses = ", ".join(f"{c} ({p:.2f})" for c, p in top)
        print(f"  {path}: true {truth}, predicted {guesses}")
    print(f"took {time.perf_counter() - start:.0f} s. Next:")
    print(f"  tessera evaluate --checkpoint {out} --data digits        # per-class accuracy, confusion matrix")
    print(f"  tessera predict --checkpoint {out} {out}/samples/*.png    # any image files")
    print(f"  curves: {out}/curves.png   metrics: {out}/metrics.jsonl")
    return 0
