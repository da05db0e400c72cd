"""DeepViT: the authors' configurations, and re-attention."""

import pytest
import torch

import tessera
from tessera.layers import Attention, Block
from tessera.models import DeepViT
from tessera.models.deepvit import DeepViTBlock, ReAttention

SMALL = dict(img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=4, num_classes=5)


def count(name: str) -> int:
    with torch.device("meta"):
        model = tessera.create_model(name)
    return sum(p.numel() for p in model.parameters())


def config_count(dim: int, depth: int, reattention: int, heads: int = 12, mlp: int = 3, classes: int = 1000,
                 conv_stem: bool = False) -> int:
    """Parameters of a DeepViT configuration, from its layer sizes: blocks (qkv, proj, fc1,
    fc2, 2 norms), the re-attention 1x1 conv and BatchNorm over the heads, the patch
    embedding (a 16x16 projection, or the authors' stem: 7x7 and 3x3 convs to 64 channels
    with BatchNorm, then 8x8 patches), class token, 14x14 + 1 position embeddings, final norm
    and head."""
    block = (3 * dim * dim + 3 * dim) + (dim * dim + dim) + (2 * mlp * dim * dim + mlp * dim + dim) + 4 * dim
    reattend = heads * heads + heads + 2 * heads
    if conv_stem:
        stem = 3 * 64 * 7 * 7 + 2 * 64 + 64 * 64 * 3 * 3 + 2 * 64 + 64 * dim * 8 * 8 + dim
    else:
        stem = 3 * dim * 16 * 16 + dim
    return depth * block + reattention * reattend + stem + dim + 197 * dim + 2 * dim + dim * classes + classes


def test_parameter_counts_follow_the_paper():
    # DeepViT-S: 16 blocks of C396 (re-attention in the last 5); DeepViT-L: 32 blocks of C420
    # (the last 12); 12 heads, MLP ratio 3. The paper reports 27M and 55M.
    assert count("deepvit_s") == config_count(396, 16, 5)
    assert count("deepvit_l") == config_count(420, 32, 12)
    assert abs(count("deepvit_s") / 27e6 - 1) < 0.05
    assert abs(count("deepvit_l") / 55e6 - 1) < 0.05


def test_the_authors_convolutional_stem():
    with torch.device("meta"):
        model = tessera.create_model("deepvit_l", conv_stem=True)
    assert sum(p.numel() for p in model.parameters()) == config_count(420, 32, 12, conv_stem=True) == 58_883_708
    assert {n for n, _ in model.patch_embed.named_children()} >= {"conv1", "bn1", "conv2", "bn2", "proj"}


def test_reattention_in_the_last_blocks():
    with torch.device("meta"):
        s, l = tessera.create_model("deepvit_s"), tessera.create_model("deepvit_l")
    assert [isinstance(b.attn, ReAttention) for b in s.blocks] == [False] * 11 + [True] * 5
    assert [isinstance(b.attn, ReAttention) for b in l.blocks] == [False] * 20 + [True] * 12
    assert s.blocks[-1].attn.reatten_scale == (396 // 12) ** -0.5 and l.blocks[-1].attn.reatten_scale == 1.0
    model = tessera.create_model("deepvit_s", img_size=64).eval()
    assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 1 + 4 * 4, 396)


def _attention_pair(transform: bool = True):
    torch.manual_seed(0)
    re = ReAttention(32, 4, transform_scale=False).eval()
    plain = Attention(32, 4).eval()
    plain.load_state_dict({k: v for k, v in re.state_dict().items() if k.startswith(("qkv", "proj"))})
    return re, plain


def test_reattention_mixes_the_maps_across_heads_then_normalises_them():
    re, plain = _attention_pair()
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        q, k, _ = re.qkv(x).view(2, 9, 3, 4, 8).permute(2, 0, 3, 1, 4)
        softmax = (q @ k.transpose(-2, -1) * re.scale).softmax(-1)
        theta = re.reatten_matrix.weight[:, :, 0, 0]
        mixed = torch.einsum("gh,bhnm->bgnm", theta, softmax) + re.reatten_matrix.bias.view(1, 4, 1, 1)
        bn = re.var_norm
        expected = (mixed - bn.running_mean.view(1, 4, 1, 1)) / (bn.running_var.view(1, 4, 1, 1) + bn.eps).sqrt()
        expected = expected * bn.weight.view(1, 4, 1, 1) + bn.bias.view(1, 4, 1, 1)
        maps = re.attention_maps(x)
        torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(maps, softmax, atol=1e-3)  # the maps are re-generated
        assert not torch.allclose(re(x), plain(x), atol=1e-4)
        # with Θ the identity (and fresh statistics) re-attention is plain attention
        re.reatten_matrix.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        re.reatten_matrix.bias.zero_()
        torch.testing.assert_close(re(x), plain(x), atol=1e-4, rtol=1e-4)


def test_batchnorm_normalises_each_head_over_the_batch():
    re, _ = _attention_pair()
    re.train()
    re.var_norm.eps = 1e-12  # the maps vary little: keep eps from shrinking the normalised variance
    with torch.no_grad():
        maps = re.attention_maps(torch.randn(4, 9, 32))  # (B, h, N, N), BatchNorm in training
    per_head = maps.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(per_head.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_head.var(1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_the_model_depends_on_the_reattention_transform():
    torch.manual_seed(0)
    model = DeepViT(**SMALL, reattention_blocks=2).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        model.blocks[-1].attn.reatten_matrix.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        assert not torch.allclose(model(x), out, atol=1e-4)


def test_scale_adjustment_of_the_residual_branches():
    torch.manual_seed(0)
    plain = Block(32, 4).eval()
    adjusted = DeepViTBlock(32, 4, scale_adjustment=0.5).eval()
    adjusted.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        y = x + 2 * adjusted.attn(adjusted.norm1(0.5 * x))
        torch.testing.assert_close(adjusted(x), y + 2 * adjusted.mlp(adjusted.norm2(0.5 * y)))
        unit = DeepViTBlock(32, 4).eval()
        unit.load_state_dict(plain.state_dict())
        torch.testing.assert_close(unit(x), plain(x))


@pytest.mark.parametrize("size", [(64, 64), (96, 80)])
def test_runs_at_other_sizes(size):
    model = DeepViT(**SMALL, conv_stem=True).eval()
    h, w = size
    assert model.forward_features(torch.randn(1, 3, h, w)).shape == (1, 1 + (h // 16) * (w // 16), 32)
