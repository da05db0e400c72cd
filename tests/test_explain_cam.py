"""Grad-CAM, attention rollout and window attention: what they compute, on every image family
and on video, and that they leave the model as it was (mode, switches, weights, gradients,
hooks) and do not depend on the batch they are computed in."""

import pytest
import torch
from torch import nn

import tessera
from tessera.explain import capture_attention, default_layer, grad_cam, reference_path
from tessera.explain.attention import block_window_order, window_attention
from tessera.explain.cam import METHODS
from tessera.explain.rollout import attention_rollout
from tessera.explain.targets import ExplainError, swin_block_layers, swin_stage_layers, token_grid

SWIN = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=4, img_size=32, num_classes=4)
VIDEO = dict(embed_dim=16, depths=(2, 2), num_heads=(2, 2), window_size=(2, 4, 4), num_classes=4)
VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=4)

# every image family, small: (name, arguments, input side)
FAMILIES = [
    ("swin_t", SWIN, 32),
    ("swinv2_t", SWIN, 32),
    ("vit_t_16", VIT, 32),
    ("deit_t_distilled", VIT, 32),
    ("deepvit_s", {**VIT, "embed_dim": 32, "depth": 3}, 32),
    ("cait_xxs24", {**VIT, "depth": 2}, 32),
    ("cpvt_ti", VIT, 32),
    ("ceit_t", dict(img_size=32, embed_dim=32, depth=2, num_heads=2, num_classes=4), 32),
    ("cvt_13", dict(img_size=32, embed_dims=(16, 32, 48), num_heads=(1, 2, 3), depths=(1, 1, 1), num_classes=4), 32),
    ("levit_128s", dict(img_size=64, embed_dim=(32, 48, 64), key_dim=16, depth=(1, 1, 1), num_heads=(2, 3, 4),
                        num_classes=4), 64),
    ("pvt_tiny", dict(img_size=64, embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1),
                      num_classes=4), 64),
    ("pvt_v2_b0", dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1), num_classes=4), 64),
    ("shuffle_t", dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_classes=4),
     64),
]


def build(name, args):
    torch.manual_seed(0)
    return tessera.create_model(name, **args).eval()


def hook_count(model: nn.Module) -> int:
    hooks = 0
    for m in model.modules():
        hooks += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        hooks += len(getattr(m, "_backward_pre_hooks", {})) + len(m._state_dict_hooks)
    modules = torch.nn.modules.module
    return hooks + len(modules._global_forward_hooks) + len(modules._global_forward_pre_hooks) + len(
        modules._global_backward_hooks)


def snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [m.__dict__.get("grad_checkpointing") for m in model.modules()],
        tessera.backends.current(),
    )


@pytest.mark.parametrize("name, args, side", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_cam_of_every_family_at_its_default_layer(name, args, side):
    model = build(name, args)
    x = torch.randn(2, 3, side, side)
    for method in METHODS:
        out = grad_cam(model, x, method=method)
        assert out.layer == default_layer(model, (side, side))
        assert out.maps.shape == (2, side, side) and (out.maps >= 0).all() and torch.isfinite(out.maps).all()
        assert out.raw.dim() == 3 and out.raw.shape[1] < side
        assert torch.equal(out.target, model(x).argmax(1))
        assert out.peaks().shape == (2, 2)


def test_swin_v2_default_layer_is_the_last_blocks_output():
    """Swin V2's norm2 normalises the MLP branch only: its stream is the block's output."""
    model = build("swinv2_t", SWIN)
    assert default_layer(model, (32, 32)) == "layers.0.blocks.1"
    assert default_layer(build("swin_t", SWIN), (32, 32)) == "layers.0.blocks.1.norm2"


def test_swin_cam_layers_of_every_block_and_stage():
    """The pointing game's candidates: every block's layer, finest first, a stage's last one
    being that stage's layer; they name modules of the model (V1: norm2; V2: the block)."""
    v1 = build("swin_t", {**SWIN, "depths": (2, 1)})
    assert swin_block_layers(v1) == ["layers.0.blocks.0.norm2", "layers.0.blocks.1.norm2", "layers.1.blocks.0.norm2"]
    assert swin_stage_layers(v1) == ["layers.0.blocks.1.norm2", "layers.1.blocks.0.norm2"]
    v2 = build("swinv2_t", SWIN)
    assert swin_block_layers(v2) == ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0", "layers.1.blocks.1"]
    video = build("video_swin_t", VIDEO)
    names = dict(video.named_modules())
    assert all(name in names for name in swin_block_layers(video)) and len(swin_block_layers(video)) == 4


def test_cam_is_the_definition_at_a_named_layer():
    """Grad-CAM computed independently: the layer's output kept by a hook, the score
    back-propagated, channels weighted by their mean gradient."""
    model = build("swin_t", SWIN)
    x = torch.randn(3, 3, 32, 32)
    out = grad_cam(model, x, target=[0, 1, 2], layer="layers.-1.blocks.-1.norm2")
    assert out.layer == "layers.1.blocks.1.norm2"
    kept = []
    handle = model.layers[1].blocks[1].norm2.register_forward_hook(lambda m, a, o: kept.append(o))
    with tessera.backends.use("reference"):  # the blocks' own forward: the hook sees norm2
        logits = model(x)
    handle.remove()
    act = kept[0]  # (B, 4, 4, C)
    (grad,) = torch.autograd.grad(logits[torch.arange(3), torch.tensor([0, 1, 2])].sum(), act)
    cam = torch.relu((grad.mean((1, 2), keepdim=True) * act).sum(-1))
    torch.testing.assert_close(out.raw, cam.detach(), rtol=1e-4, atol=1e-7)
    # each cell covers 8x8 pixels, interpolated between cell centres: up to the first centre
    # (pixel 3.5) the map is the corner cell's value
    corner = cam[:, 0, 0].detach()[:, None, None].expand(-1, 4, 4)
    torch.testing.assert_close(out.maps[:, :4, :4], corner, rtol=1e-4, atol=1e-7)
    # LayerCAM: every position weighted by its own positive gradient, not the channel's mean
    layer_cam = grad_cam(model, x, target=[0, 1, 2], layer="layers.1.blocks.1.norm2", method="layercam")
    torch.testing.assert_close(layer_cam.raw, torch.relu((torch.relu(grad) * act).sum(-1)).detach(),
                               rtol=1e-4, atol=1e-7)
    assert not torch.allclose(layer_cam.raw, out.raw)


@pytest.mark.parametrize("name, args, shape", [("swin_t", SWIN, (3, 32, 32)), ("video_swin_t", VIDEO, (3, 8, 32, 32)),
                                               ("deit_t_distilled", VIT, (3, 32, 32))])
def test_cam_does_not_depend_on_the_batch(name, args, shape):
    model = build(name, args)
    x = torch.randn(4, *shape)
    together = grad_cam(model, x, target=1)
    for i in range(4):
        alone = grad_cam(model, x[i : i + 1], target=1)
        torch.testing.assert_close(alone.maps[0], together.maps[i], rtol=1e-4, atol=1e-6)
    reordered = grad_cam(model, x.flip(0), target=1)
    torch.testing.assert_close(reordered.maps.flip(0), together.maps, rtol=1e-4, atol=1e-6)


def test_explanations_leave_the_model_as_it_was():
    model = build("swin_t", SWIN)
    model.layers[0].blocks[0].train()  # a mixed mode, restored module by module
    model.set_grad_checkpointing(True)  # would run the layer's hook again in the backward pass
    for p in model.parameters():
        p.grad = None
    weights, modes, switches, backend = snapshot(model)
    hooks = hook_count(model)
    x = torch.randn(2, 3, 32, 32)
    grad_cam(model, x)
    grad_cam(model, x, method="gradcam++", layer="layers.0.blocks.1.norm1")
    window_attention(model, x, stage=0, block=1)
    after = snapshot(model)
    assert all(torch.equal(weights[k], after[0][k]) for k in weights)
    assert after[1] == modes and after[2] == switches and after[3] == backend
    assert all(p.grad is None for p in model.parameters())
    assert hook_count(model) == hooks
    vit = build("cait_xxs24", {**VIT, "depth": 2})
    hooks = hook_count(vit)
    attention_rollout(vit, x)
    assert hook_count(vit) == hooks and tessera.backends.current() == backend


def test_cam_in_eval_mode_whatever_the_callers_mode_and_grad_mode():
    model = build("ceit_t", dict(img_size=32, embed_dim=32, depth=2, num_heads=2, num_classes=4))  # BatchNorm inside
    x = torch.randn(2, 3, 32, 32)
    reference = grad_cam(model, x)
    model.train()
    in_train_mode = grad_cam(model, x)
    assert model.training and all(m.training for m in model.modules())
    torch.testing.assert_close(in_train_mode.maps, reference.maps)
    with torch.inference_mode():
        torch.testing.assert_close(grad_cam(model.eval(), x).maps, reference.maps)
    with torch.no_grad():
        torch.testing.assert_close(grad_cam(model, x).maps, reference.maps)


def test_named_layer_errors():
    model = build("swin_t", SWIN)
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ExplainError, match="no layer 'layers.1.blocks.7.norm2'.*has no child '7'"):
        grad_cam(model, x, layer="layers.1.blocks.7.norm2")
    with pytest.raises(ExplainError, match="outside the model's 4 classes"):
        grad_cam(model, x, target=9)
    with pytest.raises(ExplainError, match="unknown CAM method"):
        grad_cam(model, x, method="cam")


def test_default_swin_layer_is_the_last_stage_with_a_map_of_seven():
    assert default_layer(tessera.create_model("swin_t")) == "layers.3.blocks.1.norm2"  # 7x7 at 224
    small = tessera.create_model("swin_t", embed_dim=8, depths=(2, 2, 2), num_heads=(1, 1, 1), window_size=4,
                                 img_size=64)
    assert default_layer(small, (64, 64)) == "layers.1.blocks.1.norm2"  # 16, 8, 4 tokens a side
    assert default_layer(small, (32, 32)) == "layers.0.blocks.1.norm2"
    assert default_layer(tessera.create_model("vit_t_16")) == "blocks.11.norm1"


def test_token_grids_with_prefix_tokens():
    assert token_grid(197, (224, 224), (16, 16)) == (1, (14, 14))
    assert token_grid(198, (224, 224), (16, 16)) == (2, (14, 14))
    assert token_grid(1 + 14 * 20, (224, 320), (16, 16)) == (1, (14, 20))
    assert token_grid(1 + 57 * 57, (230, 230), (4, 4)) == (1, (57, 57))  # a convolution's floor
    assert token_grid(196, (224, 224), None) == (0, (14, 14))


def test_captured_attention_is_the_softmax_of_the_blocks():
    model = build("vit_t_16", VIT)
    x = torch.randn(2, 3, 32, 32)
    kept = []
    handle = model.blocks[0].norm1.register_forward_hook(lambda m, a, o: kept.append(o))
    with reference_path(model), capture_attention(model) as captured:
        model(x)
    handle.remove()
    assert [r.name for r in captured.records] == ["blocks.0.attn", "blocks.1.attn"]
    attn = model.blocks[0].attn
    q, k, _ = attn.qkv(kept[0]).view(2, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
    expected = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)
    torch.testing.assert_close(captured.records[0].probs, expected.detach())


def test_rollout_of_uniform_attention_is_uniform():
    """With queries and keys zeroed every attention is uniform: the rollout spreads the class
    token evenly over the patches, in every class-token family."""
    for name, args in [("vit_t_16", VIT), ("deit_t_distilled", VIT), ("cait_xxs24", {**VIT, "depth": 2}),
                       ("cpvt_ti", VIT), ("ceit_t", dict(img_size=32, embed_dim=32, depth=2, num_heads=2,
                                                         num_classes=4))]:
        model = build(name, args)
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "qkv") and isinstance(m.qkv, nn.Linear):
                    m.qkv.weight[: 2 * m.qkv.out_features // 3] = 0
                    m.qkv.bias[: 2 * m.qkv.out_features // 3] = 0
                for part in ("q", "k"):
                    if isinstance(getattr(m, part, None), nn.Linear):
                        getattr(m, part).weight.zero_()
                        getattr(m, part).bias.zero_()
        out = attention_rollout(model, torch.randn(2, 3, 32, 32))
        assert out.raw.shape == (2, *((4, 4) if name != "ceit_t" else (2, 2)))
        flat = out.raw.flatten(1)
        torch.testing.assert_close(flat, flat[:, :1].expand_as(flat), msg=name)


def test_rollout_of_one_block_is_the_class_row_with_the_residual():
    model = build("vit_t_16", {**VIT, "depth": 1})
    x = torch.randn(1, 3, 32, 32)
    with reference_path(model), capture_attention(model) as captured:
        model(x)
    probs = captured.records[0].probs
    out = attention_rollout(model, x)
    expected = probs.mean(1)[0, 0, 1:] / probs.mean(1)[0, 0].sum() / 2  # (A + I) / 2, the class row
    torch.testing.assert_close(out.raw.flatten(), expected, rtol=1e-5, atol=1e-7)


def test_rollout_needs_a_class_token():
    with pytest.raises(ExplainError, match="needs a class-token model.*Swin has none"):
        attention_rollout(build("swin_t", SWIN), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("name, args, shape, query", [
    ("swin_t", SWIN, (2, 3, 32, 32), (0, 0)), ("swin_t", SWIN, (2, 3, 32, 32), (31, 17)),
    ("video_swin_t", VIDEO, (1, 3, 8, 32, 32), (7, 0, 31))])
def test_window_attention_is_one_softmax_row_of_the_querys_window(name, args, shape, query):
    model = build(name, args)
    out = window_attention(model, torch.randn(shape), stage=0, block=1, query=query)
    assert out.shifted and out.maps.shape == (shape[0], *shape[2:])
    torch.testing.assert_close(out.weights.flatten(1).sum(1), torch.ones(shape[0]))
    # the keys the shift mask hides from this query get nothing; all of them are in the window
    n = out.plan.tokens_per_window
    keys = block_window_order(out.plan, True)[out.window * n : (out.window + 1) * n]
    masked = out.plan.mask[out.window, out.slot] < 0
    assert (out.weights.flatten(1)[:, keys[masked]] < 1e-30).all()
    assert (out.weights.flatten(1)[:, keys[~masked]] > 0).all()
    assert out.in_window.sum() == n and out.in_window.flatten()[keys].all()
    assert tuple(c // s for c, s in zip(query, out.stride)) == out.query
