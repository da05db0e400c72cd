"""The N-dimensional window core shared by the 2D Swin and the 3D Video Swin.

Both models do the same thing on a grid of 2 or 3 axes: pad the grid to a multiple of the
window, (in odd blocks) shift it cyclically by half a window, cut it into windows, attend
inside each window with a relative-position bias and, after a shift, a mask that keeps
tokens of regions that were not neighbours apart; then undo it all. Everything here works
for any number of axes; the models differ only in the tuples they pass.

Tensors on a grid are channels-last: ``(B, *grid, C)``. Windows are ``(B * nW, N, C)`` with
``N = prod(window)`` tokens in raster order inside each window and windows in raster order
over the window grid -- the order of the official ``window_partition``.

Two ways to compute the same function use this module:

* the reference path (``pad -> roll -> window_partition -> attention -> window_reverse ->
  roll -> crop``), written exactly as the official code does it;
* the fast path, which keeps a stage's tokens in *window order* and moves them from the
  regular to the shifted window order with one precomputed gather
  (:class:`WindowPlan`). Norms and MLPs act per token, so they do not care about the order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .helpers import prod

#: The value the official code adds to the scores of token pairs from different regions.
MASK_VALUE = -100.0


# ---------------------------------------------------------------------------------------
# Sizes
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
    table_window = tuple(table_window or window)
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij"))
    coords = coords.flatten(1)  # (n, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (n, N, N): query minus key
    index = torch.zeros(rel.shape[1:], dtype=torch.long)
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
    """Windows of one stage for a given input grid: the effective (clamped) window and shift,
    the padded grid, the shift mask and, for grids that need no padding, the gathers of the
    fast path. Blocks with an even index use no shift, blocks with an odd index ``shift``.

    Everything is computed once, when the plan is made (plain attributes, so that
    ``torch.compile`` can trace through a plan made inside a compiled region).
    """

    def __init__(self, grid: tuple[int, ...], window: tuple[int, ...], shift: tuple[int, ...],
                 device: torch.device) -> None:
        self.grid, self.window, self.shift, self.device = grid, window, shift, device
        self.padded = padded_size(grid, window)
        self.needs_pad = self.padded != grid
        self.shifted = any(shift)
        self.tokens_per_window = prod(window)
        self.num_windows = prod([p // w for p, w in zip(self.padded, window)])
        mask = shifted_window_mask(self.padded, window, shift)
        self.mask = None if mask is None else mask.to(device)
        # The fast path's gathers, only for grids that need no padding (with padding the MLP
        # would run on pad tokens): ``orders[(source, target)]`` moves tokens between the
        # grid's raster order and the regular and shifted window orders.
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

    def reorder(self, tokens: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """Move the tokens ``(B, L, C)`` of this grid from one order to another: ``raster``
        (the grid's own), ``regular`` or ``shifted`` window order."""
        if source == target:
            return tokens
        return permute_tokens(tokens, self.orders[(source, target)], self.orders[(target, source)])


class _PermuteTokens(torch.autograd.Function):
    """``x.index_select(1, order)`` for a permutation ``order``, whose gradient is the gather
    by the inverse permutation (``index_select``'s own backward is a slower scatter-add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def outside_inference_mode():
    """A context in which cached tensors are made as normal tensors even when the caller runs
    under ``torch.inference_mode`` (inference tensors could not be used with autograd later)."""
    if not torch.compiler.is_compiling() and torch.is_inference_mode_enabled():
        return torch.inference_mode(False)
    return contextlib.nullcontext()


def permute_tokens(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Reorder the tokens of ``(B, L, C)`` by a permutation of ``L`` (``inverse`` undoes it)."""
    if torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_compiling():
        return _PermuteTokens.apply(x, order, inverse)
    return x.index_select(1, order)


_PLANS: dict[tuple, WindowPlan] = {}


def get_plan(
    grid: Sequence[int], window: Sequence[int], shift: Sequence[int], device: torch.device, clamp: bool = True
) -> WindowPlan:
    """The cached :class:`WindowPlan` of a stage with window ``window`` and odd-block shift
    ``shift`` on an input grid ``grid`` (clamped per axis as the official Video Swin; with
    ``clamp=False`` the window and shift are kept whatever the grid, which is padded, as the
    official detection and segmentation backbones do)."""
    win, sft = effective_window(grid, window, shift) if clamp else (tuple(window), tuple(shift))
    grid = tuple(int(g) for g in grid)
    key = (grid, win, sft, str(device))
    if torch.compiler.is_compiling():
        # Traced: never store a plan made here (its tensors may be fake). A plan made eagerly
        # before an export is used as it is, so that its gathers become constants.
        if torch.compiler.is_exporting() and key in _PLANS:
            return _PLANS[key]
        return WindowPlan(grid, win, sft, torch.device(device))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 256:  # many input sizes: keep memory bounded
            _PLANS.clear()
        with outside_inference_mode():
            plan = _PLANS[key] = WindowPlan(grid, win, sft, torch.device(device))
    return plan
