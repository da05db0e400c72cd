"""CvT: sizes, the convolutional projections (k/v at stride 2), the class token of the last
stage only, and the pyramid API."""

import pytest
import torch

import tessera
from tessera import backends
import tessera.models.cvt as cvt_module
from tessera.models import CvT

SMALL = dict(embed_dims=(16, 32, 48), depths=(1, 1, 2), num_heads=(1, 2, 3), num_classes=5, img_size=64)


def small(**kwargs) -> CvT:
    torch.manual_seed(0)
    model = CvT(**{**SMALL, **kwargs}).eval()
    with torch.no_grad():  # random BatchNorm statistics, so that every layer matters
        for name, buf in model.named_buffers():
            if name.endswith("running_mean") or name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name,count", [("cvt_13", 19_997_480), ("cvt_21", 31_622_696)])
def test_parameter_counts_equal_the_reference(name, count):
    # HF CvtForImageClassification (the port of the official code) has exactly these counts
    model = tessera.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_official_key_names():
    keys = set(small().state_dict())
    assert {
        "stage0.patch_embed.proj.weight", "stage0.patch_embed.norm.weight",
        "stage0.blocks.0.attn.conv_proj_q.conv.weight", "stage0.blocks.0.attn.conv_proj_k.bn.running_var",
        "stage0.blocks.0.attn.proj_v.weight", "stage0.blocks.0.attn.proj.bias", "stage0.blocks.0.mlp.fc1.weight",
        "stage2.cls_token", "norm.weight", "head.weight",
    } <= keys


def test_keys_and_values_are_downsampled_by_two(monkeypatch):
    """Every attention sees all its queries but a quarter of the key/value tokens (plus the
    class token in the last stage)."""
    seen = []
    real = cvt_module.attend

    def recording(q, k, v, *args, **kwargs):
        seen.append((q.shape[2], k.shape[2], v.shape[2]))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(cvt_module, "attend", recording)
    model = small()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    # grids 16x16, 8x8, 4x4; k/v grids 8x8, 4x4, 2x2; the last stage has a class token
    assert seen == [(256, 64, 64), (64, 16, 16), (17, 5, 5), (17, 5, 5)]
    seen.clear()
    with torch.no_grad():
        model(torch.randn(1, 3, 72, 72))  # odd grids: 18 -> k/v 9, 9 -> 5, 5 -> 3
    assert seen == [(324, 81, 81), (81, 25, 25), (26, 10, 10), (26, 10, 10)]


def test_class_token_only_in_the_last_stage():
    model = small()
    assert model.stage0.cls_token is None and model.stage1.cls_token is None
    assert model.stage2.cls_token is not None
    tokens = []
    hooks = [s.blocks[0].register_forward_pre_hook(lambda m, a: tokens.append(a[0].shape[1])) for s in model.stages]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
    for h in hooks:
        h.remove()
    assert tokens == [16 * 16, 8 * 8, 1 + 4 * 4]
    assert features.shape == (2, 1 + 16, 48)
    # the head reads the class token: changing it changes the logits
    with torch.no_grad():
        before = model(x)
        model.stage2.cls_token.add_(torch.randn_like(model.stage2.cls_token))
        after = model(x)
    assert not torch.allclose(before, after, atol=1e-4)


def test_class_token_bypasses_the_convolutions():
    """The depthwise projections see only the patch map, never the class token."""
    model = small()
    shapes = []
    hook = model.stage2.blocks[0].attn.conv_proj_k.register_forward_hook(lambda m, a, o: shapes.append(a[0].shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    hook.remove()
    assert shapes == [torch.Size([1, 48, 4, 4])]


def test_fused_attention_equals_the_reference_path():
    model = small()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with backends.use("sdpa"):
            fused = model(x)
        with backends.use("reference"):
            reference = model(x)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)


def test_forward_intermediates_and_feature_info():
    model = small()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x)
        features = model.forward_features(x)
    assert [m.shape for m in maps] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 48, 4, 4)]
    assert [f["num_chs"] for f in model.feature_info] == [16, 32, 48]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16]
    assert [f["module"] for f in model.feature_info] == ["stage0", "stage1", "stage2"]
    assert model.intermediates_normalized is False
    # the last map is the last stage's patch tokens before the final norm
    torch.testing.assert_close(model.norm(maps[-1].flatten(2).transpose(1, 2)), features[:, 1:])


def test_without_class_token_pools_the_average():
    model = small(cls_token=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
    assert features.shape == (2, 16, 48)
    torch.testing.assert_close(pooled, features.mean(dim=1))


def test_drop_path_follows_the_official_per_stage_rule():
    model = tessera.create_model("cvt_13")
    rates = [[getattr(b.drop_path, "drop_prob", 0.0) for b in s.blocks] for s in model.stages]
    assert rates[0] == [0.0] and rates[1] == [0.0, 0.0]
    assert rates[2][0] == 0.0 and rates[2][-1] == pytest.approx(0.1) and len(rates[2]) == 10


def test_bad_arguments_and_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="depths"):
        CvT(depths=(1, 2))
    with pytest.raises(ValueError, match="act_layer"):
        CvT(act_layer="relu")
    with pytest.raises(ValueError, match="smaller than one patch"):
        small()(torch.randn(1, 3, 2, 2))
