"""Small image folders of real digits, videos without frames, and the overrides that make
a recipe's model tiny: what the training, crash and bad-data tests train on."""

from pathlib import Path

import av

from tessera.data.digits import Digits

#: a Swin small enough that a few steps take a second
TINY = ["model.args.embed_dim=16", "model.args.depths=[2,2]", "model.args.num_heads=[1,2]",
        "model.args.drop_path_rate=0.0", "data.batch_size=8", "schedule.epochs=2", "schedule.warmup_epochs=1"]

#: the same for a Video Swin
VIDEO_TINY = ["model.args.embed_dim=16", "model.args.depths=[2,2]", "model.args.num_heads=[1,2]",
              "model.args.window_size=[2,4,4]", "model.args.patch_size=[2,4,4]", "data.batch_size=8", "schedule.epochs=1",
              "schedule.warmup_epochs=0"]


def write_digit_folder(root: Path, classes=("0", "1", "7"), per_class=16, split="train") -> Path:
    """Real digits as PNG and JPEG files in ``root/<class>/``."""
    ds = Digits(split, size=32)
    counts = {c: 0 for c in classes}
    for i, t in enumerate(ds.targets):
        name = ds.classes[t]
        if name in counts and counts[name] < per_class:
            (root / name).mkdir(parents=True, exist_ok=True)
            ext = "png" if counts[name] % 2 else "jpg"
            ds.load(i).save(root / name / f"{i:04d}.{ext}")
            counts[name] += 1
    return root


def write_no_frames(path, codec="mpeg4"):
    """A container with a header and no frames (mp4 drops the empty stream: no video stream)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        c.start_encoding()
