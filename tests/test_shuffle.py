"""Shuffle Transformer: the shuffled windows, the neighbour-window connection, the official
formulation and layout, the pyramid API and the parameter counts."""

import itertools

import pytest
import torch
from pyramid_checks import check_intermediates

import tessera
from tessera.layers.windows import grid_transpose, shuffle_partition, shuffle_reverse, window_partition
from tessera.models import ShuffleTransformer
from tessera.models.shuffle import ShuffleBlock, padding_mask

SMALL = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(2, 2, 2, 2), token_dim=8, num_classes=5)


def coords(grid):
    """``(1, *grid, n)`` tensor holding each position's coordinates."""
    mesh = torch.meshgrid(*[torch.arange(g) for g in grid], indexing="ij")
    return torch.stack(mesh, dim=-1)[None]


# ---------------------------------------------------------------------------------------
# the spatial shuffle in the window core
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid,window", [((14, 14), (7, 7)), ((6, 9), (3, 3)), ((4, 6, 8), (2, 3, 2))])
def test_shuffled_window_holds_tokens_a_stride_apart(grid, window):
    counts = [g // w for g, w in zip(grid, window)]
    windows = shuffle_partition(coords(grid), window)  # (nW, N, ndim): each token's position
    assert windows.shape == (torch.tensor(counts).prod(), torch.tensor(window).prod(), len(grid))
    for k, kc in enumerate(itertools.product(*[range(c) for c in counts])):
        for t, tc in enumerate(itertools.product(*[range(w) for w in window])):
            # window k, token t: position k + t * (grid / window) on every axis
            expected = [o + j * c for o, j, c in zip(kc, tc, counts)]
            assert windows[k, t].tolist() == expected
    # a regular window holds neighbours instead: the two partitions differ
    assert not torch.equal(windows, window_partition(coords(grid), window))


def test_shuffle_is_a_partition_of_the_transposed_grid_and_reverses():
    x = torch.randn(2, 6, 12, 5)
    window = (3, 4)
    assert torch.equal(shuffle_partition(x, window), window_partition(grid_transpose(x, window), window))
    assert torch.equal(grid_transpose(grid_transpose(x, window), (2, 3)), x)
    assert torch.equal(shuffle_reverse(shuffle_partition(x, window), window, (6, 12)), x)


def test_stages_alternate_regular_and_shuffled_blocks():
    model = ShuffleTransformer(**SMALL)
    for stage in model.stages:
        assert [blk.shuffle for blk in stage.blocks] == [False, True]
    assert not any(blk.shuffle for s in ShuffleTransformer(**SMALL, shuffle=False).stages for blk in s.blocks)


def _attention_reach(block, grid, source):
    """The positions whose attention output changes when the token at ``source`` changes."""
    block.eval()
    x = torch.randn(1, block.norm1.num_features, *grid)
    y = x.clone()
    y[(0, slice(None), *source)] += 5.0
    with torch.no_grad():
        diff = (block.attention(block.norm1(y)) - block.attention(block.norm1(x))).abs().amax(1)[0]
    return {tuple(p) for p in (diff > 1e-6).nonzero().tolist()}


def test_shuffled_block_attends_across_the_map_and_regular_block_does_not():
    torch.manual_seed(0)
    grid = (14, 14)  # window 7: shuffled windows take every second row and column
    regular = ShuffleBlock(16, 2, window_size=7, shuffle=False)
    shuffled = ShuffleBlock(16, 2, window_size=7, shuffle=True)
    shuffled.load_state_dict(regular.state_dict())
    reach_regular = _attention_reach(regular, grid, (0, 0))
    reach_shuffled = _attention_reach(shuffled, grid, (0, 0))
    assert reach_regular == {(r, c) for r in range(7) for c in range(7)}  # its own 7x7 corner
    assert reach_shuffled == {(r, c) for r in range(0, 14, 2) for c in range(0, 14, 2)}  # spread over the map


def test_neighbour_window_convolution_connects_adjacent_windows():
    torch.manual_seed(0)
    block = ShuffleBlock(16, 2, window_size=7, shuffle=False).eval()  # eval: BatchNorm is per token
    x = torch.randn(1, 16, 14, 14)
    y = x.clone()
    y[0, :, 6, 3] += 5.0  # the bottom row of the top-left window
    with torch.no_grad():
        changed = (block(y) - block(x))[0, :, 7, 3].abs().max()  # the top row of the window below
        assert changed > 1e-3
        # without the convolution the windows are cut off from each other
        block.local.weight.zero_()
        block.local.bias.zero_()
        assert torch.equal(block(y)[0, :, 7, 3], block(x)[0, :, 7, 3])


def test_padding_mask_hides_exactly_the_pad_tokens():
    block = ShuffleBlock(8, 1, window_size=7, shuffle=True)
    grid = (9, 16)  # pads to 14 x 21
    plan = block.plan(grid, torch.device("cpu"))
    assert plan.padded == (14, 21)
    for shuffled, partition in ((False, window_partition), (True, shuffle_partition)):
        mask = padding_mask(grid, plan, shuffled)
        pos = partition(torch.nn.functional.pad(coords(grid), (0, 0, 0, 5, 0, 5), value=-1), plan.window)
        is_pad = (pos < 0).any(-1)  # (nW, N)
        assert torch.equal(mask[:, 0, :] != 0, is_pad)
        assert (~is_pad).any(-1).all()  # no window is all padding


# ---------------------------------------------------------------------------------------
# the official formulation (written out from the reference's rearrange patterns)
# ---------------------------------------------------------------------------------------


def official_attention(block: ShuffleBlock, x: torch.Tensor) -> torch.Tensor:
    """The official ``Attention.forward`` on a map ``(B, C, H, W)`` (1x1 convolutions, the
    window axes split as ``(ws hh)`` when shuffled and ``(hh ws)`` when not)."""
    attn = block.attn
    b, c, h, w = x.shape
    ws, nh, d = block.window_size[0], attn.num_heads, attn.head_dim
    hh, ww = h // ws, w // ws
    qkv = torch.einsum("oc,bchw->bohw", attn.qkv.weight, x)
    if block.shuffle:  # b (qkv h d) (ws1 hh) (ws2 ww) -> qkv (b hh ww) h (ws1 ws2) d
        q, k, v = qkv.reshape(b, 3, nh, d, ws, hh, ws, ww).permute(1, 0, 5, 7, 2, 4, 6, 3).reshape(3, -1, nh, ws * ws, d)
    else:  # b (qkv h d) (hh ws1) (ww ws2) -> qkv (b hh ww) h (ws1 ws2) d
        q, k, v = qkv.reshape(b, 3, nh, d, hh, ws, ww, ws).permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(3, -1, nh, ws * ws, d)
    dots = (q @ k.transpose(-2, -1)) * attn.scale + attn.relative_position_bias(block.window_size).unsqueeze(0)
    out = dots.softmax(-1) @ v  # (b hh ww) h (ws1 ws2) d
    out = out.reshape(b, hh, ww, nh, ws, ws, d)
    if block.shuffle:  # -> b (h d) (ws1 hh) (ws2 ww)
        out = out.permute(0, 3, 6, 4, 1, 5, 2).reshape(b, c, h, w)
    else:  # -> b (h d) (hh ws1) (ww ws2)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(b, c, h, w)
    return torch.einsum("oc,bchw->bohw", attn.proj.weight, out) + attn.proj.bias[:, None, None]


@pytest.mark.parametrize("shuffle", [False, True])
def test_attention_matches_the_official_formulation(shuffle):
    torch.manual_seed(0)
    block = ShuffleBlock(32, 4, window_size=7, shuffle=shuffle).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
        x = torch.randn(2, 32, 14, 21)
        torch.testing.assert_close(block.attention(x), official_attention(block, x), atol=1e-5, rtol=1e-5)


def to_official_layout(sd):
    """tessera -> the official key names and 1x1 convolution shapes (the inverse of the
    converter, written from the official module names)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "patch_embed":
            parts[0] = "to_token"
        elif parts[0] == "stages":
            stage = f"stage{int(parts[1]) + 1}"
            if parts[2] == "downsample":
                parts = [stage, "patch_partition", *parts[3:]]
            else:
                j = int(parts[3])
                parts = [stage, "layers", str(j // 2), str(j % 2), *parts[4:]]
        k = ".".join(parts).replace(".attn.qkv.", ".attn.to_qkv.")
        if v.dim() == 2 and any(s in k for s in (".to_qkv.", ".attn.proj.", ".fc1.", ".fc2.")):
            v = v[:, :, None, None]
        out[k] = v
        if k.endswith("relative_position_bias_table"):  # the official code saves its index
            out[k.replace("bias_table", "index")] = torch.zeros(49, 49, dtype=torch.long)
    return out


def test_official_checkpoint_layout_loads_and_reproduces_outputs():
    torch.manual_seed(0)
    model = ShuffleTransformer(**SMALL).eval()
    official = to_official_layout(model.state_dict())
    assert "stage2.layers.0.1.attn.to_qkv.weight" in official and "to_token.conv1.0.weight" in official
    clone = ShuffleTransformer(**SMALL).eval()
    report = tessera.load_checkpoint(clone, official)
    assert report.format == "shuffle_official" and not report.missing and not report.unexpected
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


# ---------------------------------------------------------------------------------------
# the pyramid API, sizes, counts
# ---------------------------------------------------------------------------------------


def test_intermediates_follow_feature_info_and_end_in_the_features():
    model = ShuffleTransformer(**SMALL)
    maps, features = check_intermediates(model)
    assert model.intermediates_normalized is False
    torch.testing.assert_close(features, maps[-1])


def test_sizes_not_a_multiple_of_the_window_and_too_small_inputs():
    model = ShuffleTransformer(**SMALL).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 100, 36)).shape == (1, 5)  # maps 25x9 .. 3x1: padded, clamped
    with pytest.raises(ValueError, match="at least 29"):
        model(torch.randn(1, 3, 28, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 64, 64))


def test_relative_position_tables_are_excluded_from_weight_decay():
    model = ShuffleTransformer(**SMALL)
    names = model.no_weight_decay()
    assert len(names) == sum(SMALL["depths"]) and all(n.endswith("relative_position_bias_table") for n in names)


# the official code's own counts (its training logs; its README rounds to 28M / 50M)
@pytest.mark.parametrize("name,params", [("shuffle_t", 28_532_482), ("shuffle_s", 50_076_178)])
def test_parameter_counts(name, params):
    assert sum(p.numel() for p in tessera.create_model(name).parameters()) == params
