"""``tessera inflate SRC DST --model video_swin_t``: image weights into a video model.

As the official Video Swin: the patch embedding is repeated over the temporal patch and
divided by it, each relative position bias table is resized to the spatial window when
needed and tiled over the temporal offsets. The result is written in tessera's format.
``KEY=VALUE`` arguments replace constructor arguments of the video model.
"""

from __future__ import annotations

import argparse

from .convert import add_common, parse_overrides, report_written


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inflate", help="inflate an image checkpoint into a video model", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--model", required=True, help="the registered video model, e.g. video_swin_t")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import inflate_checkpoint

    model, report = inflate_checkpoint(args.source, args.destination, model=args.model, format=args.format,
                                       use_ema=args.ema, verbose=False, **parse_overrides(args.overrides))
    report_written(model, report, args.destination)
    return 0
