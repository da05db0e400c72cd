"""``tessera summary NAME``: parameters, GMACs and per-stage output shapes of a model.

The model is built on PyTorch's meta device and run in eval mode on a meta tensor: only
shapes are computed, so any model answers in about a second, however large, and the
multiply-accumulates are counted exactly as on real weights (the count of every operator
depends only on shapes). A model that cannot run on meta tensors is built and run on the
CPU instead.
"""

from __future__ import annotations

import argparse

from . import count

#: what a model that cannot run an input raises (as opposed to tessera's own one-line errors)
_RUN_ERRORS = (RuntimeError, NotImplementedError, ValueError, TypeError, IndexError, AssertionError)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="parameters, GMACs and stage shapes of a model", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a registered name, NAME.TAG (the architecture of published weights), a run "
                                 "directory, or a weights file or directory")
    p.add_argument("--img-size", type=count(1), help="image side (default: the model's own)")
    p.add_argument("--clip", help="video clip size T,H,W (video models)")
    p.add_argument("--num-classes", type=count(0), help="classes of the head (default: the model's own)")
    p.set_defaults(func=run)


def summarize_model(name: str, img_size: int | None = None, clip: str | None = None, **overrides) -> tuple:
    """``(input shape, summary dict)`` of the model ``name`` names (any source the commands
    take; its architecture only, see :func:`tessera.stats.summarize`): on the meta device,
    else on the CPU."""
    import torch

    from ..errors import TesseraError
    from ..export import input_shape_for
    from ..stats import summarize
    from ..weights.resolve import resolve_model

    def attempt(device: str) -> tuple:
        with torch.device(device):
            model = resolve_model(name, load_weights=False, **overrides).model
        shape = input_shape_for(model, img_size, clip)
        return shape, summarize(model, shape)

    try:
        return attempt("meta")
    except TesseraError:
        raise  # an unknown name, an input the model refuses: said in one line as it is
    except _RUN_ERRORS:
        pass  # an operator without a meta kernel: the real thing, on the CPU
    try:
        return attempt("cpu")
    except TesseraError:
        raise
    except _RUN_ERRORS as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TesseraError(f"{name} cannot run its summary input: {first}") from e


def run(args: argparse.Namespace) -> int:
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    shape, stats = summarize_model(args.model, args.img_size, args.clip, **overrides)
    rows = [("model", args.model), ("input", str(shape)), ("parameters", f"{stats['params']:,}"),
            ("GMACs", f"{stats['macs'] / 1e9:.3f}")]
    rows += [(f"stage {i}", str(s)) for i, s in enumerate(stats["stages"])]
    rows += [("features", str(stats["features"])), ("logits", str(stats["logits"]))]
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0
