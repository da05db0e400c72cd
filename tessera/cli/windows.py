"""``tessera windows IMAGE --model NAME [--stage S] [--block B]``: draw a Swin block's windows
on an image (or, for a video model, on each temporal slice of a clip): the window grid of
the stage, the block's shifted windows, the regions after the cyclic shift, the attention
mask of one window (--window) as a matrix, and the merging of 2x2 tokens at the end of the
stage. Everything drawn comes from the model's own window core (its plan for the input's
grid: padding, clamped window, shift), for the input size given (--img-size, --clip) or
the model's own."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("windows", help="draw a Swin block's windows, shift regions, mask and patch merging",
                       description=__doc__)
    p.add_argument("image", metavar="IMAGE", help="an image, or a video (file or frames folder) for a video model")
    p.add_argument("--model", help="a registered Swin or Video Swin model")
    p.add_argument("--checkpoint", help="or the model of a run directory, weights file or directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="constructor arguments for --model")
    p.add_argument("--stage", type=int, default=0, help="the stage (default 0; negative counts from the end)")
    p.add_argument("--block", type=int, default=1, help="the block in the stage (default 1, the first shifted one)")
    p.add_argument("--window", type=int, help="the window whose mask is drawn (default: the last)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--img-size", help="image size S or H,W (default: the model's input size)")
    size.add_argument("--clip", help="video clip size T,H,W (default: the model's)")
    p.add_argument("--max-slices", type=int, default=8, help="video: temporal slices drawn (default 8)")
    p.add_argument("--output", "-o", help="the PNG to write (default: IMAGE's name + .windows.png, here)")
    p.set_defaults(func=run)


def _sizes(text: str, count: tuple[int, ...], flag: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) not in count or min(values, default=0) < 1:
        raise ConfigError(f"{flag} {text!r}: expected {' or '.join({1: 'S', 2: 'H,W', 3: 'T,H,W'}[c] for c in count)}")
    return values


def load_input(path: str, size: tuple[int, ...]):
    """The image resized to ``size`` ``(H, W)``, or ``size[0]`` frames spread evenly over the
    video resized to ``size[1:]``: float RGB in ``[0, 1]``."""
    import numpy as np
    from PIL import Image

    from ..data.images import read_image

    if len(size) == 2:
        img = read_image(path).resize((size[1], size[0]), Image.Resampling.BICUBIC)
        return np.asarray(img, dtype=np.float32) / 255.0
    from ..data.video import open_video
    from ..data.video.io import resize_frames

    with open_video(path) as source:
        indices = np.linspace(0, source.num_frames - 1, size[0]).round().astype(int)
        frames = source.read(indices.tolist())
    return resize_frames(frames, (size[2], size[1])).astype(np.float32) / 255.0


def run(args: argparse.Namespace) -> int:
    from ..explain.overlay import save_figure
    from ..explain.windows import draw_windows, window_layout
    from .explain import load_model_source

    # the drawings need the architecture and its size rule only, never the weights
    model, _ = load_model_source(args.checkpoint, args.model, args.overrides, "cpu", load_weights=False)
    video = getattr(model, "ndim", 2) == 3
    default = tuple(int(s) for s in model.default_cfg["input_size"][1:])
    if args.clip is not None:
        size = _sizes(args.clip, (3,), "--clip")
    elif args.img_size is not None:
        size = _sizes(args.img_size, (1, 2), "--img-size")
        size = size * 2 if len(size) == 1 else size
        size = (default[0], *size) if video else size
    else:
        size = default
    layout = window_layout(model, size, args.stage, args.block)
    image = load_input(args.image, size)
    fig = draw_windows(layout, image, args.window, args.max_slices)
    output = Path(args.output or f"{Path(args.image).stem}.windows.png")
    save_figure(fig, output)
    shift = "x".join(map(str, layout.shift)) if layout.shifted else "none"
    print(f"stage {layout.stage} block {layout.block}: grid {'x'.join(map(str, layout.grid))} tokens "
          f"(padded {'x'.join(map(str, layout.padded))}), window {'x'.join(map(str, layout.window))}, shift {shift}, "
          f"{layout.num_windows} windows -> {output}")
    return 0
