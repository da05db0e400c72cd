"""ViT and DeiT: timm's counts and outputs, pooling, position-embedding resizing, the
distillation token and heads."""

import pytest
import torch
import torch.nn.functional as F

import tessera
from tessera.errors import CheckpointError
from tessera.models import DistilledVisionTransformer, VisionTransformer

SMALL = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def count(name: str) -> int:
    with torch.device("meta"):  # no memory, no initialisation: only the shapes
        model = tessera.create_model(name)
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------
# timm: parameter counts and recorded outputs
# ---------------------------------------------------------------------------------------

#: timm 1.0.31 vit_{tiny,small,base,large}_patch16_224 and deit_*_patch16_224 (1000 classes)
TIMM_PARAMS = {
    "vit_t_16": 5_717_416, "vit_s_16": 22_050_664, "vit_b_16": 86_567_656, "vit_l_16": 304_326_632,
    "deit_t": 5_717_416, "deit_s": 22_050_664, "deit_b": 86_567_656,
    "deit_t_distilled": 5_910_800, "deit_s_distilled": 22_436_432, "deit_b_distilled": 87_338_192,
}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_parameter_counts_equal_timm(name):
    assert count(name) == TIMM_PARAMS[name]


@pytest.mark.parametrize("case,cls", [("vit", VisionTransformer), ("deit_distilled", DistilledVisionTransformer)])
def test_timm_checkpoint_reproduces_timm_logits(golden, case, cls):
    recorded = torch.load(golden / "timm_vit_cases.pt", weights_only=True)[case]
    model = cls(**recorded["timm_kwargs"]).eval()
    report = tessera.load_checkpoint(model, golden / f"timm_{case}.pth")
    assert not report.missing and not report.unexpected and not report.reinitialized
    with torch.no_grad():
        logits = model(recorded["x"])
    torch.testing.assert_close(logits, recorded["logits"], atol=1e-4, rtol=1e-4)


def test_checkpoint_with_other_classes_reinitialises_both_distilled_heads(golden):
    kwargs = {**torch.load(golden / "timm_vit_cases.pt", weights_only=True)["deit_distilled"]["timm_kwargs"]}
    model = DistilledVisionTransformer(**{**kwargs, "num_classes": 7})
    report = tessera.load_checkpoint(model, golden / "timm_deit_distilled.pth")
    assert sorted(report.reinitialized) == ["head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]
    assert model.head.weight.shape == model.head_dist.weight.shape == (7, kwargs["embed_dim"])


# ---------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------


def test_token_and_avg_pooling_read_different_tokens():
    torch.manual_seed(0)
    token = VisionTransformer(**SMALL, global_pool="token").eval()
    avg = VisionTransformer(**SMALL, global_pool="avg").eval()
    # the same weights; 'avg' normalises after pooling (fc_norm) as timm does
    sd = {k.replace("norm.", "fc_norm.") if k.startswith("norm.") else k: v for k, v in token.state_dict().items()}
    avg.load_state_dict(sd)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = avg.forward_features(x)  # not normalised: the norm comes after pooling
        torch.testing.assert_close(avg.forward_head(tokens, pre_logits=True), avg.fc_norm(tokens[:, 1:].mean(1)))
        torch.testing.assert_close(token.forward_head(token.forward_features(x), pre_logits=True), token.norm(tokens)[:, 0])
        assert not torch.allclose(avg(x), token(x), atol=1e-3)


def test_avg_pooling_without_class_token():
    model = VisionTransformer(**SMALL, global_pool="avg", class_token=False).eval()
    x = torch.randn(2, 3, 64, 64)
    assert model.forward_features(x).shape == (2, 16, 32)
    assert model(x).shape == (2, 5)
    with pytest.raises(ValueError, match="class_token"):
        VisionTransformer(**SMALL, global_pool="token", class_token=False)


# ---------------------------------------------------------------------------------------
# position embeddings at another size: at run time and at load time
# ---------------------------------------------------------------------------------------


def _timm_resample(pos_embed: torch.Tensor, old: int, new: int, prefix: int) -> torch.Tensor:
    """timm's resample_abs_pos_embed, written out: antialiased bicubic on the grid tokens."""
    grid = pos_embed[:, prefix:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([pos_embed[:, :prefix], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)


@pytest.mark.parametrize("cls", [VisionTransformer, DistilledVisionTransformer])
def test_position_embedding_is_resized_at_run_time(cls):
    torch.manual_seed(0)
    small = cls(**SMALL).eval()  # trained at 64: a 4x4 grid
    large = cls(**{**SMALL, "img_size": 96}).eval()  # 6x6
    sd = small.state_dict()
    sd["pos_embed"] = _timm_resample(sd["pos_embed"], 4, 6, small.num_prefix_tokens)
    large.load_state_dict(sd)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        features = small.forward_features(x)
        assert features.shape == (2, small.num_prefix_tokens + 36, 32)
        torch.testing.assert_close(features, large.forward_features(x), atol=1e-5, rtol=1e-5)


def test_position_embedding_is_resized_at_load_time(tmp_path):
    torch.manual_seed(0)
    small = VisionTransformer(**SMALL).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = small(x)  # resized at run time
    for load in ("load_checkpoint", "load_state_dict"):
        large = VisionTransformer(**{**SMALL, "img_size": 96}).eval()
        if load == "load_checkpoint":
            report = tessera.load_checkpoint(large, small.state_dict())
            assert any("pos_embed resized from a 4x4 to a 6x6 grid" in n for n in report.notes)
            assert not report.missing and not report.unexpected
        else:
            large.load_state_dict(small.state_dict())
        assert large.pos_embed.shape == (1, 37, 32)
        with torch.no_grad():
            torch.testing.assert_close(large(x), expected, atol=1e-5, rtol=1e-5)


def test_position_embedding_of_a_non_square_token_count_is_a_clear_error():
    model = VisionTransformer(**SMALL)
    sd = model.state_dict()
    sd["pos_embed"] = torch.zeros(1, 1 + 15, 32)
    with pytest.raises(CheckpointError, match="pos_embed"):
        tessera.load_checkpoint(model, sd)


def test_input_size_not_a_multiple_of_the_patch_is_padded():
    model = VisionTransformer(**SMALL).eval()
    assert model.forward_features(torch.randn(1, 3, 70, 50)).shape == (1, 1 + 5 * 4, 32)


def test_bad_inputs_are_clear_errors():
    model = VisionTransformer(**SMALL)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*got shape \(3, 64, 64\)"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="smaller than one patch"):
        model(torch.randn(1, 3, 8, 64))


def test_no_weight_decay_names_the_tokens_and_the_embedding():
    assert VisionTransformer(**SMALL).no_weight_decay() == {"pos_embed", "cls_token"}
    assert DistilledVisionTransformer(**SMALL).no_weight_decay() == {"pos_embed", "cls_token", "dist_token"}


# ---------------------------------------------------------------------------------------
# DeiT distillation token and heads
# ---------------------------------------------------------------------------------------


def test_distillation_token_has_its_own_head_and_eval_averages_the_heads():
    torch.manual_seed(0)
    model = DistilledVisionTransformer(**SMALL).eval()
    assert model.pos_embed.shape == (1, 2 + 16, 32) and model.dist_token.shape == (1, 1, 32)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        cls_logits, dist_logits = model.head(features[:, 0]), model.head_dist(features[:, 1])
        torch.testing.assert_close(model(x), (cls_logits + dist_logits) / 2)
        assert not torch.allclose(cls_logits, dist_logits, atol=1e-3)
        # the distillation token is a real second token: changing it changes the output
        model.dist_token.add_(torch.randn_like(model.dist_token))
        assert not torch.allclose(model(x), (cls_logits + dist_logits) / 2, atol=1e-4)


def test_distilled_training_returns_both_heads_only_when_asked():
    model = DistilledVisionTransformer(**{**SMALL, "num_classes": 5}).train()
    x = torch.randn(2, 3, 64, 64)
    assert isinstance(model(x), torch.Tensor)  # the average, by default
    model.set_distilled_training(True)
    cls_logits, dist_logits = model(x)
    assert cls_logits.shape == dist_logits.shape == (2, 5)
    model.eval()
    assert isinstance(model(x), torch.Tensor)  # eval always averages


def test_reset_classifier_replaces_both_heads():
    model = DistilledVisionTransformer(**SMALL)
    model.reset_classifier(3)
    assert model.head.out_features == model.head_dist.out_features == 3
    assert model.get_classifier() == (model.head, model.head_dist)
