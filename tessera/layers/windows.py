"""The N-dimensional window core shared by the 2D Swin and the 3D Video Swin.

Both models do the same thing on a grid of 2 or 3 axes: pad the grid to a multiple of the
window, (in odd blocks) shift it cyclically by half a window, cut it into windows, attend
inside each window with a relative-position bias and, after a shift, a mask that keeps
tokens of regions that were not neighbours apart; then undo it all. Everything here works
for any number of axes; the models differ only in the tuples they pass.

Where a map is not a multiple of the window, implementations disagree on the window, the
shift, the padding and their order; a :class:`SizeRule` (``official``, ``torchvision``,
``timm``, and ``always_partition`` of the official detection and segmentation backbones)
fixes each of them per axis, at construction and at run time, and the plan of a stage
records the result.

Tensors on a grid are channels-last: ``(B, *grid, C)``. Windows are ``(B * nW, N, C)`` with
``N = prod(window)`` tokens in raster order inside each window and windows in raster order
over the window grid -- the order of the official ``window_partition``.

A :class:`WindowPlan` holds what depends only on the grid, the window, the shift and the size
rule: the effective window and shift, the padding and its order, the shift mask and the token
orders of the windows; it does the official ``pad -> roll -> window_partition`` and its
inverse. The backends use its token orders to keep a stage's tokens in window order
(``tessera.backends.swin``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..backends.cache import CACHE
from .helpers import prod

#: The value the official code adds to the scores of token pairs from different regions.
MASK_VALUE = -100.0


# ---------------------------------------------------------------------------------------
# Sizes, and the size rules: what a stage does when its map is not a multiple of the window
# ---------------------------------------------------------------------------------------


def effective_window(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Clamp the window per axis to the grid, as the official Video Swin does at run time:
    on an axis where the grid is no larger than the window, the window becomes the grid
    and the shift becomes 0."""
    win, sft = [], []
    for g, w, s in zip(grid, window, shift):
        if g <= w:
            win.append(int(g))
            sft.append(0)
        else:
            win.append(int(w))
            sft.append(int(s))
    return tuple(win), tuple(sft)


def padded_size(grid: Sequence[int], window: Sequence[int]) -> tuple[int, ...]:
    """The grid rounded up to a multiple of the window on every axis."""
    return tuple(-(-g // w) * w for g, w in zip(grid, window))


class WindowSizes(NamedTuple):
    """What a stage does on one input grid, per axis: the effective window and odd-block
    shift, the grid padded (zeros at the end) to a multiple of that window, and the order of
    the two: ``shift_first`` rolls the grid before padding it (timm), else the padded grid
    is rolled (the official code, torchvision)."""

    window: tuple[int, ...]
    shift: tuple[int, ...]
    padded: tuple[int, ...]
    shift_first: bool = False


def official_sizes(grid: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> WindowSizes:
    """The official rule at run time (the official Video Swin's, and the image model's for
    sizes the official image code refuses): clamp the window per axis to the grid
    (:func:`effective_window`), pad to a multiple of it, then roll."""
    win, sft = effective_window(grid, window, shift)
    return WindowSizes(win, sft, padded_size(grid, win))


def torchvision_sizes(grid: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> WindowSizes:
    """torchvision's rule at run time: the window is never clamped, the grid is padded to a
    multiple of it (a 6-token axis with a 7-token window holds one token of padding), and an
    axis whose padded length is no larger than the window is not shifted."""
    padded = padded_size(grid, window)
    sft = tuple(0 if p <= w else int(s) for p, w, s in zip(padded, window, shift))
    return WindowSizes(tuple(int(w) for w in window), sft, padded)


def timm_sizes(grid: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> WindowSizes:
    """timm's rule at run time: the window and shift fixed at construction (clamped there to
    the map at ``img_size``) are kept; the grid is rolled first, then padded."""
    window = tuple(int(w) for w in window)
    return WindowSizes(window, tuple(int(s) for s in shift), padded_size(grid, window), shift_first=True)


def partition_sizes(grid: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> WindowSizes:
    """The official detection and segmentation backbones at run time: the window and shift
    are kept on every axis whatever the grid (a 7x7 map with a 7x7 window is still shifted,
    with its mask), the grid is padded to a multiple of the window, then rolled."""
    window = tuple(int(w) for w in window)
    return WindowSizes(window, tuple(int(s) for s in shift), padded_size(grid, window))


def official_stage_window(map_size: Sequence[int] | None, window: Sequence[int]):
    """The official image model at construction: a stage whose map at ``img_size`` is no
    larger than the window on its shorter side gets a square window of that side and no
    shift (``min(input_resolution) <= window_size``). Returns ``(window, shift)``."""
    window = tuple(window)
    if map_size is not None and min(map_size) <= min(window):
        return (min(map_size),) * len(window), (0,) * len(window)
    return window, tuple(w // 2 for w in window)


def torchvision_stage_window(map_size: Sequence[int] | None, window: Sequence[int]):
    """torchvision at construction: every stage keeps the window and half of it as shift."""
    return tuple(window), tuple(w // 2 for w in window)


def timm_stage_window(map_size: Sequence[int] | None, window: Sequence[int]):
    """timm at construction: per axis, a map no larger than the window clamps the window to
    the map and removes the shift on that axis only."""
    if map_size is None:
        return torchvision_stage_window(None, window)
    win = tuple(min(m, w) for m, w in zip(map_size, window))
    return win, tuple(0 if m <= w else w // 2 for m, w in zip(map_size, window))


@dataclass(frozen=True)
class SizeRule:
    """How a Swin sizes its windows for maps that are not a multiple of the window.

    Attributes:
        name: ``official``, ``torchvision``, ``timm`` or ``always_partition``.
        stage_window: ``(map at img_size or None, window) -> (window, shift)`` of a stage
            when the model is built; the window is the one its bias table is made for.
        sizes: ``(grid, window, shift) -> WindowSizes`` on the grid of an actual input.
        patch_remainder: pixels that do not fill a patch are zero-padded (``pad``) or
            dropped (``crop``, what a strided convolution does).
    """

    name: str
    stage_window: Callable[[Sequence[int] | None, Sequence[int]], tuple[tuple[int, ...], tuple[int, ...]]]
    sizes: Callable[[Sequence[int], Sequence[int], Sequence[int]], WindowSizes]
    patch_remainder: str

    def patch_grid(self, size: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
        """The grid of patches of an input of ``size``."""
        if self.patch_remainder == "crop":
            return tuple(s // p for s, p in zip(size, patch))
        return tuple(-(-s // p) for s, p in zip(size, patch))

    def stage_grids(self, size: Sequence[int], patch: Sequence[int], num_stages: int,
                    merged_axes: int = 2) -> list[tuple[int, ...]]:
        """The map of each stage for an input of ``size``: the patch grid, then halved on
        the last ``merged_axes`` axes by each patch merging, which pads an odd side (so a
        side of 25 becomes 13, not 12)."""
        grid = self.patch_grid(size, patch)
        grids = [grid]
        for _ in range(num_stages - 1):
            lead = len(grid) - merged_axes
            grid = grid[:lead] + tuple(-(-g // 2) for g in grid[lead:])
            grids.append(grid)
        return grids


SIZE_RULES: dict[str, SizeRule] = {
    "official": SizeRule("official", official_stage_window, official_sizes, "pad"),
    "torchvision": SizeRule("torchvision", torchvision_stage_window, torchvision_sizes, "crop"),
    "timm": SizeRule("timm", timm_stage_window, timm_sizes, "crop"),
    # the official detection and segmentation backbones (Swin-Transformer-Semantic-Segmentation,
    # Swin-Transformer-Object-Detection): every stage partitions its map into windows
    "always_partition": SizeRule("always_partition", torchvision_stage_window, partition_sizes, "pad"),
}

#: The rules of classifiers; ``always_partition`` is the dense-prediction backbones' rule and
#: differs from them even at 224 (stage 4 of Swin-T keeps its shift on its 7x7 map).
CLASSIFIER_RULES = ("official", "torchvision", "timm")


def size_rule(name: str) -> SizeRule:
    """The :class:`SizeRule` called ``name``."""
    if name not in SIZE_RULES:
        raise ValueError(f"unknown size_rule {name!r}; expected one of {', '.join(SIZE_RULES)}")
    return SIZE_RULES[name]


def rules_agree(first: str, second: str, size: Sequence[int], patch: Sequence[int], window: Sequence[int],
                num_stages: int) -> bool:
    """Whether two size rules make an image Swin of these sizes, built for and run at
    ``size``, compute the same function: the same patch grid, and in every stage the same
    table window, shift, effective window, padding (and, where a shifted grid is padded,
    the same order of the two)."""
    a, b = size_rule(first), size_rule(second)
    if a.patch_grid(size, patch) != b.patch_grid(size, patch):
        return False
    for grid in a.stage_grids(size, patch, num_stages):
        built_a, built_b = a.stage_window(grid, window), b.stage_window(grid, window)
        if built_a[0] != built_b[0]:  # the tables' window
            return False
        sizes_a, sizes_b = a.sizes(grid, *built_a), b.sizes(grid, *built_b)
        if (sizes_a.window, sizes_a.shift, sizes_a.padded) != (sizes_b.window, sizes_b.shift, sizes_b.padded):
            return False
        if any(sizes_a.shift) and sizes_a.padded != tuple(grid) and sizes_a.shift_first != sizes_b.shift_first:
            return False
    return True


# ---------------------------------------------------------------------------------------
# Partition, reverse, shift
# ---------------------------------------------------------------------------------------


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``(B, *grid, C) -> (B * nW, N, C)``; every grid axis must be a multiple of the window."""
    n = len(window)
    b, *grid, c = x.shape
    counts = [g // w for g, w in zip(grid, window)]
    shape = [b]
    for cnt, w in zip(counts, window):
        shape += [cnt, w]
    x = x.view(*shape, c)
    # (B, n0, w0, n1, w1, ..., C) -> (B, n0, n1, ..., w0, w1, ..., C)
    perm = [0] + [1 + 2 * i for i in range(n)] + [2 + 2 * i for i in range(n)] + [2 * n + 1]
    return x.permute(perm).reshape(-1, prod(window), c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, N, C) -> (B, *grid, C)``."""
    n = len(window)
    counts = [g // w for g, w in zip(grid, window)]
    c = windows.shape[-1]
    b = windows.shape[0] // prod(counts)
    x = windows.view(b, *counts, *window, c)
    perm = [0]
    for i in range(n):
        perm += [1 + i, 1 + n + i]
    perm.append(2 * n + 1)
    return x.permute(perm).reshape(b, *grid, c)


def cyclic_shift(x: torch.Tensor, shift: Sequence[int], reverse: bool = False) -> torch.Tensor:
    """Roll the grid axes of ``(B, *grid, C)`` by ``-shift`` (or ``+shift`` to undo it)."""
    sign = 1 if reverse else -1
    return torch.roll(x, shifts=tuple(sign * s for s in shift), dims=tuple(range(1, len(shift) + 1)))


def pad_grid(x: torch.Tensor, padded: Sequence[int]) -> torch.Tensor:
    """Zero-pad ``(B, *grid, C)`` at the end of every grid axis up to ``padded``."""
    grid = x.shape[1:-1]
    pads: list[int] = [0, 0]  # channels
    for g, p in reversed(list(zip(grid, padded))):
        pads += [0, p - g]
    if not any(pads):
        return x
    return torch.nn.functional.pad(x, pads)


# ---------------------------------------------------------------------------------------
# Spatial shuffle: windows of tokens spread over the whole grid (Shuffle Transformer)
# ---------------------------------------------------------------------------------------


def grid_transpose(x: torch.Tensor, outer: Sequence[int]) -> torch.Tensor:
    """Reorder every grid axis of ``(B, *grid, C)``: an axis of length ``P`` is read as an
    ``(outer, P // outer)`` array and transposed, so that position ``a * (P // outer) + b``
    moves to ``b * outer + a``. ``grid_transpose(., P // outer)`` undoes it."""
    n = len(outer)
    b, *grid, c = x.shape
    shape = [b]
    for g, o in zip(grid, outer):
        shape += [o, g // o]
    perm = [0] + [i for axis in range(n) for i in (2 + 2 * axis, 1 + 2 * axis)] + [2 * n + 1]
    return x.reshape(*shape, c).permute(perm).reshape(b, *grid, c)


def shuffle_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """Spatially shuffled windows: ``(B, *grid, C) -> (B * nW, N, C)`` where window ``k``
    (``k`` in ``[0, grid / window)`` per axis) holds the positions ``k + j * grid / window``,
    ``j`` in ``[0, window)``: tokens spread over the map at a stride of ``grid / window``,
    in the same order as :func:`window_partition`. It is the regular partition of the
    transposed grid. Every grid axis must be a multiple of the window."""
    return window_partition(grid_transpose(x, window), window)


def shuffle_reverse(windows: torch.Tensor, window: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`shuffle_partition`: ``(B * nW, N, C) -> (B, *grid, C)``."""
    counts = [g // w for g, w in zip(grid, window)]
    return grid_transpose(window_reverse(windows, window, grid), counts)


# ---------------------------------------------------------------------------------------
# Mask and relative position index
# ---------------------------------------------------------------------------------------


def region_labels(padded: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """Label every position of the padded grid by the region it came from before the cyclic
    shift. Along one axis of length P the official slices ``[0:P-w]``, ``[P-w:P-s]`` and
    ``[P-s:P]`` get labels 0, 1, 2; an axis without shift is one region. Returns a
    ``(*padded)`` long tensor."""
    labels = torch.zeros((), dtype=torch.long)
    for axis, (p, w, s) in enumerate(zip(padded, window, shift)):
        pos = torch.arange(p)
        if s > 0:
            lab = (pos >= p - w).long() + (pos >= p - s).long()
        else:
            lab = torch.zeros(p, dtype=torch.long)
        view = [1] * len(padded)
        view[axis] = p
        labels = labels * 3 + lab.view(view)
    return labels


def shifted_window_mask(
    padded: Sequence[int], window: Sequence[int], shift: Sequence[int]
) -> torch.Tensor | None:
    """The additive attention mask of the shifted windows, ``(nW, N, N)`` with 0 where two
    tokens come from the same region and ``-100`` where not; ``None`` without a shift."""
    if not any(shift):
        return None
    labels = region_labels(padded, window, shift)
    win = window_partition(labels[None, ..., None], window).squeeze(-1)  # (nW, N)
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros(diff.shape, dtype=torch.float32).masked_fill_(diff != 0, MASK_VALUE)


def relative_position_index(window: Sequence[int], table_window: Sequence[int] | None = None) -> torch.Tensor:
    """``(N, N)`` index into a relative-position bias table of ``prod(2 * W_i - 1)`` rows.

    For query ``a`` and key ``b`` with coordinates in ``window``, the entry is
    ``sum_i (a_i - b_i + W_i - 1) * prod_{j > i} (2 * W_j - 1)`` where ``W`` is the window
    the table was made for (``table_window``, by default ``window``). With ``W == window``
    this is the official index; with a smaller ``window`` it picks the true offsets out of
    the larger table.
    """
    window, table_window = tuple(int(w) for w in window), tuple(int(w) for w in (table_window or window))
    if torch.compiler.is_compiling():
        return _relative_position_index(window, table_window, None)
    # the same few windows come up in every block: computed once on the CPU (a 3-D window
    # has 392^2 entries, and under a dispatch mode such as the FLOP counter every operator
    # is slow), then copied to the default device (the meta device for a model built there)
    index = CACHE.get(("relative position index", window, table_window),
                      lambda: _relative_position_index(window, table_window, "cpu"))
    return index.to(torch.get_default_device(), copy=True)


def _relative_position_index(window: tuple[int, ...], table_window: tuple[int, ...],
                             device: str | None) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(*[torch.arange(w, device=device) for w in window], indexing="ij"))
    coords = coords.flatten(1)  # (n, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (n, N, N): query minus key
    index = torch.zeros(rel.shape[1:], dtype=torch.long, device=device)
    for axis, w in enumerate(table_window):
        stride = prod([2 * v - 1 for v in table_window[axis + 1 :]])
        index += (rel[axis] + w - 1) * stride
    return index



def clamped_bias_index(
    table_window: Sequence[int], window: Sequence[int], mode: str = "exact"
) -> torch.Tensor:
    """The bias index for an effective (possibly clamped) ``window`` into a table made for
    ``table_window``.

    ``mode="exact"`` uses the true relative offsets. ``mode="official"`` reproduces the
    official Video Swin (and torchvision), which slices the full index to ``[:N, :N]``: the
    same as exact when only the leading (temporal) axis is clamped, since tokens are
    time-major, but not when a spatial axis is (their checkpoints were trained with it).
    """
    table_window, window = tuple(table_window), tuple(window)
    if window == table_window:
        return relative_position_index(window)
    if mode == "official":
        n = prod(window)
        return relative_position_index(table_window)[:n, :n].contiguous()
    if mode == "exact":
        return relative_position_index(window, table_window)
    raise ValueError(f"unknown bias index mode {mode!r}; expected 'exact' or 'official'")


# ---------------------------------------------------------------------------------------
# The plan of one stage: everything that depends only on grid, window and shift
# ---------------------------------------------------------------------------------------


def window_order(padded: Sequence[int], window: Sequence[int], shift: Sequence[int]) -> torch.Tensor:
    """``(P,)`` raster positions (in the padded grid) of the tokens in window order, after a
    cyclic shift by ``shift``: ``x_windows = x_padded.flatten(1, -2)[:, order]``. Built with
    the very functions of the reference path, so both orders agree by construction."""
    total = prod(padded)
    idx = torch.arange(total).view(1, *padded, 1)
    if any(shift):
        idx = cyclic_shift(idx, shift)
    return window_partition(idx, window).reshape(-1)


class WindowPlan:
    """Windows of one stage for a given input grid: the effective window and shift (from the
    model's size rule, recorded in ``rule``), the padded grid, whether the grid is rolled
    before it is padded (``shift_first``), the shift mask and, for grids that need no
    padding, the gathers of the fast path. Blocks with an even index use no shift, blocks
    with an odd index ``shift``.

    Plans are made once per grid and kept in the backends' cache (:func:`get_plan`); plain
    attributes, so that ``torch.compile`` can trace through a plan made inside a compiled
    region.
    """

    def __init__(self, grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                 device: torch.device, shift_first: bool = False, rule: str = "official") -> None:
        self.grid, self.window, self.shift, self.device = grid, window, shift, device
        self.shift_first, self.rule = shift_first, rule
        self.padded = padded_size(grid, window)
        self.needs_pad = self.padded != grid
        self.shifted = any(shift)
        self.tokens_per_window = prod(window)
        self.num_windows = prod([p // w for p, w in zip(self.padded, window)])
        # the regions of the shifted windows are those of the padded grid in either order
        # (what the official code, timm and torchvision all compute)
        mask = shifted_window_mask(self.padded, window, shift)
        self.mask = None if mask is None else mask.to(device)
        # Gathers between the grid's raster order and the regular and shifted window orders,
        # ``orders[(source, target)]``, for grids that need no padding: ``tokens[:, order]``
        # moves ``(B, L, C)`` tokens from ``source`` to ``target`` order.
        self.orders: dict[tuple[str, str], torch.Tensor] = {}
        if not self.needs_pad:
            regular = window_order(grid, window, (0,) * len(window))
            shifted = window_order(grid, window, shift) if self.shifted else regular
            inv_regular, inv_shifted = torch.argsort(regular), torch.argsort(shifted)
            orders = {
                ("raster", "regular"): regular,
                ("raster", "shifted"): shifted,
                ("regular", "shifted"): inv_regular[shifted],
                ("shifted", "regular"): inv_shifted[regular],
                ("regular", "raster"): inv_regular,
                ("shifted", "raster"): inv_shifted,
            }
            self.orders = {k: v.to(device) for k, v in orders.items()}

    @property
    def nbytes(self) -> int:  # for the cache's bound
        tensors = [self.mask, *self.orders.values()]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    def partition(self, x: torch.Tensor, shifted: bool) -> torch.Tensor:
        """``(B, *grid, C) -> (B * nW, N, C)``: pad, roll (for a shifted block; in the rule's
        order) and cut into windows, as the reference code does."""
        if shifted and self.shift_first:
            x = cyclic_shift(x, self.shift)
        x = pad_grid(x, self.padded)
        if shifted and not self.shift_first:
            x = cyclic_shift(x, self.shift)
        return window_partition(x, self.window)

    def reverse(self, windows: torch.Tensor, shifted: bool) -> torch.Tensor:
        """The inverse of :meth:`partition`: ``(B * nW, N, C) -> (B, *grid, C)``, padding
        removed."""
        x = window_reverse(windows, self.window, self.padded)
        if shifted and not self.shift_first:
            x = cyclic_shift(x, self.shift, reverse=True)
        if self.needs_pad:
            x = x[(slice(None), *[slice(0, g) for g in self.grid])]
        if shifted and self.shift_first:
            x = cyclic_shift(x, self.shift, reverse=True)
        return x


def get_plan(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int], device: torch.device,
    rule: str = "official",
) -> WindowPlan:
    """The cached :class:`WindowPlan` of a stage with window ``window`` and odd-block shift
    ``shift`` on an input grid ``grid``, sized by the size rule ``rule`` (see
    :class:`SizeRule`; ``official`` clamps per axis as the official Video Swin)."""
    grid = tuple(int(g) for g in grid)
    sizes = size_rule(rule).sizes(grid, window, shift)
    key = ("window plan", grid, sizes, rule, str(device))
    if torch.compiler.is_compiling():
        # Traced: never store a plan made here (its tensors may be fake). A plan made eagerly
        # before an export is used as it is, so that its tensors become constants.
        cached = CACHE.peek(key) if torch.compiler.is_exporting() else None
        return cached if cached is not None else _make_plan(grid, sizes, device, rule)
    return CACHE.get(key, lambda: _make_plan(grid, sizes, device, rule))


def _make_plan(grid: tuple[int, ...], sizes: WindowSizes, device, rule: str) -> WindowPlan:
    return WindowPlan(grid, sizes.window, sizes.shift, torch.device(device), sizes.shift_first, rule)
