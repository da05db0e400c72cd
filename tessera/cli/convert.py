"""``tessera convert SRC DST``: any model source into a tessera directory.

SRC is a checkpoint of any supported format, a Hugging Face or tessera directory, a run
directory or its weights file, or published weights by name (``swin_t.ms_in1k``). The
architecture is the one SRC records or, for a bare checkpoint, read from the weights (Swin
and Video Swin) unless ``--model`` names it; ``KEY=VALUE`` arguments replace constructor
arguments (``num_classes=10``, ``img_size=384``, ``window_size=8,7,7``). The class names and
the preprocessing go into DST's ``config.json`` with the weights.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from ..errors import ConfigError

_WORDS = {"true": True, "false": False, "none": None, "null": None}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["num_classes=10", "window_size=8,7,7"]`` -> ``{"num_classes": 10, "window_size": (8, 7, 7)}``:
    values are Python literals (numbers, tuples, True/False/None; lower case works too);
    anything else is a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        if text.lower() in _WORDS:
            out[key] = _WORDS[text.lower()]
            continue
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a checkpoint file or directory (official, mmaction2, timm, torchvision, Hugging "
                                  "Face, tessera), a run directory, or NAME.TAG of published weights")
    p.add_argument("destination", help="the directory to write (config.json + model.safetensors)")
    p.add_argument("--format", help="force the source format instead of detecting it")
    p.add_argument("--ema", action="store_true", help="take the EMA weights of a training checkpoint")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="constructor arguments to replace")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a checkpoint into tessera's format", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    p.add_argument("--model", help="the registered model to build (default: read from the weights)")
    p.set_defaults(func=run)


def report_written(model: Any, report: Any, destination: str) -> None:
    print(report)  # every note once: the conversion itself was quiet (verbose=False)
    name = getattr(model, "model_name", None) or type(model).__name__
    print(f"wrote {name} to {destination}")


def run(args: argparse.Namespace) -> int:
    from ..weights import save_pretrained
    from ..weights.resolve import resolve_model

    resolved = resolve_model(args.model, args.source, format=args.format, use_ema=args.ema, verbose=False,
                             **parse_overrides(args.overrides))
    save_pretrained(resolved.model, args.destination, classes=resolved.classes, data=resolved.data,
                    label_set=resolved.label_set)
    report_written(resolved.model, resolved.report, args.destination)
    return 0
