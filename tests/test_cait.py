"""CaiT: timm's counts and outputs, class attention, LayerScale, talking heads."""

import pytest
import torch

import tessera
from tessera.layers import Attention, ClassAttention
from tessera.models import CaiT
from tessera.models.cait import TalkingHeadAttention

SMALL = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=4, num_classes=5, init_values=0.1)

#: timm 1.0.31 cait_xxs24_224 and cait_s24_224 (1000 classes)
TIMM_PARAMS = {"cait_xxs24": 11_956_264, "cait_s24": 46_916_200}


@pytest.mark.parametrize("name", sorted(TIMM_PARAMS))
def test_parameter_counts_equal_timm(name):
    with torch.device("meta"):
        model = tessera.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == TIMM_PARAMS[name]


def test_timm_checkpoint_reproduces_timm_logits(golden):
    recorded = torch.load(golden / "timm_vit_cases.pt", weights_only=True)["cait"]
    model = CaiT(**recorded["timm_kwargs"]).eval()
    report = tessera.load_checkpoint(model, golden / "timm_cait.pth")
    assert not report.missing and not report.unexpected
    with torch.no_grad():
        logits = model(recorded["x"])
    torch.testing.assert_close(logits, recorded["logits"], atol=1e-4, rtol=1e-4)


def _patch_tokens_after_self_attention(model: CaiT, x: torch.Tensor) -> torch.Tensor:
    tokens, grid = model._embed(x)
    return model._forward_blocks(tokens, grid)


def test_class_token_joins_only_in_class_attention_and_patch_tokens_are_not_updated():
    torch.manual_seed(0)
    model = CaiT(**SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        patches = _patch_tokens_after_self_attention(model, x)
        assert patches.shape == (2, 16, 32)  # no class token in the self-attention stage
        features = model.forward_features(x)
        # the patch tokens leave the class-attention layers as they came in
        torch.testing.assert_close(features[:, 1:], model.norm(patches))
        # the class token changes the class token only
        model.cls_token.add_(torch.randn_like(model.cls_token))
        changed = model.forward_features(x)
    torch.testing.assert_close(changed[:, 1:], features[:, 1:])
    assert not torch.allclose(changed[:, 0], features[:, 0], atol=1e-4)


def test_class_attention_queries_with_the_class_token_only():
    torch.manual_seed(0)
    attn = ClassAttention(32, 4).eval()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        out = attn(x)
        q = attn.q(x[:, :1]).view(2, 1, 4, 8).transpose(1, 2)
        k = attn.k(x).view(2, 9, 4, 8).transpose(1, 2)
        v = attn.v(x).view(2, 9, 4, 8).transpose(1, 2)
        weights = (q @ k.transpose(-2, -1) * 8**-0.5).softmax(-1)
        expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 1, 32))
    assert out.shape == (2, 1, 32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_layer_scale_multiplies_every_residual_branch():
    torch.manual_seed(0)
    model = CaiT(**SMALL).eval()
    blocks = list(model.blocks) + list(model.blocks_token_only)
    for blk in blocks:
        assert torch.equal(blk.gamma_1, torch.full((32,), 0.1)) and torch.equal(blk.gamma_2, torch.full((32,), 0.1))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = _patch_tokens_after_self_attention(model, x)
        for blk in blocks:
            blk.gamma_1.zero_()
            blk.gamma_2.zero_()
        # with zero scales every block is the identity: the tokens are the embedded patches
        embedded, _ = model._embed(x)
        torch.testing.assert_close(_patch_tokens_after_self_attention(model, x), embedded)
        cls = model.cls_token.expand(2, -1, -1)
        torch.testing.assert_close(model.forward_features(x), model.norm(torch.cat([cls, embedded], 1)))
    assert not torch.allclose(before, embedded, atol=1e-3)


def test_talking_heads_mix_the_heads_before_and_after_the_softmax():
    torch.manual_seed(0)
    talking = TalkingHeadAttention(32, 4).eval()
    plain = Attention(32, 4).eval()
    plain.load_state_dict({k: v for k, v in talking.state_dict().items() if not k.startswith(("proj_l", "proj_w"))})
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        assert not torch.allclose(talking(x), plain(x), atol=1e-4)  # random mixes
        for mix in (talking.proj_l, talking.proj_w):
            mix.weight.copy_(torch.eye(4))
            mix.bias.zero_()
        torch.testing.assert_close(talking(x), plain(x), atol=1e-5, rtol=1e-5)  # identity mixes: plain attention
        # swapping heads 0 and 1 after the softmax: head 0 applies head 1's weights to its own values
        swap = torch.eye(4)[[1, 0, 2, 3]]
        talking.proj_w.weight.copy_(swap)
        q, k, v = talking.qkv(x).view(2, 9, 3, 4, 8).permute(2, 0, 3, 1, 4)
        weights = (q * talking.scale @ k.transpose(-2, -1)).softmax(-1)[:, [1, 0, 2, 3]]
        expected = talking.proj((weights @ v).transpose(1, 2).reshape(2, 9, 32))
        torch.testing.assert_close(talking(x), expected, atol=1e-5, rtol=1e-5)


def test_run_at_another_size_and_constant_drop_path():
    model = CaiT(**{**SMALL, "drop_path_rate": 0.2}).eval()
    assert [blk.drop_path.drop_prob for blk in model.blocks] == [0.2, 0.2]
    assert model.forward_features(torch.randn(1, 3, 96, 80)).shape == (1, 1 + 6 * 5, 32)


def test_multiply_accumulates_follow_the_layer_sizes():
    # also a batch of one, where the class token must not reach the blocks as a view of the
    # parameter (torch's module hooks reject such views under no_grad)
    model = CaiT(**SMALL, depth_token_only=2)
    n, c, h = 16, 32, 4  # patch tokens, channels, heads
    patch_embed = n * c * 3 * 16 * 16
    self_attention = n * c * 3 * c + 2 * n * n * c + 2 * n * n * h * h + n * c * c + 2 * n * c * 4 * c
    class_attention = c * c + 2 * (n + 1) * c * c + 2 * (n + 1) * c + c * c + 2 * c * 4 * c
    expected = patch_embed + 2 * self_attention + 2 * class_attention + c * 5
    assert tessera.model_stats(model, (1, 3, 64, 64))["macs"] == expected
