"""Pictures of a Swin block's windows, drawn from the model's own window core.

:func:`window_layout` asks the stage for its :class:`~tessera.layers.windows.WindowPlan`
on the input's grid (padding, clamped window, shift) and takes every number it draws from
the core's functions: the windows from :func:`~tessera.layers.windows.window_order`, the
regions after the cyclic shift from :func:`~tessera.layers.windows.region_labels`, the
mask from ``plan.mask`` and the order in which patch merging concatenates 2x2 tokens from
the stage's own :class:`~tessera.models.swin.PatchMerging` run on token numbers. Nothing is
computed a second way, so the picture cannot disagree with the model.

:func:`draw_windows` renders it on the image (or on each temporal slice of a clip), one
panel each for: the regular windows; the block's (shifted) windows on the image; the grid as
the block sees it after the cyclic shift, coloured by region; the mask of one window; and
the merging of 2x2 tokens at the end of the stage. Every panel's raster is the data given to
``imshow``, with the axes labelled (``windows``, ``shifted``, ``regions``, ``mask``,
``merging``, with ``:t`` per temporal slice), so it can be read back from the figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap, to_hex, to_rgb
from matplotlib.patches import Rectangle
from matplotlib.figure import Figure
from torch import nn

from .. import backends
from ..layers.windows import WindowPlan, cyclic_shift, region_labels, window_order
from .attention import swin_stage_grid, swin_stride
from .targets import ExplainError, family_of

#: merging slot k holds the token at this (row, column) offset of its 2x2 group
MERGE_OFFSETS = ((0, 0), (1, 0), (0, 1), (1, 1))


@dataclass
class WindowLayout:
    """The windows of one Swin block on an input of ``input_size`` pixels.

    Attributes (grids are token grids; ``T`` only for video):
        stage, block: which block.
        input_size: ``(H, W)`` or ``(T, H, W)`` pixels.
        grid, padded: the stage's token grid and the grid padded to a multiple of the window.
        window, shift: the plan's (clamped) window and the block's shift (zeros for a block
            without one).
        stride: input pixels per token, per axis.
        plan: the stage's plan (``plan.mask`` is the mask of the shifted blocks).
        shifted: whether this block shifts.
        windows: ``(*padded)`` the window of every position in the regular partition.
        block_windows: ``(*padded)`` the window of every position (in the image's own
            coordinates) in this block's partition: after a shift a window wraps around.
        regions: ``(*padded)`` the region label of every position of the grid *after* the
            cyclic shift (as the block sees it; 0 everywhere without a shift).
        regions_in_place: the same labels at the positions the tokens hold in the image
            (the cyclic shift undone).
        merge_slots: ``(*padded_even)`` for every token, its place 0-3 in the concatenation
            of its 2x2 group; ``None`` when the stage has no merging.
    """

    stage: int
    block: int
    input_size: tuple[int, ...]
    grid: tuple[int, ...]
    padded: tuple[int, ...]
    window: tuple[int, ...]
    shift: tuple[int, ...]
    stride: tuple[int, ...]
    plan: WindowPlan
    shifted: bool
    windows: torch.Tensor
    block_windows: torch.Tensor
    regions: torch.Tensor
    regions_in_place: torch.Tensor
    merge_slots: torch.Tensor | None

    @property
    def num_windows(self) -> int:
        return self.plan.num_windows

    def mask(self, window: int) -> torch.Tensor:
        """``(N, N)`` the additive mask of a window of this block (zeros without a shift)."""
        if not self.shifted:
            n = self.plan.tokens_per_window
            return torch.zeros(n, n)
        return self.plan.mask[window].cpu()

    def default_window(self) -> int:
        """The window to show the mask of: the last, which mixes the most regions after a shift."""
        return self.num_windows - 1


def _partition_index(padded, window, shift) -> torch.Tensor:
    """``(*padded)`` the window of every position, from the core's window order."""
    order = window_order(padded, window, shift)
    slots = torch.empty_like(order)
    slots[order] = torch.arange(order.numel())
    return (slots // math.prod(window)).view(padded)


def merge_slots(merging: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """``(H', W')`` grid (padded to even sizes) of each token's place 0-3 in the concatenation
    of its 2x2 group, read from the module itself: it is run on a grid whose channels hold
    each token's number, and the input of its norm (the concatenated groups) is read (on the
    reference path, where the norm is the module itself and its hook runs)."""
    h, w = grid
    dim = merging.dim
    seen = []
    handle = merging.norm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with torch.no_grad(), backends.use("reference"):
            numbers = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, h, w, 1).expand(1, h, w, dim)
            merging(numbers.to(merging.reduction.weight.dtype).to(merging.reduction.weight.device))
    finally:
        handle.remove()
    groups = seen[0][0, ..., ::dim].round().long().cpu()  # (H'/2, W'/2, 4): token numbers, 0 for padding
    ph, pw = 2 * groups.shape[0], 2 * groups.shape[1]
    slots = torch.full((ph * pw,), -1, dtype=torch.long)
    flat = groups.reshape(-1, 4)
    for k in range(4):
        numbers = flat[:, k]
        real = numbers > 0
        rows, cols = (numbers[real] - 1) // w, (numbers[real] - 1) % w
        slots[rows * pw + cols] = k
    # padding tokens (zeros) take the place their position implies
    gy, gx = torch.meshgrid(torch.arange(ph), torch.arange(pw), indexing="ij")
    implied = (gy % 2) + 2 * (gx % 2)
    slots = torch.where(slots < 0, implied.reshape(-1), slots)
    return slots.view(ph, pw)


def window_layout(model: nn.Module, input_size: tuple[int, ...], stage: int = 0, block: int = 1) -> WindowLayout:
    """The windows of block ``block`` of stage ``stage`` for an input of ``input_size``
    pixels (``(H, W)``, or ``(T, H, W)`` for a video model); negative indices count from the
    end."""
    if family_of(model).name != "Swin":
        raise ExplainError(f"window drawings are of Swin models; {type(model).__name__} has no windows")
    input_size = tuple(int(s) for s in input_size)
    if len(input_size) != model.ndim:
        raise ExplainError(f"a {'video' if model.ndim == 3 else 'image'} model takes a {model.ndim}-D input size, "
                           f"got {input_size}")
    stages = len(model.layers)
    if not -stages <= stage < stages:
        raise ExplainError(f"stage {stage} out of range: the model has {stages} stages")
    stage %= stages
    layer = model.layers[stage]
    depth = len(layer.blocks)
    if not -depth <= block < depth:
        raise ExplainError(f"block {block} out of range: stage {stage} has {depth} blocks")
    block %= depth
    grid = swin_stage_grid(model, input_size, stage)
    plan = layer.plan(grid, torch.device("cpu"))
    shifted = layer.blocks[block].is_shifted(plan)
    zero = (0,) * len(grid)
    shift = plan.shift if shifted else zero
    regions = region_labels(plan.padded, plan.window, shift) if shifted else torch.zeros(plan.padded, dtype=torch.long)
    in_place = cyclic_shift(regions[None, ..., None], shift, reverse=True)[0, ..., 0]
    slots = None
    if layer.downsample is not None:
        slots = merge_slots(layer.downsample, grid[-2:])
    return WindowLayout(
        stage, block, input_size, grid, plan.padded, plan.window, shift, swin_stride(model, stage), plan, shifted,
        _partition_index(plan.padded, plan.window, zero), _partition_index(plan.padded, plan.window, shift),
        regions, in_place, slots,
    )


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------

_WINDOW_COLOURS = ListedColormap([
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
])
_HUES = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4"]
#: 27 colours: the 9 spatial regions, in three shades for the three temporal ones


def _shade(colour: str, factor: float) -> str:
    """Darker (``factor < 1``) or lighter (``> 1``) than ``colour``."""
    rgb = np.array(to_rgb(colour))
    rgb = rgb * factor if factor <= 1 else rgb + (1 - rgb) * (factor - 1)
    return to_hex(np.clip(rgb, 0, 1))


_REGION_COLOURS = ListedColormap([_shade(c, f) for f in (1.0, 0.6, 1.4) for c in _HUES])
_SLOT_COLOURS = ListedColormap(_HUES[:4])
_MASK_COLOURS = ListedColormap(["#3b3b3b", "#fde725"])  # -100, 0


def _pixels(tokens: torch.Tensor, stride: tuple[int, int]) -> np.ndarray:
    """A token raster ``(h, w)`` as pixels ``(h * sy, w * sx)``."""
    return tokens.repeat_interleave(stride[0], 0).repeat_interleave(stride[1], 1).numpy()


def _canvas(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (float RGB) on a grey canvas of ``size`` pixels (padding at the end)."""
    canvas = np.full((*size, 3), 0.55, dtype=np.float32)
    h, w = min(size[0], image.shape[0]), min(size[1], image.shape[1])
    canvas[:h, :w] = image[:h, :w]
    return canvas


def _grid_lines(ax, size, step, colour, width, offset=(0, 0)) -> None:
    """Lines every ``step`` pixels over a ``size`` canvas, starting at ``offset`` (one collection)."""
    segments = [((0, y), (size[1], y)) for y in np.arange(offset[0] % step[0], size[0] + 1, step[0])]
    segments += [((x, 0), (x, size[0])) for x in np.arange(offset[1] % step[1], size[1] + 1, step[1])]
    ax.add_collection(LineCollection(segments, colors=colour, linewidths=width))


def _numbers(ax, tokens: torch.Tensor, stride, size_limit: int = 16) -> None:
    """The number of every token (grids up to ``size_limit`` a side)."""
    h, w = tokens.shape
    if max(h, w) > size_limit:
        return
    for i in range(h):
        for j in range(w):
            ax.text((j + 0.5) * stride[1], (i + 0.5) * stride[0], str(int(tokens[i, j])), ha="center",
                    va="center", fontsize=6 if max(h, w) > 8 else 8, color="white")


def _piece_numbers(ax, ids: torch.Tensor, pieces: torch.Tensor, stride, limit: int = 400) -> None:
    """The id of every contiguous piece (tokens of one id and one piece), once, at its centre."""
    keys = ids * (int(pieces.max()) + 1) + pieces
    values = keys.unique()
    if len(values) > limit:
        return
    ys, xs = torch.meshgrid(torch.arange(ids.shape[0]), torch.arange(ids.shape[1]), indexing="ij")
    for key in values.tolist():
        member = keys == key
        y, x = ys[member].float().mean().item(), xs[member].float().mean().item()
        ax.text((x + 0.5) * stride[1], (y + 0.5) * stride[0], str(int(ids[member][0])), ha="center", va="center",
                fontsize=7, color="white", fontweight="bold")


def _hatch_padding(ax, image_size, size) -> None:
    """Hatch the padding past the image (up to ``size``, the padded grid's pixels)."""
    h, w = image_size
    if w < size[1]:
        ax.add_patch(Rectangle((w, 0), size[1] - w, size[0], fill=False, hatch="//", edgecolor="#dddddd", lw=0))
    if h < size[0]:
        ax.add_patch(Rectangle((0, h), w, size[0] - h, fill=False, hatch="//", edgecolor="#dddddd", lw=0))


def _outline(ax, member: np.ndarray, stride, colour="white", width=2.0) -> None:
    """Outline the tokens of a boolean ``(h, w)`` set: the edges between members and the rest."""
    sy, sx = stride
    inside = np.pad(member, 1)
    segments = []
    ys, xs = np.nonzero(member)
    for i, j in zip(ys.tolist(), xs.tolist()):
        if not inside[i, j + 1]:  # above
            segments.append(((j * sx, i * sy), ((j + 1) * sx, i * sy)))
        if not inside[i + 2, j + 1]:  # below
            segments.append(((j * sx, (i + 1) * sy), ((j + 1) * sx, (i + 1) * sy)))
        if not inside[i + 1, j]:  # left
            segments.append(((j * sx, i * sy), (j * sx, (i + 1) * sy)))
        if not inside[i + 1, j + 2]:  # right
            segments.append((((j + 1) * sx, i * sy), ((j + 1) * sx, (i + 1) * sy)))
    ax.add_collection(LineCollection(segments, colors=colour, linewidths=width))


def _setup(ax, size, title: str, label: str) -> None:
    ax.set_label(label)
    ax.set_xlim(0, size[1])
    ax.set_ylim(size[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def _frame(layout: WindowLayout, image: np.ndarray, t: int | None) -> np.ndarray:
    """The image, or the first frame of temporal slice ``t`` of a clip (slices of the padding
    past the clip's end show its last frame)."""
    if t is None:
        return image
    return image[min(t * layout.stride[0], image.shape[0] - 1)]


def _slice_panels(axes, layout: WindowLayout, image: np.ndarray, t: int | None, chosen: int) -> None:
    """The windows, shifted windows and regions panels of one (temporal slice of the) grid."""
    frame = _frame(layout, image, t)
    stride = layout.stride[-2:]
    padded = layout.padded[-2:]
    size = (padded[0] * stride[0], padded[1] * stride[1])
    suffix = "" if t is None else f":{t}"
    at = "" if t is None else f" (t={t})"
    canvas = _canvas(frame, size)
    pick = (t,) if t is not None else ()
    windows = layout.windows[pick]
    block_windows = layout.block_windows[pick]
    regions = layout.regions[pick]
    win = layout.window[-2:]
    shift = layout.shift[-2:]
    step = (win[0] * stride[0], win[1] * stride[1])
    colours = dict(cmap=_WINDOW_COLOURS, vmin=-0.5, vmax=len(_WINDOW_COLOURS.colors) - 0.5)

    ax = axes[0]
    ax.imshow(canvas, extent=(0, size[1], size[0], 0))
    ax.imshow(_pixels(windows % len(_WINDOW_COLOURS.colors), stride), alpha=0.35, interpolation="nearest",
              extent=(0, size[1], size[0], 0), **colours)
    _grid_lines(ax, size, stride, "white", 0.3)
    _grid_lines(ax, size, step, "white", 1.6)
    _hatch_padding(ax, layout.input_size[-2:], size)
    _piece_numbers(ax, windows, windows, stride)
    grid_text = "x".join(map(str, layout.grid))
    pad_text = "" if layout.padded == layout.grid else f", padded to {'x'.join(map(str, layout.padded))}"
    _setup(ax, size, f"stage {layout.stage}: {grid_text} tokens{pad_text}\nwindow {'x'.join(map(str, layout.window))}, "
                     f"{layout.num_windows} windows{at}", "windows" + suffix)

    ax = axes[1]
    ax.imshow(canvas, extent=(0, size[1], size[0], 0))
    ax.imshow(_pixels(block_windows % len(_WINDOW_COLOURS.colors), stride), alpha=0.35, interpolation="nearest",
              extent=(0, size[1], size[0], 0), **colours)
    _grid_lines(ax, size, stride, "white", 0.3)
    _outline(ax, (block_windows == chosen).numpy(), stride, "white", 2.0)
    _hatch_padding(ax, layout.input_size[-2:], size)
    _piece_numbers(ax, block_windows, layout.regions_in_place[pick], stride)
    shift_text = "x".join(map(str, layout.shift))
    title = (f"block {layout.block}: windows shifted by {shift_text} tokens" if layout.shifted
             else f"block {layout.block}: regular windows (no shift)")
    _setup(ax, size, f"{title}{at}\nnumbers: window; outlined: window {chosen}", "shifted" + suffix)

    ax = axes[2]
    # after the roll, slice t holds the tokens of slice t + shift (in time, for video)
    source = canvas if t is None else _canvas(_frame(layout, image, (t + layout.shift[0]) % layout.padded[0]), size)
    rolled = np.roll(source, (-shift[0] * stride[0], -shift[1] * stride[1]), axis=(0, 1))
    ax.imshow(rolled, extent=(0, size[1], size[0], 0))
    ax.imshow(_pixels(regions, stride), cmap=_REGION_COLOURS, vmin=-0.5, vmax=len(_REGION_COLOURS.colors) - 0.5,
              alpha=0.45, interpolation="nearest", extent=(0, size[1], size[0], 0))
    _grid_lines(ax, size, step, "white", 1.6)
    chosen_regular = (layout.windows[pick] == chosen) if t is None or _window_in_slice(layout, chosen, t) else None
    if chosen_regular is not None:
        _outline(ax, chosen_regular.numpy(), stride, "white", 2.0)
    _piece_numbers(ax, regions, layout.windows[pick], stride)
    _setup(ax, size, f"after the cyclic shift by -{shift_text}{at}:\nregions (numbers); tokens of different "
                     f"regions are masked", "regions" + suffix)


def _window_in_slice(layout: WindowLayout, window: int, t: int) -> bool:
    return bool((layout.windows[t] == window).any())


def _mask_panel(ax, layout: WindowLayout, chosen: int) -> None:
    mask = layout.mask(chosen).numpy()
    n = mask.shape[0]
    ax.imshow(mask, cmap=_MASK_COLOURS, vmin=-100, vmax=0, interpolation="nearest")
    ax.set_label("mask")
    # the region of each token of the window, in window order
    order = window_order(layout.padded, layout.window, (0,) * len(layout.padded))
    tokens = order[chosen * n : (chosen + 1) * n]
    labels = layout.regions.reshape(-1)[tokens].tolist()
    state = "0: same region, -100: different regions" if layout.shifted else "no shift: all zeros"
    if n <= 16:
        ticks = list(range(n))
        ax.set_xticks(ticks, [str(v) for v in labels], fontsize=7)
        ax.set_yticks(ticks, [str(v) for v in labels], fontsize=7)
        state = f"ticks: region; {state}"
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_title(f"mask of window {chosen} ({n}x{n} tokens)\n{state}", fontsize=8)


def _merge_panel(ax, layout: WindowLayout, frame: np.ndarray) -> None:
    stride = layout.stride[-2:]
    if layout.merge_slots is None:
        ax.set_label("merging")
        ax.axis("off")
        ax.text(0.5, 0.5, f"stage {layout.stage} is the last:\nno patch merging", ha="center", va="center",
                transform=ax.transAxes, fontsize=9)
        return
    slots = layout.merge_slots
    zoom = max(slots.shape) > 16
    if zoom:  # the first 8x8 tokens, large enough to read
        slots = slots[:8, :8]
    size = (slots.shape[0] * stride[0], slots.shape[1] * stride[1])
    ax.imshow(_canvas(frame, size)[: size[0], : size[1]], extent=(0, size[1], size[0], 0))
    ax.imshow(_pixels(slots, stride), cmap=_SLOT_COLOURS, vmin=-0.5, vmax=3.5,
              alpha=0.4, interpolation="nearest", extent=(0, size[1], size[0], 0))
    _grid_lines(ax, size, stride, "white", 0.3)
    _grid_lines(ax, size, (2 * stride[0], 2 * stride[1]), "white", 1.6)
    _numbers(ax, slots, stride)
    _hatch_padding(ax, layout.input_size[-2:], size)
    order = " ".join(f"{k}=({dy},{dx})" for k, (dy, dx) in enumerate(MERGE_OFFSETS))
    where = " (top-left 8x8 tokens)" if zoom else ""
    _setup(ax, size, f"patch merging{where}: 2x2 tokens -> 1 of stage {layout.stage + 1}\nconcatenated as {order}",
           "merging")


def draw_windows(layout: WindowLayout, image: np.ndarray, window: int | None = None,
                 max_slices: int = 8) -> Figure:
    """The figure of a :class:`WindowLayout` on ``image``: float RGB in ``[0, 1]``,
    ``(H, W, 3)``, or ``(T, H, W, 3)`` frames for a video model (one row of panels per
    temporal slice of the stage's grid, at most ``max_slices``). ``window`` picks the window
    whose mask is shown (default :meth:`WindowLayout.default_window`)."""
    chosen = layout.default_window() if window is None else int(window)
    if not 0 <= chosen < layout.num_windows:
        raise ExplainError(f"window {chosen} out of range: block {layout.block} of stage {layout.stage} has "
                           f"{layout.num_windows} windows")
    video = len(layout.grid) == 3
    if video:
        slices = list(range(min(layout.padded[0], max_slices)))
        fig = Figure(figsize=(3.3 * 3, 3.3 * (len(slices) + 1)))
        axes = fig.subplots(len(slices) + 1, 3, squeeze=False)
        for row, t in enumerate(slices):
            _slice_panels(axes[row], layout, image, t, chosen)
        _mask_panel(axes[-1][0], layout, chosen)
        _merge_panel(axes[-1][1], layout, image[0])
        axes[-1][2].axis("off")
        if len(slices) < layout.padded[0]:
            axes[-1][2].text(0.5, 0.5, f"showing {len(slices)} of {layout.padded[0]} temporal slices",
                             ha="center", va="center", transform=axes[-1][2].transAxes, fontsize=9)
    else:
        fig = Figure(figsize=(3.3 * 5, 3.9))
        axes = fig.subplots(1, 5)
        _slice_panels(axes, layout, image, None, chosen)
        _mask_panel(axes[3], layout, chosen)
        _merge_panel(axes[4], layout, image)
    fig.tight_layout()
    return fig
