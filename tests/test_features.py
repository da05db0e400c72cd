"""Feature pyramids: features_only models, their feature_info, norms and early stop, and the
contract other families implement."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tessera
from tessera.errors import ConfigError
from tessera.models.features import FeatureInfo, features_model

SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


def test_swin_t_pyramid_channels_strides_and_shapes():
    model = tessera.create_model("swin_t", features_only=True, out_indices=(0, 1, 2, 3)).eval()
    assert isinstance(model.feature_info, FeatureInfo)
    assert model.feature_info.channels() == [96, 192, 384, 768]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.module_name() == ["layers.0", "layers.1", "layers.2", "layers.3"]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 96, 128))
    assert [tuple(o.shape) for o in outs] == [(2, 96, 24, 32), (2, 192, 12, 16), (2, 384, 6, 8), (2, 768, 3, 4)]


def test_video_pyramid_keeps_the_temporal_size_after_the_patch():
    model = tessera.create_model("video_swin_t", features_only=True, **SMALL).eval()
    assert model.feature_info.channels() == [16, 32, 64, 128]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert all(f["temporal_reduction"] == 2 for f in model.feature_info)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 6, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 3, 16, 16), (1, 32, 3, 8, 8), (1, 64, 3, 4, 4), (1, 128, 3, 2, 2)]


@pytest.mark.parametrize("name,x", [("swin_t", torch.randn(2, 3, 64, 64)), ("video_swin_t", torch.randn(1, 3, 4, 32, 32))])
def test_outputs_are_the_stage_maps_under_fresh_norms(name, x):
    torch.manual_seed(0)
    classifier = tessera.create_model(name, **SMALL, **({"size_rule": "always_partition"} if name == "swin_t" else {})).eval()
    with torch.no_grad():
        for p in classifier.norm.parameters():  # a trained final norm, not the identity
            p.normal_()
        stages = classifier.forward_intermediates(x)
        expected_last = classifier.forward_features(x)
        pyramid = features_model(classifier).eval()
        outs = pyramid(x)
    for i, (out, stage) in enumerate(zip(outs, stages)):
        norm = getattr(pyramid, f"norm{i}")
        # every norm is fresh, the last one too (the official backbones never use the final norm)
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
        torch.testing.assert_close(out, F.layer_norm(stage.movedim(1, -1), norm.normalized_shape).movedim(-1, 1),
                                   atol=1e-5, rtol=1e-5)
    assert (outs[-1] - expected_last).abs().max() > 0.1


def test_the_last_norm_can_start_from_the_classifier_norm():
    classifier = tessera.create_model("swin_t", **SMALL, size_rule="always_partition").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for p in classifier.norm.parameters():
            p.normal_()
        expected = classifier.forward_features(x)
        pyramid = features_model(classifier, last_norm_from_classifier=True).eval()
        torch.testing.assert_close(pyramid(x)[-1], expected, atol=1e-5, rtol=1e-5)


def test_stops_after_the_last_index_and_drops_the_head():
    full = tessera.create_model("swin_t", features_only=True, **SMALL).eval()
    model = tessera.create_model("swin_t", features_only=True, out_indices=(0, 1), **SMALL)
    model.load_state_dict(full.state_dict(), strict=False)
    assert len(model.model.layers) == 2 and model.model.layers[1].downsample is None
    keys = model.state_dict().keys()
    assert not any(k.startswith(("model.head", "model.norm.", "model.layers.2")) for k in keys)
    assert {"norm0.weight", "norm1.weight"} <= set(keys) and "norm2.weight" not in keys
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        short, long = model.eval()(x), full(x)
    assert len(short) == 2
    for a, b in zip(short, long[:2]):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    model.train()
    sum(o.square().mean() for o in model(x)).backward()  # every remaining parameter is used
    assert all(p.grad is not None for p in model.parameters())


def test_negative_and_bad_out_indices():
    model = tessera.create_model("swin_t", features_only=True, out_indices=(-1,), **SMALL)
    assert model.feature_info.channels() == [128] and hasattr(model, "norm3")
    with pytest.raises(ConfigError, match=r"out_indices \(4,\): the model has 4 stages"):
        tessera.create_model("swin_t", features_only=True, out_indices=(4,), **SMALL)
    with pytest.raises(ConfigError, match="twice"):
        tessera.create_model("swin_t", features_only=True, out_indices=(1, -3), **SMALL)


def official_backbone_keys(depths, indices=(0, 1, 2, 3)):
    """The state-dict keys of the official segmentation backbone (index buffers aside)."""
    keys = ["patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"]
    block = ["norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.qkv.weight", "attn.qkv.bias",
             "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
             "mlp.fc2.weight", "mlp.fc2.bias"]
    for i, depth in enumerate(depths):
        keys += [f"layers.{i}.blocks.{j}.{k}" for j in range(depth) for k in block]
        if i < len(depths) - 1:
            keys += [f"layers.{i}.downsample.{k}" for k in ("reduction.weight", "norm.weight", "norm.bias")]
    keys += [f"norm{i}.{k}" for i in indices for k in ("weight", "bias")]
    return set(keys)


def test_the_pyramid_has_the_official_segmentation_backbone_keys():
    model = tessera.create_model("swin_t", features_only=True, **SMALL)
    assert set(model.state_dict()) == official_backbone_keys(SMALL["depths"])
    assert {n for n, _ in model.named_parameters()} == official_backbone_keys(SMALL["depths"])


def test_classification_checkpoint_loads_into_a_pyramid_that_partitions_every_stage(golden):
    config = dict(SMALL, num_classes=3)
    ckpt = golden / "official_swin2d_tiny16.pth"
    classifier = tessera.create_model("swin_t", pretrained=ckpt, **config).eval()
    pyramid = tessera.create_model("swin_t", pretrained=ckpt, features_only=True, **config).eval()
    # the backbone keeps window 7 and shift 3 in stage 4 (7x7 at 224), where the classifier clamps
    assert classifier.layers[3].shift_size == (0, 0) and pyramid.layers[3].shift_size == (3, 3)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        stages = classifier.forward_intermediates(x)
        outs = pyramid(x)
        with tessera.backends.use("reference"):  # plain PyTorch: the official roll/partition code
            reference = pyramid(x)
    for i in range(3):  # stages 1-3: the same windows as the classifier
        torch.testing.assert_close(outs[i], F.layer_norm(stages[i].movedim(1, -1), (16 * 2**i,)).movedim(-1, 1),
                                   atol=1e-5, rtol=1e-5)
    assert (outs[3] - F.layer_norm(stages[3].movedim(1, -1), (128,)).movedim(-1, 1)).abs().max() > 1e-2
    for a, b in zip(outs, reference):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_pyramid_follows_to_and_train():
    model = tessera.create_model("swin_t", features_only=True, **SMALL, ape=True, img_size=64)
    model.to(torch.float64).eval()
    assert model.model.absolute_pos_embed is model.absolute_pos_embed
    assert model.model.absolute_pos_embed.dtype == torch.float64 and not model.model.training
    assert model(torch.randn(1, 3, 64, 64, dtype=torch.float64))[0].dtype == torch.float64
    model.train()
    assert model.model.training and model.layers[0].training


# ---------------------------------------------------------------------------------------
# the contract of other families
# ---------------------------------------------------------------------------------------


class _TwoStage(nn.Module):
    """A family that gives channels-first maps and may normalise them itself."""

    feature_info = [dict(num_chs=4, reduction=2, module="a"), dict(num_chs=8, reduction=4, module="b")]

    def __init__(self, normalized: bool) -> None:
        super().__init__()
        self.intermediates_normalized = normalized
        self.a = nn.Conv2d(3, 4, 2, 2)
        self.b = nn.Conv2d(4, 8, 2, 2)
        self.head = nn.Linear(8, 5)

    def forward_intermediates(self, x):
        first = self.a(x)
        return [first, self.b(first)]

    def reset_classifier(self, num_classes):
        self.head = nn.Identity()


def test_a_family_with_normalised_intermediates_gets_no_norm():
    model = _TwoStage(normalized=True)
    pyramid = features_model(model)
    x = torch.randn(2, 3, 8, 8)
    assert not any(n.startswith("norm") for n, _ in pyramid.named_children())
    assert isinstance(model.head, nn.Identity)  # the head is dropped
    for out, expected in zip(pyramid(x), model.forward_intermediates(x)):
        assert torch.equal(out, expected)


def test_a_family_without_normalised_intermediates_gets_a_norm_over_channels():
    model = _TwoStage(normalized=False)
    pyramid = features_model(model, out_indices=(1,))
    x = torch.randn(2, 3, 8, 8)
    out = pyramid(x)[0]
    stage = model.forward_intermediates(x)[1]
    torch.testing.assert_close(out, F.layer_norm(stage.movedim(1, -1), (8,)).movedim(-1, 1), atol=1e-6, rtol=1e-6)
    assert pyramid.feature_info.channels() == [8] and pyramid.feature_info.reduction() == [4]


def test_a_model_without_a_pyramid_is_a_clear_error():
    with pytest.raises(ConfigError, match="Linear has no feature pyramid"):
        features_model(nn.Linear(2, 2))
