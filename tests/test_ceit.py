"""CeiT: sizes, the image-to-tokens stem, LeFF's depthwise mixing of neighbouring patch
tokens, and the layer-wise class-token attention."""

import pytest
import torch

import tessera
from tessera.models import CeiT
from tessera.models.ceit import LeFF

SMALL = dict(embed_dim=16, depth=3, num_heads=2, num_classes=5, img_size=64)


def randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine weights, so that every layer matters in eval."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def small(**kwargs) -> CeiT:
    torch.manual_seed(0)
    model = randomise_bn(CeiT(**{**SMALL, **kwargs}))
    with torch.no_grad():  # weights well away from their initialisation (zero embeddings, ...)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("name,paper", [("ceit_t", 6.4e6), ("ceit_s", 24.2e6)])
def test_parameter_counts_match_the_paper(name, paper):
    count = sum(p.numel() for p in tessera.create_model(name).parameters())
    assert abs(count - paper) / paper < 0.05


def test_image_to_tokens_stem():
    """Conv stride 2 + max-pool stride 2, then 4x4 patches: 16 pixels per token, 197 tokens
    at 224, and the position embedding resized for other sizes."""
    model = tessera.create_model("ceit_t", num_classes=0)
    assert model.pos_embed.shape == (1, 1 + 14 * 14, 192)
    assert model.i2t.stem.conv.stride == (2, 2) and isinstance(model.i2t.pool, torch.nn.MaxPool2d)
    model = small()
    for size, grid in [(64, (4, 4)), (70, (5, 5)), (96, (6, 6))]:
        tokens, got = model.i2t(torch.randn(1, 3, size, size))
        assert got == grid and tokens.shape == (1, grid[0] * grid[1], 16)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 80)).shape == (2, 5)


def test_leff_mixes_neighbouring_patch_tokens_only():
    torch.manual_seed(0)
    leff = randomise_bn(LeFF(dim=8, hidden_dim=16, kernel_size=3))
    grid = (5, 5)
    x = torch.randn(2, 1 + 25, 8)
    changed = x.clone()
    changed[:, 1 + 2 * 5 + 2] += torch.randn(8)  # the patch token at (2, 2)
    with torch.no_grad():
        diff = (leff(changed, grid) - leff(x, grid)).abs().amax(dim=(0, 2))
    moved = diff[1:].view(5, 5) > 1e-6
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[1:4, 1:4] = True  # the 3x3 neighbourhood through the depthwise convolution
    assert torch.equal(moved, expected)
    assert diff[0] == 0  # the class token bypasses LeFF

    changed = x.clone()
    changed[:, 0] += 1.0
    with torch.no_grad():
        out, ref = leff(changed, grid), leff(x, grid)
    torch.testing.assert_close(out[:, 1:], ref[:, 1:])  # patch tokens do not see the class token
    torch.testing.assert_close(out[:, 0], changed[:, 0])  # and it passes through unchanged


def test_lca_attends_over_every_layers_class_token():
    model = small()
    x = torch.randn(2, 3, 64, 64)
    stacked = []

    def perturb_first_layer(module, args):
        stacked.append(args[0].shape)
        cls_tokens = args[0].clone()
        cls_tokens[:, 0] += 3 * torch.randn_like(cls_tokens[:, 0])  # only the first block's class token
        return (cls_tokens,)

    with torch.no_grad():
        reference = model(x)
        hook = model.lca.register_forward_pre_hook(perturb_first_layer)
        perturbed = model(x)
        hook.remove()
    assert stacked == [torch.Size([2, 3, 16])]  # one class token per block
    assert (reference - perturbed).abs().max() > 1e-3  # float noise is ~1e-7


def test_lca_output_is_the_classified_token():
    model = small()
    x = torch.randn(2, 3, 64, 64)
    outputs = []
    hook = model.lca.register_forward_hook(lambda m, a, o: outputs.append(o))
    with torch.no_grad():
        features = model.forward_features(x)
    hook.remove()
    assert outputs[0].shape == (2, 1, 16) and features.shape == (2, 1 + 16, 16)
    torch.testing.assert_close(features[:, 0], model.norm(outputs[0][:, 0]))
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features[:, 0])


def test_wrong_input_is_a_clear_error():
    with pytest.raises(ValueError, match="4 dimensions"):
        small()(torch.randn(3, 64, 64))
