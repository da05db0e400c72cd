"""PVT v1: spatial-reduction attention, per-stage position embeddings (resized at run time
and at load), the class token, the pyramid API and the parameter counts."""

import pytest
import torch
import torch.nn.functional as F
from pyramid_checks import check_intermediates, kv_token_counts

import tessera
from tessera.layers.sra import SpatialReductionAttention
from tessera.models import PyramidVisionTransformer

SMALL = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1), num_classes=5)


def test_keys_and_values_come_from_the_reduced_map():
    model = PyramidVisionTransformer(img_size=64, **SMALL).eval()
    # maps 24x16, 12x8, 6x4, 3x2 (+ class token); reductions 8, 4, 2, 1
    counts = kv_token_counts(model, torch.randn(1, 3, 96, 64))
    assert counts == [(24 * 16, 3 * 2), (12 * 8, 3 * 2), (6 * 4, 3 * 2), (1 + 3 * 2, 1 + 3 * 2)]
    for i, sr in enumerate((8, 4, 2)):
        attn = getattr(model, f"block{i + 1}")[0].attn
        assert attn.sr.kernel_size == attn.sr.stride == (sr, sr) and isinstance(attn.norm, torch.nn.LayerNorm)


def test_reduction_is_a_strided_convolution_then_layernorm():
    torch.manual_seed(0)
    attn = SpatialReductionAttention(8, 2, sr_ratio=4).eval()
    x = torch.randn(2, 8 * 12, 8)
    reduced = attn.reduce(x, (8, 12))
    direct = F.conv2d(x.transpose(1, 2).reshape(2, 8, 8, 12), attn.sr.weight, attn.sr.bias, stride=4)
    direct = F.layer_norm(direct.flatten(2).transpose(1, 2), (8,), attn.norm.weight, attn.norm.bias)
    torch.testing.assert_close(reduced, direct)
    assert reduced.shape == (2, (8 // 4) * (12 // 4), 8)


def test_position_embeddings_are_resized_bicubically_at_run_time_and_at_load():
    torch.manual_seed(0)
    small = PyramidVisionTransformer(img_size=64, **SMALL).eval()
    large = PyramidVisionTransformer(img_size=96, **SMALL).eval()
    report = tessera.load_checkpoint(large, small.state_dict())
    assert not report.missing and any("pos_embed1" in n for n in report.notes)
    # the loaded embeddings are the bicubic resize of the small model's; the class token's is kept
    c = SMALL["embed_dims"][0]
    grid = small.pos_embed1.reshape(1, 16, 16, c).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(24, 24), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(large.pos_embed1, expected)
    torch.testing.assert_close(large.pos_embed4[:, 0], small.pos_embed4[:, 0])
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(small(x), large(x), atol=1e-5, rtol=1e-5)  # resized at run time = at load
        before = small(x)
        small.pos_embed2.add_(1.0)  # the embeddings take part at the other size
        assert not torch.allclose(small(x), before)


def test_class_token_joins_only_the_last_stage_and_feeds_the_head():
    model = PyramidVisionTransformer(img_size=64, **SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 1 + 2 * 2, 64)
        torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), tokens[:, 0])
        model.cls_token.add_(1.0)
        changed = model.forward_features(x)
    assert not torch.allclose(changed[:, 0], tokens[:, 0])
    assert [p.shape[1] for p in (model.pos_embed1, model.pos_embed2, model.pos_embed3, model.pos_embed4)] == [256, 64, 16, 5]


def test_intermediates_follow_feature_info_and_are_the_stage_maps():
    model = PyramidVisionTransformer(img_size=64, **SMALL)
    maps, features = check_intermediates(model)
    assert model.intermediates_normalized is False
    # the last map holds the final patch tokens before the final norm (the class token aside)
    with torch.no_grad():
        torch.testing.assert_close(model.norm(maps[-1].flatten(2).transpose(1, 2)), features[:, 1:])


def test_bad_configs_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="class token"):
        PyramidVisionTransformer(**{**SMALL, "sr_ratios": (8, 4, 2, 2)})
    model = PyramidVisionTransformer(img_size=64, **SMALL)
    with pytest.raises(ValueError, match="at least 29"):
        model(torch.randn(1, 3, 64, 28))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize("name,params", [("pvt_tiny", 13_229_288), ("pvt_small", 24_485_864)])
def test_parameter_counts(name, params):
    # as the reference implementations (HF PvtForImageClassification, the official code)
    assert sum(p.numel() for p in tessera.create_model(name).parameters()) == params
