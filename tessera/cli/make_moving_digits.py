"""``tessera make-moving-digits DIR``: write the built-in moving digits as mp4 files.

Scikit-learn's handwritten digits moving across a 32 x 40 canvas in one of 8 directions
(the class), 24 frames per video, H.264 in mp4. DIR gets one folder of class folders per
split and an annotation list per split, the two layouts ``tessera train`` reads::

    DIR/train/east/00000.mp4 ...   DIR/val/...   DIR/test/...
    DIR/train.txt  DIR/val.txt  DIR/test.txt   (lines "train/east/00000.mp4 0")
    DIR/classes.txt                            (one direction per line, in label order)

The videos are the frames of ``moving_digits:train`` (``:val``, ``:test``), which the
training can also use in memory without writing anything.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-moving-digits", help="write the moving-digits video set as mp4 files",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"])
    p.add_argument("--per-class", type=int, help="videos per class and split (default: 160 / 24 / 45)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from ..data.moving_digits import write_moving_digits
    from ..errors import TesseraError

    root = Path(args.directory)
    if root.exists() and not root.is_dir():
        raise TesseraError(f"{root}: not a directory")
    with tqdm(desc="writing", unit="video", leave=False, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        counts = write_moving_digits(root, args.splits, args.per_class, progress=progress)
    listing = ", ".join(f"{n} {split}" for split, n in counts.items())
    print(f"wrote {sum(counts.values())} videos ({listing}) to {root}")
    print(f"  folders: {root}/<split>/<direction>/*.mp4   lists: {root}/<split>.txt   classes: {root}/classes.txt")
    if "train" in args.splits:
        val = f" data.val_root={root}/val.txt" if "val" in args.splits else ""
        print(f"train on them: tessera train --config video_demo data.root={root}/train{val}")
    return 0
