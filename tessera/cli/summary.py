"""``tessera summary NAME``: parameters, GMACs and per-stage output shapes of a model."""

from __future__ import annotations

import argparse

import torch

from . import count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="parameters, GMACs and stage shapes of a model", description=__doc__)
    p.add_argument("model", help="a registered model name")
    p.add_argument("--img-size", type=count(1), help="image side (default: the model's own)")
    p.add_argument("--clip", help="video clip size T,H,W (video models)")
    p.add_argument("--num-classes", type=count(0), help="classes of the head (default: the model's own)")
    p.set_defaults(func=run)


def stage_shapes(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Output shape of each stage, channels first, for models with ``forward_intermediates``."""
    if not hasattr(model, "forward_intermediates"):
        return []
    with torch.no_grad():
        return [(f"stage {i}", tuple(o.shape)) for i, o in enumerate(model.eval().forward_intermediates(x))]


def shapes(value) -> str:
    """The shape of a tensor, or of each tensor in (nested) lists and tuples: the features of
    a segmentation model are a pyramid."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    return "[" + ", ".join(shapes(v) for v in value) + "]"


def run(args: argparse.Namespace) -> int:
    from .. import create_model, model_stats
    from ..export import input_shape_for

    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = create_model(args.model, **overrides)
    shape = input_shape_for(model, args.img_size, args.clip)
    stats = model_stats(model, shape)
    x = torch.zeros(shape)
    rows = [("model", args.model), ("input", str(shape)), ("parameters", f"{stats['params']:,}"),
            ("GMACs", f"{stats['macs'] / 1e9:.3f}")]
    rows += [(name, str(s)) for name, s in stage_shapes(model, x)]
    with torch.no_grad():
        rows.append(("features", shapes(model.forward_features(x))))
        rows.append(("logits", str(tuple(model(x).shape))))
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0
