"""Adapting converted weights to the model they are loaded into.

:func:`tessera.load_checkpoint` calls the model's ``adapt_checkpoint(state_dict, report)``
after the format conversion. By default (:func:`adapt_generic`) it runs

1. :func:`resize_relative_position_tables`: bias tables made for another window are resized
   bicubically (the official ``load_pretrained`` for images; see :func:`resize_table_3d`
   for videos);
2. :func:`resize_absolute_pos_embeds`: absolute position embeddings made for another grid are
   interpolated to the model's grid.

Families add their own steps: Video Swin first inflates image weights
(:func:`inflate_image_to_video`, exactly as the official ``inflate_weights``); ViT, PVT and
LeViT resize their own embeddings and bias grids.

A classifier head of another class count is handled afterwards, by the loader itself: it is
re-initialised with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..layers.pos_embed import resize_pos_embed

if TYPE_CHECKING:
    from .load import LoadReport


StateDict = dict[str, torch.Tensor]
TABLE = "relative_position_bias_table"
PATCH_CONV = "patch_embed.proj.weight"


# ---------------------------------------------------------------------------------------
# Table geometry
# ---------------------------------------------------------------------------------------


def _odd_side(n: int) -> int | None:
    """``w`` with ``(2w - 1) ** 2 == n``, or None."""
    side = math.isqrt(n)
    return (side + 1) // 2 if side * side == n and side % 2 == 1 else None


def table_window(rows: int, ndim: int, like: Sequence[int] | None = None) -> tuple[int, ...]:
    """The window a relative-position bias table of ``rows`` rows was made for.

    2-D tables are taken as square, ``(2W - 1) ** 2`` rows, as the official loader does. A
    3-D table has ``(2Wd - 1)(2Wh - 1)(2Ww - 1)`` rows; the product is solved preferring, in
    order, the spatial window of ``like``, the temporal window of ``like``, then a square
    spatial window (the largest) with a temporal window of more than one frame.

    Raises :class:`CheckpointError` when no window gives ``rows``.
    """
    if ndim == 2:
        w = _odd_side(rows)
        if w is None:
            raise CheckpointError(f"a relative position bias table of {rows} rows fits no square window")
        return (w, w)
    if ndim != 3:
        raise CheckpointError(f"relative position bias tables of {ndim} axes are not supported")
    if like is not None:
        _, wh, ww = like
        spatial = (2 * wh - 1) * (2 * ww - 1)
        if rows % spatial == 0 and (rows // spatial) % 2 == 1:
            return ((rows // spatial + 1) // 2, wh, ww)
        temporal = 2 * like[0] - 1
        if rows % temporal == 0 and (w := _odd_side(rows // temporal)) is not None:
            return (like[0], w, w)
    candidates = []
    for side in range(1, math.isqrt(rows) + 1, 2):  # side = 2w - 1, odd
        if rows % (side * side) == 0 and (rows // (side * side)) % 2 == 1:
            candidates.append(((rows // (side * side) + 1) // 2, (side + 1) // 2))
    if not candidates:
        raise CheckpointError(f"a relative position bias table of {rows} rows fits no 3-D window")
    wd, w = max(candidates, key=lambda c: (c[0] > 1, c[1]))
    return (wd, w, w)


def _model_window(model: nn.Module, key: str, rows: int) -> tuple[int, ...]:
    """The window of the attention module that owns table ``key``."""
    owner = model.get_submodule(key.rsplit(".", 1)[0]) if "." in key else model
    window = getattr(owner, "window_size", None)
    if window is None:
        return table_window(rows, 2)
    return tuple(window)


# ---------------------------------------------------------------------------------------
# Resizing tables
# ---------------------------------------------------------------------------------------


def resize_table_2d(table: torch.Tensor, new_window: Sequence[int], old_window: Sequence[int] | None = None) -> torch.Tensor:
    """``((2h - 1)(2w - 1), nH) -> ((2H - 1)(2W - 1), nH)`` by bicubic interpolation of each
    head's ``(2h - 1, 2w - 1)`` grid of offsets, as the official ``load_pretrained``
    (``align_corners=False``)."""
    old_window = tuple(old_window or table_window(table.shape[0], 2))
    heads = table.shape[1]
    grid = table.T.reshape(1, heads, 2 * old_window[0] - 1, 2 * old_window[1] - 1).float()
    size = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    grid = F.interpolate(grid, size=size, mode="bicubic", align_corners=False)
    return grid.reshape(heads, -1).T.contiguous().to(table.dtype)


def resize_table_3d(table: torch.Tensor, new_window: Sequence[int], old_window: Sequence[int]) -> torch.Tensor:
    """Resize a video table ``(prod(2 * old - 1), nH)`` to ``new_window``.

    Space is resized as images are: each temporal offset's ``(2Wh - 1, 2Ww - 1)`` grid is
    interpolated bicubically (the inflation rule uses the same resize). Time is not
    interpolated: the offsets the checkpoint has keep their biases, so a shorter temporal
    window crops the table to its offsets and a longer one repeats the outermost offsets
    (frames farther apart than the checkpoint ever saw get the bias of the farthest it saw).
    Interpolating in time would instead move every learned bias to another frame distance.
    """
    (od, oh, ow), (nd, nh, nw) = old_window, new_window
    heads = table.shape[1]
    grid = table.T.reshape(heads, 2 * od - 1, 2 * oh - 1, 2 * ow - 1).float()
    if (oh, ow) != (nh, nw):
        grid = F.interpolate(grid.transpose(0, 1), size=(2 * nh - 1, 2 * nw - 1), mode="bicubic", align_corners=False)
        grid = grid.transpose(0, 1)
    if od != nd:
        offsets = torch.arange(-(nd - 1), nd)  # new temporal offsets -> nearest known offset
        grid = grid[:, offsets.clamp(-(od - 1), od - 1) + od - 1]
    return grid.reshape(heads, -1).T.contiguous().to(table.dtype)


def _fmt(window: Sequence[int]) -> str:
    return "x".join(map(str, window))


def resize_relative_position_tables(model: nn.Module, sd: StateDict, report: LoadReport) -> StateDict:
    """Resize every relative-position bias table made for another window than the model's
    (same number of heads) to the model's window."""
    own = model.state_dict()
    changes: dict[tuple[str, str], int] = {}
    for key, table in sd.items():
        target = own.get(key)
        if not key.endswith(TABLE) or target is None or table.dim() != 2 or target.dim() != 2:
            continue
        if table.shape == target.shape or table.shape[1] != target.shape[1]:
            continue  # same window, or another head count (reported as a mismatch)
        window = _model_window(model, key, target.shape[0])
        old = table_window(table.shape[0], len(window), like=window)
        if len(window) == 2:
            sd[key] = resize_table_2d(table, window, old)
        else:
            sd[key] = resize_table_3d(table, window, old)
        changes[(_fmt(old), _fmt(window))] = changes.get((_fmt(old), _fmt(window)), 0) + 1
    for (old, new), count in changes.items():
        report.notes.append(f"resized {count} relative position bias tables from window {old} to {new}")
    return sd


# ---------------------------------------------------------------------------------------
# Absolute position embeddings
# ---------------------------------------------------------------------------------------


def _grid_of(tokens: int, owner: nn.Module, like: Sequence[int] | None = None) -> tuple[int, ...]:
    grid = getattr(owner, "patch_grid", None)
    if grid is not None and math.prod(grid) == tokens:
        return tuple(grid)
    side = math.isqrt(tokens)
    if side * side == tokens:
        return (side, side)
    if like is not None and len(like) == 2:  # the aspect ratio of the other grid
        h = math.isqrt(tokens * like[0] // like[1])
        if h > 0 and tokens % h == 0:
            return (h, tokens // h)
    raise CheckpointError(f"cannot tell the grid of a position embedding of {tokens} tokens")


def resize_absolute_pos_embeds(model: nn.Module, sd: StateDict, report: LoadReport) -> StateDict:
    """Interpolate absolute position embeddings ``(1, prefix + prod(grid), C)`` made for
    another grid to the model's (bicubic in 2-D, see :func:`resize_pos_embed`).

    Applies to every parameter whose name ends with ``pos_embed``. The model's grid is the
    owner's ``patch_grid`` when it has one, else a square; the checkpoint's grid is a square,
    else the model's aspect ratio. Leading class/distillation tokens (``num_prefix_tokens``
    of the owner or of the model, 0 when absent) are kept as they are.
    """
    for name, param in model.named_parameters():
        emb = sd.get(name)
        if not name.endswith("pos_embed") or emb is None or emb.shape == param.shape:
            continue
        if emb.dim() != 3 or param.dim() != 3 or emb.shape[-1] != param.shape[-1]:
            continue  # another layout or width: reported as a mismatch
        owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        prefix = int(getattr(owner, "num_prefix_tokens", getattr(model, "num_prefix_tokens", 0)) or 0)
        new = _grid_of(param.shape[1] - prefix, owner)
        old = _grid_of(emb.shape[1] - prefix, nn.Module(), like=new)
        sd[name] = resize_pos_embed(emb, old, new, num_prefix_tokens=prefix)
        report.notes.append(f"interpolated {name} from a {_fmt(old)} to a {_fmt(new)} grid")
    return sd


# ---------------------------------------------------------------------------------------
# Inflation of image weights to video
# ---------------------------------------------------------------------------------------


def inflate_table(table: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """A 2-D table to the 3-D ``window`` ``(Wd, Wh, Ww)``: resized bicubically when its window
    is not ``(Wh, Ww)``, then the same 2-D biases for each of the ``2 * Wd - 1`` temporal
    offsets (``repeat(2 * Wd - 1, 1)``, time being the slowest axis of the table)."""
    wd, wh, ww = window
    if table.shape[0] != (2 * wh - 1) * (2 * ww - 1):
        table = resize_table_2d(table, (wh, ww))
    return table.repeat(2 * wd - 1, 1)


def inflate_image_to_video(model: nn.Module, sd: StateDict, report: LoadReport) -> StateDict:
    """Turn image weights into video weights when a 2-D patch convolution meets a 3-D one.

    As the official Video Swin ``inflate_weights``: the patch convolution is repeated over
    the temporal patch ``pT`` and divided by ``pT`` (a clip of identical frames gives the
    image's embedding), every bias table is resized to the spatial window when needed and
    tiled over the temporal offsets (:func:`inflate_table`); index and mask buffers are the
    model's own. The image head is loaded only if its class count happens to match;
    otherwise it is re-initialised (with a warning) by the loader.
    """
    own = model.state_dict()
    weight, target = sd.get(PATCH_CONV), own.get(PATCH_CONV)
    if weight is None or target is None or weight.dim() == target.dim():
        return sd
    if weight.dim() == 5 and target.dim() == 4:
        raise CheckpointError(f"a video checkpoint (3-D patch embedding {tuple(weight.shape)}) "
                              "cannot be loaded into an image model")
    if not (weight.dim() == 4 and target.dim() == 5):
        return sd
    frames = target.shape[2]
    sd[PATCH_CONV] = weight.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    tables = [k for k in sd if k.endswith(TABLE) and k in own]
    groups: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for key in tables:
        window = _model_window(model, key, own[key].shape[0])
        old = table_window(sd[key].shape[0], 2)
        groups[(old, window)] = groups.get((old, window), 0) + 1
        sd[key] = inflate_table(sd[key], window)
    parts = [f"patch embedding repeated over {frames} frames and divided by {frames}"]
    for (old, (wd, wh, ww)), count in sorted(groups.items()):
        resized = f"resized from {_fmt(old)} to {wh}x{ww} and " if old != (wh, ww) else ""
        parts.append(f"{count} relative position bias tables {resized}tiled over {2 * wd - 1} temporal offsets")
    note = "inflated image weights to video: " + "; ".join(parts)
    report.notes.append(note)
    report.warn(note)
    return sd


def adapt_generic(model: nn.Module, sd: StateDict, report: LoadReport) -> StateDict:
    """The default ``adapt_checkpoint``: resize relative-position tables and absolute
    position embeddings made for another window or grid."""
    sd = resize_relative_position_tables(model, sd, report)
    return resize_absolute_pos_embeds(model, sd, report)
