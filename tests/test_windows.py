"""The N-d window core against direct computations from coordinates."""

import itertools

import pytest
import torch

from tessera.layers.windows import (
    MASK_VALUE,
    clamped_bias_index,
    cyclic_shift,
    effective_window,
    relative_position_index,
    shifted_window_mask,
    window_order,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize("grid,window", [((6, 9), (3, 3)), ((4, 6, 8), (2, 3, 4)), ((14, 14), (7, 7))])
def test_partition_reverse_roundtrip_and_content(grid, window):
    x = torch.randn(2, *grid, 5)
    w = window_partition(x, window)
    counts = [g // s for g, s in zip(grid, window)]
    assert w.shape == (2 * torch.tensor(counts).prod().item(), torch.tensor(window).prod().item(), 5)
    assert torch.equal(window_reverse(w, window, grid), x)
    # window k of image b, token t holds the grid position (window coords * window + t coords)
    for b, widx, t in [(0, 0, 0), (1, len(w) // 2 - 1, w.shape[1] - 1), (0, 1, 1)]:
        wc = list(itertools.product(*[range(c) for c in counts]))[widx % (len(w) // 2)]
        tc = list(itertools.product(*[range(s) for s in window]))[t]
        pos = tuple(a * s + o for a, s, o in zip(wc, window, tc))
        assert torch.equal(w[b * (len(w) // 2) + widx % (len(w) // 2), t], x[(b, *pos)])


def _explicit_index_2d(wh, ww):
    n = wh * ww
    out = torch.empty(n, n, dtype=torch.long)
    for i in range(n):
        for j in range(n):
            hi, wi, hj, wj = i // ww, i % ww, j // ww, j % ww
            out[i, j] = (hi - hj + wh - 1) * (2 * ww - 1) + (wi - wj + ww - 1)
    return out


def _explicit_index_3d(wd, wh, ww):
    n = wd * wh * ww
    coords = [(d, h, w) for d in range(wd) for h in range(wh) for w in range(ww)]
    out = torch.empty(n, n, dtype=torch.long)
    for i, (di, hi, wi) in enumerate(coords):
        for j, (dj, hj, wj) in enumerate(coords):
            out[i, j] = ((di - dj + wd - 1) * (2 * wh - 1) * (2 * ww - 1)
                         + (hi - hj + wh - 1) * (2 * ww - 1) + (wi - wj + ww - 1))
    return out


@pytest.mark.parametrize("window", [(7, 7), (3, 5), (2, 2)])
def test_relative_position_index_2d_formula(window):
    assert torch.equal(relative_position_index(window), _explicit_index_2d(*window))


@pytest.mark.parametrize("window", [(2, 3, 3), (4, 2, 3)])
def test_relative_position_index_3d_formula(window):
    assert torch.equal(relative_position_index(window), _explicit_index_3d(*window))


def test_clamped_bias_index_modes():
    table = (4, 7, 7)
    # only time clamped: the official [:N, :N] slice is the exact offsets (tokens are time-major)
    exact = clamped_bias_index(table, (2, 7, 7), "exact")
    assert torch.equal(exact, clamped_bias_index(table, (2, 7, 7), "official"))
    # space clamped: exact picks the true offsets out of the big table ...
    exact = clamped_bias_index(table, (2, 4, 4), "exact")
    full = relative_position_index(table)
    coords = [(d, h, w) for d in range(2) for h in range(4) for w in range(4)]
    big = [(d, h, w) for d in range(4) for h in range(7) for w in range(7)]
    for i, j in [(0, 5), (17, 3), (31, 31), (12, 29)]:
        assert exact[i, j] == full[big.index(coords[i]), big.index(coords[j])]
    # ... while the official slice does not (this is what their checkpoints were trained with)
    assert not torch.equal(exact, clamped_bias_index(table, (2, 4, 4), "official"))


def _wrapped(padded, shift):
    """Per token of the rolled grid: on which axes it came around the end (official roll)."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(p) for p in padded], indexing="ij"), -1)
    return torch.stack([(coords[..., a] + s >= p) for a, (p, s) in enumerate(zip(padded, shift))], -1)


@pytest.mark.parametrize(
    "padded,window,shift",
    [((14, 14), (7, 7), (3, 3)), ((8, 12), (4, 4), (2, 2)), ((4, 6, 6), (2, 3, 3), (1, 1, 1)), ((8, 6, 6), (4, 3, 3), (0, 1, 1))],
)
def test_mask_separates_tokens_that_were_not_neighbours(padded, window, shift):
    """Two tokens of one shifted window may attend to each other iff, on every axis, both
    came around the end of the grid in the roll or neither did."""
    mask = shifted_window_mask(padded, window, shift)
    wrapped = _wrapped(padded, shift).float()  # (*padded, n): rolled grid, as in the model
    w = window_partition(wrapped[None], window)  # (nW, N, n)
    same = (w[:, :, None, :] == w[:, None, :, :]).all(-1)
    assert mask.shape == same.shape
    assert torch.equal(mask == 0, same)
    assert set(mask.unique().tolist()) <= {0.0, MASK_VALUE}
    # a token attends across no boundary: after softmax, the weight on masked keys is ~0
    scores = torch.randn(mask.shape) + mask
    probs = scores.softmax(-1)
    assert probs[~same].max() < 1e-30


def test_no_shift_means_no_mask():
    assert shifted_window_mask((14, 14), (7, 7), (0, 0)) is None


def test_window_order_matches_roll_then_partition():
    padded, window, shift = (6, 9, 4), (3, 3, 2), (1, 1, 1)
    x = torch.randn(2, *padded, 3)
    ref = window_partition(cyclic_shift(x, shift), window).reshape(2, -1, 3)
    order = window_order(padded, window, shift)
    assert torch.equal(x.reshape(2, -1, 3)[:, order], ref)


def test_effective_window_clamps_per_axis():
    assert effective_window((16, 7, 7), (8, 7, 7), (4, 3, 3)) == ((8, 7, 7), (4, 0, 0))
    assert effective_window((4, 56, 56), (8, 7, 7), (4, 3, 3)) == ((4, 7, 7), (0, 3, 3))
