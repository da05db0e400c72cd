"""CPVT: the positional encoding generator instead of a position embedding."""

import pytest
import torch

import tessera
from tessera.models import CPVT
from tessera.models.cpvt import PEG

SMALL = dict(img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=2, num_classes=5)


@pytest.mark.parametrize("name,paper", [("cpvt_ti", 5.7e6), ("cpvt_s", 22e6)])
def test_parameter_counts_match_the_paper(name, paper):
    # Chu et al., "Conditional Positional Encodings for Vision Transformers": CPVT-Ti 5.7M,
    # CPVT-S 22M (DeiT-Ti/S without the position embedding, plus one 3x3 depthwise PEG)
    with torch.device("meta"):
        model = tessera.create_model(name)
    params = sum(p.numel() for p in model.parameters())
    assert abs(params / paper - 1) < 0.05
    deit = {"cpvt_ti": (5_717_416, 192), "cpvt_s": (22_050_664, 384)}[name]
    count, dim = deit
    assert params == count - 197 * dim + dim * 9 + dim


def test_no_absolute_position_embedding_and_one_depthwise_peg_after_the_first_block():
    model = CPVT(**SMALL).eval()
    assert model.pos_embed is None and not any("pos_embed" in n for n, _ in model.named_parameters())
    assert model.no_weight_decay() == {"cls_token", "pegs.0.proj.weight", "pegs.0.proj.bias"}
    conv = model.pegs[0].proj
    assert (conv.groups, conv.in_channels, conv.kernel_size, conv.padding, conv.padding_mode) == (
        32, 32, (3, 3), (1, 1), "zeros"
    )
    order = []
    for name, module in [("block0", model.blocks[0]), ("peg", model.pegs[0]), ("block1", model.blocks[1])]:
        module.register_forward_hook(lambda *_, name=name: order.append(name))
    model(torch.randn(1, 3, 64, 64))
    assert order == ["block0", "peg", "block1"]


def test_peg_adds_a_zero_padded_depthwise_convolution_and_keeps_the_class_token():
    peg = PEG(2)
    with torch.no_grad():
        peg.proj.weight.fill_(1.0)
        peg.proj.bias.zero_()
    x = torch.ones(1, 1 + 3 * 4, 2)
    out = peg(x, (3, 4), num_prefix_tokens=1)
    assert torch.equal(out[:, 0], x[:, 0])
    # 1 + the number of neighbours inside the grid: zero padding marks the border
    expected = torch.tensor([[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]], dtype=torch.float32) + 1
    torch.testing.assert_close(out[0, 1:, 0].view(3, 4), expected)


def _shuffle_patches(x: torch.Tensor, perm: torch.Tensor, patch: int = 16) -> torch.Tensor:
    b, c, h, w = x.shape
    gh, gw = h // patch, w // patch
    patches = x.view(b, c, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c, patch, patch)
    patches = patches[:, perm].view(b, gh, gw, c, patch, patch)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def test_the_peg_is_the_only_source_of_position():
    torch.manual_seed(0)
    model = CPVT(**SMALL).eval()
    x = torch.randn(2, 3, 64, 64)
    shuffled = _shuffle_patches(x, torch.randperm(16))
    with torch.no_grad():
        assert not torch.allclose(model(x), model(shuffled), atol=1e-4)  # the order of patches matters
        model.pegs[0].proj.weight.zero_()
        model.pegs[0].proj.bias.zero_()
        # without the generator the class token sees a set of patches: their order does not matter
        torch.testing.assert_close(model(x), model(shuffled), atol=1e-5, rtol=1e-5)


def test_runs_at_two_input_sizes_with_different_token_counts():
    model = CPVT(**SMALL).eval()
    with torch.no_grad():
        small = model.forward_features(torch.randn(2, 3, 64, 64))
        large = model.forward_features(torch.randn(2, 3, 112, 80))
        assert small.shape == (2, 1 + 16, 32) and large.shape == (2, 1 + 7 * 5, 32)
        assert model.forward_head(large).shape == (2, 5)


def test_gap_variant_and_several_pegs():
    model = CPVT(**SMALL, class_token=False, global_pool="avg", peg_positions=(0, 1)).eval()
    assert len(model.pegs) == 2 and model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 16, 32)
    with pytest.raises(ValueError, match="peg_positions"):
        CPVT(**SMALL, peg_positions=(5,))
    with pytest.raises(ValueError, match="position embedding"):
        CPVT(**SMALL, pos_embed="learn")
