"""``tessera inflate SRC DST --model video_swin_t``: image weights into a video model.

SRC is an image checkpoint of any supported format, a run of an image model, a tessera
directory, or published weights by name (``swin_t.ms_in1k``).

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
    from ..weights.resolve import resolve_model, stored_architecture

    source, fmt = args.source, args.format
    if stored_architecture(args.source) is not None:  # published weights, a run, a tessera directory
        resolved = resolve_model(None, args.source, use_ema=args.ema, verbose=False)
        source, fmt = resolved.model.state_dict(), "tessera"
    model, report = inflate_checkpoint(source, args.destination, model=args.model, format=fmt, use_ema=args.ema,
                                       source_name=str(args.source), verbose=False, **parse_overrides(args.overrides))
    report_written(model, report, args.destination)
    return 0
