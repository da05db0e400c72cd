"""The attention of one query token inside its Swin window, on the input.

A Swin block attends inside windows of its stage's grid, shifted cyclically in odd blocks.
Which window a token falls in, and where the other tokens of that window lie on the grid,
come from the window core itself (:func:`tessera.layers.windows.window_order`, the same
function the backends' ``window_order`` stage gathers with): after a shift a window can hold tokens from
opposite edges of the map, which the shift mask keeps apart (their weights are ``e^-100``
of the others'). The probabilities are the block's own softmax, read on its reference path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..layers.windows import WindowPlan, window_order
from .cam import _targets, prepare_input
from .capture import capture_attention, evaluation, reference_path
from .targets import ExplainError, family_of, resolve_layer


@dataclass
class WindowAttentionMap:
    """One query's attention over the keys of its window.

    Attributes:
        maps: ``(B, *input)`` each key's weight spread over the pixels of its token (0
            outside the window), ``(B, H, W)`` or ``(B, T, H, W)``.
        weights: ``(B, *grid)`` the same on the stage's token grid.
        in_window: ``(*grid)`` bool, the tokens of the query's window (after the shift).
        query: the query token on the stage's grid; ``query_pixel`` the input pixel asked for.
        window: the window's index in the block's partition (raster order over the windows
            of the shifted grid for shifted blocks), ``slot`` the query's place in it.
        head: the head shown (``None``: the mean over the heads).
        stride: input pixels per token, per axis.
        plan: the stage's window plan (grid, padded grid, clamped window, shift).
        stage, block: the block's place.
        shifted: whether the block shifts its windows.
        layer: the attention module's name.
        target, probs: the model's top-1 class (or the one asked for) and its softmax.
    """

    maps: torch.Tensor
    weights: torch.Tensor
    in_window: torch.Tensor
    query: tuple[int, ...]
    query_pixel: tuple[int, ...]
    window: int
    slot: int
    head: int | None
    stride: tuple[int, ...]
    plan: WindowPlan
    stage: int
    block: int
    shifted: bool
    layer: str
    target: torch.Tensor
    probs: torch.Tensor

    @property
    def score(self) -> torch.Tensor:
        return self.probs.gather(1, self.target[:, None])[:, 0]


def swin_stage_grid(model: nn.Module, input_size: Sequence[int], stage: int) -> tuple[int, ...]:
    """The token grid of ``stage`` for an input of ``input_size`` (``(H, W)`` or ``(T, H, W)``),
    by the model's own size rule: the patch grid (padded up or cropped, as its patch embedding
    does), halved in space (rounded up) by each merging before it."""
    from ..layers.windows import size_rule

    rule = size_rule(getattr(model.layers[stage], "size_rule", "official"))
    return rule.stage_grids(input_size, model.patch_size, stage + 1)[stage]


def swin_stride(model: nn.Module, stage: int) -> tuple[int, ...]:
    """Input pixels per token of ``stage``, per axis (time is never merged)."""
    patch = model.patch_size
    return tuple(p if i < len(patch) - 2 else p * 2**stage for i, p in enumerate(patch))


def block_window_order(plan: WindowPlan, shifted: bool) -> torch.Tensor:
    """``(P,)`` the padded grid's raster positions in the block's window order."""
    shift = plan.shift if shifted else (0,) * len(plan.window)
    return window_order(plan.padded, plan.window, shift)


def ravel(coords: Sequence[int], shape: Sequence[int]) -> int:
    """The raster index of ``coords`` in a grid of ``shape``."""
    index = 0
    for c, s in zip(coords, shape):
        index = index * s + c
    return index


def _index(name: str, value: int, length: int) -> int:
    if not -length <= value < length:
        raise ExplainError(f"{name} {value} out of range: there are {length}")
    return value % length


def window_attention(
    model: nn.Module,
    x: torch.Tensor,
    stage: int = 0,
    block: int = 1,
    query: Sequence[int] | None = None,
    head: int | None = None,
    target: int | None = None,
) -> WindowAttentionMap:
    """The attention of one query over its window in a Swin block.

    Args:
        model: a Swin or Video Swin model.
        x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``, normalised.
        stage, block: the block (negative indices count from the end); odd blocks shift.
        query: the query's input pixel, ``(y, x)`` or ``(t, y, x)``; default the centre.
        head: one head, or ``None`` for the mean over the heads.
        target: only named in the result; default the top-1 class.
    """
    if family_of(model).name != "Swin":
        raise ExplainError(f"window attention is Swin's; {type(model).__name__} has no windows "
                           f"(use rollout or gradcam)")
    stage = _index("stage", stage, len(model.layers))
    layer = model.layers[stage]
    block = _index("block", block, len(layer.blocks))
    blk = layer.blocks[block]
    name, _ = resolve_layer(model, f"layers.{stage}.blocks.{block}.attn")
    size = tuple(x.shape[2:])
    query = tuple(s // 2 for s in size) if query is None else tuple(int(q) for q in query)
    if len(query) != len(size) or not all(0 <= q < s for q, s in zip(query, size)):
        raise ExplainError(f"query {query} is not a pixel of the {'x'.join(map(str, size))} input")
    heads = blk.attn.num_heads
    if head is not None:
        head = _index("head", head, heads)

    x = prepare_input(x)
    with torch.no_grad(), evaluation(model), reference_path(model), capture_attention(model) as captured:
        logits = model(x)
    records = captured.of(name)
    if len(records) != 1:
        raise ExplainError(f"{name} ran {len(records)} times in a forward pass")
    grid = swin_stage_grid(model, size, stage)
    stride = swin_stride(model, stage)
    plan = layer.plan(grid, torch.device("cpu"))
    shifted = blk.is_shifted(plan)
    order = block_window_order(plan, shifted)
    n = plan.tokens_per_window
    token = tuple(q // s for q, s in zip(query, stride))
    where = int(torch.argsort(order)[ravel(token, plan.padded)])
    window, slot = where // n, where % n

    probs = records[0].probs.float()  # (B * nW, h, N, N)
    b = x.shape[0]
    probs = probs.view(b, plan.num_windows, heads, n, n)[:, window, :, slot].cpu()  # (B, h, N)
    row = probs.mean(1) if head is None else probs[:, head]
    keys = order[window * n : (window + 1) * n]
    total = math.prod(plan.padded)
    padded = torch.zeros(b, total)
    padded[:, keys] = row
    crop = (slice(None), *[slice(0, g) for g in grid])
    weights = padded.view(b, *plan.padded)[crop]
    member = torch.zeros(total, dtype=torch.bool)
    member[keys] = True
    maps = weights
    for axis, s in enumerate(stride):
        maps = maps.repeat_interleave(s, dim=axis + 1)
    maps = maps[(slice(None), *[slice(0, s) for s in size])]
    return WindowAttentionMap(
        maps, weights, member.view(plan.padded)[crop[1:]], token, query, window, slot, head, stride, plan, stage,
        block, shifted, name, _targets(logits, target), logits.float().softmax(1),
    )
