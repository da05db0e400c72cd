"""PVT v2: timm's and the official checkpoints, overlapping patch embedding, the
convolutional feed-forward, linear spatial-reduction attention, the pyramid API, counts."""

import re

import pytest
import torch
from pyramid_checks import check_intermediates, kv_token_counts

import tessera
from tessera.layers.mlp import Mlp
from tessera.models import PyramidVisionTransformerV2
from tessera.models.pvt_v2 import ConvMlp, OverlapPatchEmbed

SMALL = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1), num_classes=5)


@pytest.fixture
def timm_case(golden):
    case = torch.load(golden / "timm_vit_cases.pt", weights_only=True)["pvt_v2"]
    state_dict = torch.load(golden / "timm_pvt_v2.pth", weights_only=True)
    return case, state_dict


def test_timm_checkpoint_reproduces_logits(timm_case):
    case, state_dict = timm_case
    model = PyramidVisionTransformerV2(**case["timm_kwargs"]).eval()
    report = tessera.load_checkpoint(model, state_dict)
    assert not report.missing and not report.unexpected
    with torch.no_grad():
        torch.testing.assert_close(model(case["x"]), case["logits"], atol=1e-4, rtol=1e-4)


def to_release_layout(sd):
    """timm -> the layout of the official release (whai362/PVT), as timm's own filter
    describes it (its inverse)."""
    out = {}
    for k, v in sd.items():
        k = k.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
        k = re.sub(r"^patch_embed\.", "patch_embed1.", k)
        k = re.sub(r"^stages\.(\d+)\.downsample\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.", k)
        k = re.sub(r"^stages\.(\d+)\.blocks\.", lambda m: f"block{int(m.group(1)) + 1}.", k)
        k = re.sub(r"^stages\.(\d+)\.norm\.", lambda m: f"norm{int(m.group(1)) + 1}.", k)
        out[k] = v
    return out


def test_official_release_layout_is_converted(timm_case):
    case, state_dict = timm_case
    release = to_release_layout(state_dict)
    assert "block1.0.mlp.dwconv.dwconv.weight" in release and "patch_embed4.proj.weight" in release
    model = PyramidVisionTransformerV2(**case["timm_kwargs"]).eval()
    report = tessera.load_checkpoint(model, release)
    assert report.format == "pvt_v2_official" and not report.missing and not report.unexpected
    with torch.no_grad():
        torch.testing.assert_close(model(case["x"]), case["logits"], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# the three mechanisms
# ---------------------------------------------------------------------------------------


def test_overlapping_patch_embedding_sees_the_neighbouring_patches():
    model = PyramidVisionTransformerV2(**SMALL)
    assert model.patch_embed.proj.kernel_size == (7, 7) and model.patch_embed.proj.stride == (4, 4)
    for stage in model.stages[1:]:
        assert stage.downsample.proj.kernel_size == (3, 3) and stage.downsample.proj.stride == (2, 2)
    torch.manual_seed(0)
    embed = OverlapPatchEmbed(3, 8, stride=4).eval()
    x = torch.randn(1, 3, 32, 32)

    def changed_patches(col):
        y = x.clone()
        y[0, :, 10, col] += 5.0
        with torch.no_grad():
            diff = (embed(y) - embed(x)).abs().amax(-1)[0, 2]  # patch row 2 holds pixel row 10
        return (diff > 1e-6).nonzero().flatten().tolist()

    # patch i covers columns 4i-3 .. 4i+3: column 11 is shared by patches 2 (5-11) and 3 (9-15)
    assert changed_patches(11) == [2, 3]
    assert changed_patches(8) == [2]  # patch 1 ends at column 7, patch 3 starts at 9


def test_convolutional_feed_forward_mixes_neighbouring_tokens():
    torch.manual_seed(0)
    mlp = ConvMlp(8, 16).eval()
    grid = (6, 7)
    x = torch.randn(1, 6 * 7, 8)
    y = x.clone()
    y[0, 2 * 7 + 3] += 5.0  # token (2, 3)
    with torch.no_grad():
        diff = (mlp(y, grid) - mlp(x, grid)).abs().amax(-1)[0].view(grid)
    reached = {tuple(p) for p in (diff > 1e-6).nonzero().tolist()}
    assert reached == {(r, c) for r in (1, 2, 3) for c in (2, 3, 4)}  # the 3x3 neighbourhood
    plain = Mlp(8, 16).eval()  # a token-wise MLP reaches only the token itself
    with torch.no_grad():
        diff = (plain(y) - plain(x)).abs().amax(-1)[0].view(grid)
    assert (diff > 1e-6).nonzero().tolist() == [[2, 3]]


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_linear_attention_pools_keys_and_values_to_7x7_at_any_size(size):
    linear = PyramidVisionTransformerV2(**SMALL, linear=True).eval()
    counts = kv_token_counts(linear, torch.randn(1, 3, *size))
    h, w = size[0] // 4, size[1] // 4
    assert counts == [((h >> i) * (w >> i), 49) for i in range(4)]
    assert all(blk.mlp.relu.__class__ is torch.nn.ReLU for s in linear.stages for blk in s.blocks)
    # the convolutional reduction instead depends on the size
    conv = PyramidVisionTransformerV2(**SMALL).eval()
    counts = kv_token_counts(conv, torch.randn(1, 3, *size))
    assert counts == [((h >> i) * (w >> i), (h >> i) // sr * ((w >> i) // sr)) for i, sr in enumerate((8, 4, 2, 1))]


# ---------------------------------------------------------------------------------------
# the pyramid API, inputs, counts
# ---------------------------------------------------------------------------------------


def test_intermediates_are_the_normalised_stage_maps():
    model = PyramidVisionTransformerV2(**SMALL)
    maps, features = check_intermediates(model)
    torch.testing.assert_close(features, maps[-1])
    # each stage ends with a LayerNorm (unit weight, zero bias at initialisation)
    assert model.intermediates_normalized is True
    for m in maps:
        torch.testing.assert_close(m.mean(1), torch.zeros_like(m[:, 0]), atol=1e-5, rtol=0)


def test_timm_keywords_and_bad_inputs():
    model = PyramidVisionTransformerV2(**SMALL, img_size=64, mlp_ratios=4.0, sr_ratios=(4, 2, 1, 1))
    assert model.default_cfg["input_size"] == (3, 64, 64)
    assert model.stages[0].blocks[0].mlp.fc1.out_features == 64
    with pytest.raises(ValueError, match="at least 13"):
        model(torch.randn(1, 3, 12, 64))
    with pytest.raises(ValueError, match="global_pool"):
        PyramidVisionTransformerV2(**SMALL, global_pool="max")
    linear = PyramidVisionTransformerV2(**SMALL, linear=True).eval()
    with torch.no_grad():
        assert linear(torch.randn(1, 3, 20, 20)).shape == (1, 5)  # no size limit with pooling


@pytest.mark.parametrize("name,params", [("pvt_v2_b0", 3_666_760), ("pvt_v2_b2", 25_362_856)])
def test_parameter_counts(name, params):
    assert sum(p.numel() for p in tessera.create_model(name).parameters()) == params


def test_linear_variant_parameter_count_as_the_paper():
    params = sum(p.numel() for p in tessera.create_model("pvt_v2_b2_li").parameters())
    assert abs(params - 22.6e6) / 22.6e6 < 0.05  # the paper's 22.6M
