"""The table of published weights that the README shows, generated from the registry:
``tessera list --pretrained --markdown`` prints it."""

from __future__ import annotations

import functools
from typing import Any

from .zoo import Pretrained, get_pretrained, list_pretrained

HEADER = ("| weights | acc@1 | size | params (M) | GMACs | source |\n"
          "| --- | --- | --- | --- | --- | --- |")


def input_size(entry: Pretrained) -> str:
    """``224`` for images, ``32x224`` for clips of 32 frames."""
    return f"{entry.video.clip_len}x{entry.img_size}" if entry.video else str(entry.img_size)


@functools.lru_cache(maxsize=None)
def _stats(model: str, args: tuple, shape: tuple[int, ...]) -> tuple[int, int]:
    """Parameters and multiply-accumulates of one forward pass, counted on the meta device
    (shapes only: nothing is allocated or computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..registry import create_model
    from ..stats import _custom_formulas, count_params

    with torch.device("meta"):
        net = create_model(model, **dict(args)).eval()
        with FlopCounterMode(display=False, custom_mapping=_custom_formulas()) as counter, torch.no_grad():
            net(torch.zeros(shape))
    return count_params(net), counter.get_total_flops() // 2


def entry_stats(entry: Pretrained) -> tuple[int, int]:
    """``(params, MACs)`` of the entry's model at its input size (one view of a video)."""
    shape = (1, 3, entry.video.clip_len, entry.img_size, entry.img_size) if entry.video else \
        (1, 3, entry.img_size, entry.img_size)
    args = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in entry.args.items()))
    return _stats(entry.model, args, shape)


def source_cell(entry: Pretrained) -> str:
    source = entry.sources[0]
    if source.url:
        return f"[{source.file_name}]({source.url})"
    return f"[{source.hub}](https://huggingface.co/{source.hub})"


def row(entry: Pretrained, stats: tuple[int, int] | None = None) -> list[str]:
    """The cells of one entry's row (``stats`` = params and MACs, counted when not given)."""
    params, macs = stats or entry_stats(entry)
    acc = "-" if entry.top1 is None else f"{entry.top1:g}"
    return [f"`{entry.name}`", acc, input_size(entry), f"{params / 1e6:.1f}", f"{macs / 1e9:.1f}", source_cell(entry)]


def markdown_table(pattern: str = "*") -> str:
    """The README's table of published weights."""
    lines = [HEADER]
    for name in list_pretrained(pattern):
        lines.append("| " + " | ".join(row(get_pretrained(name))) + " |")
    return "\n".join(lines)


def describe(entry: Pretrained) -> dict[str, Any]:
    """One entry for ``tessera list --pretrained --json``."""
    return entry.to_dict()
