"""LeViT: timm's counts and outputs, attention biases by relative offset (and their resizing
at load), shrink attention, and the distillation head."""

import pytest
import torch

import tessera
from tessera import backends
import tessera.models.levit as levit_module
from tessera.errors import CheckpointError
from tessera.models import LeViT
from tessera.models.levit import LeViTAttention, resize_bias_grid

SMALL = dict(img_size=64, num_classes=5, embed_dim=(64, 96, 128), key_dim=16, num_heads=(2, 3, 4), depth=(1, 1, 1))


def small(**kwargs) -> LeViT:
    """A LeViT with weights and BatchNorm statistics far from their initialisation (the
    zero-initialised BatchNorm scales would otherwise switch whole branches off)."""
    torch.manual_seed(0)
    model = LeViT(**{**SMALL, **kwargs}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    return model


# ---------------------------------------------------------------------------------------
# timm: counts, outputs, loading at another resolution
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,count", [("levit_128s", 7_777_058), ("levit_256", 18_893_876)])
def test_parameter_counts_equal_timm(name, count):
    model = tessera.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.parametrize("backend", ["sdpa", "reference"])
def test_timm_checkpoint_reproduces_its_logits(golden, backend):
    case = torch.load(golden / "timm_vit_cases.pt", weights_only=True)["levit"]
    model = LeViT(**case["timm_kwargs"]).eval()
    report = tessera.load_checkpoint(model, golden / "timm_levit.pth")
    assert not report.missing and not report.unexpected
    with torch.no_grad(), backends.use(backend):
        logits = model(case["x"])
    torch.testing.assert_close(logits, case["logits"], atol=1e-4, rtol=1e-4)


def test_checkpoint_of_another_resolution_resizes_the_bias_grids(golden):
    case = torch.load(golden / "timm_vit_cases.pt", weights_only=True)["levit"]
    state = torch.load(golden / "timm_levit.pth", weights_only=True)
    model = LeViT(**{**case["timm_kwargs"], "img_size": 96}).eval()  # grids 6x6, 3x3, 2x2
    report = tessera.load_checkpoint(model, golden / "timm_levit.pth")
    assert any("resized" in note for note in report.notes) and not report.missing
    key = "stages.0.blocks.0.attn.attention_biases"
    assert state[key].shape == (2, 16) and model.state_dict()[key].shape == (2, 36)
    torch.testing.assert_close(model.state_dict()[key], resize_bias_grid(state[key], (6, 6)))
    assert model.state_dict()["stages.2.downsample.attn_downsample.attention_biases"].shape == (6, 9)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, 96, 96))).all()
    # other tensors that do not fit are still an error
    wider = LeViT(**{**case["timm_kwargs"], "embed_dim": (64, 96, 160)})
    with pytest.raises(CheckpointError, match="differ in shape"):
        tessera.load_checkpoint(wider, golden / "timm_levit.pth")


def test_bias_grid_resizing_is_bicubic_on_the_offset_grid():
    # a constant grid stays constant; a smooth ramp along |dx| stays a ramp along |dx|
    constant = torch.full((3, 16), 0.7)
    torch.testing.assert_close(resize_bias_grid(constant, (7, 7)), torch.full((3, 49), 0.7))
    ramp = torch.arange(4.0).repeat(4).view(1, 16)  # value = |dx| on a 4x4 grid
    resized = resize_bias_grid(ramp, (8, 8)).view(8, 8)
    torch.testing.assert_close(resized, resized[:1].expand(8, 8))  # constant along |dy|
    assert (resized[0, 1:] >= resized[0, :-1]).all()  # increasing along |dx|
    torch.testing.assert_close(resize_bias_grid(ramp, (4, 4)), ramp)
    with pytest.raises(CheckpointError, match="square"):
        resize_bias_grid(torch.zeros(2, 12), (4, 4))


# ---------------------------------------------------------------------------------------
# the mechanisms
# ---------------------------------------------------------------------------------------


def test_attention_biases_are_indexed_by_relative_offset():
    """The attention equals a written-out computation where the score of query (y, x) and key
    (y', x') gets the bias of the offset (|y - y'|, |x - x'|)."""
    torch.manual_seed(0)
    res = (3, 4)
    attn = LeViTAttention(dim=16, key_dim=4, num_heads=2, attn_ratio=2.0, resolution=res,
                          act_layer=torch.nn.Hardswish).eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    x = torch.randn(2, 12, 16)
    positions = [(y, x_) for y in range(res[0]) for x_ in range(res[1])]
    table = attn.attention_biases.view(2, *res)
    bias = torch.stack([
        torch.stack([table[:, abs(a[0] - b[0]), abs(a[1] - b[1])] for b in positions], dim=-1) for a in positions
    ], dim=-2)  # (h, N, N)
    with torch.no_grad():
        q, k, v = attn.qkv(x).view(2, 12, 2, -1).transpose(1, 2).split([4, 4, 8], dim=-1)
        scores = (q @ k.transpose(-2, -1)) * 4**-0.5 + bias
        expected = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).flatten(2))
        torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)
        # pairs at equal offsets share one bias: 12 offsets for 144 pairs, per head
        assert torch.equal(attn.attention_bias(), bias)
        assert attn.attention_bias_idxs.unique().numel() == 12


def test_shrink_attention_halves_the_resolution(monkeypatch):
    seen = []
    real = levit_module.attend

    def recording(q, k, v, *args, **kwargs):
        seen.append((q.shape[2], k.shape[2]))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(levit_module, "attend", recording)
    tokens = []
    model = small(img_size=80)  # stem 80/16 = 5x5, then 3x3, then 2x2
    hooks = [stage.register_forward_hook(lambda m, a, o: tokens.append(o.shape)) for stage in model.stages]
    with torch.no_grad():
        model(torch.randn(1, 3, 80, 80))
    for h in hooks:
        h.remove()
    assert tokens == [(1, 25, 64), (1, 9, 96), (1, 4, 128)]
    # stage 0 block; shrink (queries on every second row and column, keys on all); block; ...
    assert seen == [(25, 25), (9, 25), (9, 9), (4, 9), (4, 4)]


def test_eval_averages_the_two_heads():
    model = small(distilled=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        head, head_dist = model.head(pooled), model.head_dist(pooled)
        out = model(x)
    torch.testing.assert_close(out, (head + head_dist) / 2)
    assert not torch.allclose(out, head, atol=1e-4) and not torch.allclose(out, head_dist, atol=1e-4)

    model.train()
    assert model(x).shape == (2, 5)  # training without a distillation loss: still the mean
    model.set_distilled_training(True)
    logits, logits_dist = model(x)
    assert logits.shape == logits_dist.shape == (2, 5)
    model.eval()
    assert isinstance(model(x), torch.Tensor)  # eval always averages

    model.reset_classifier(3)
    assert model.head.linear.out_features == model.head_dist.linear.out_features == 3
    with pytest.raises(ValueError, match="distill"):
        small().set_distilled_training(True)


def test_registered_variants_are_distilled_and_decay_free_biases():
    model = tessera.create_model("levit_128s", img_size=64)
    assert model.distilled and len(model.get_classifier()) == 2
    assert model.no_weight_decay() == {n for n, _ in model.named_parameters() if n.endswith("attention_biases")}


def test_wrong_input_size_is_a_clear_error():
    model = small()
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match="power of two"):
        LeViT(**{**SMALL, "patch_size": 12})


def test_stride_8_stem():
    model = small(patch_size=8)  # three convs: 64 -> 8x8 tokens, then 4x4, 2x2
    assert [n for n, _ in model.stem.named_children()] == ["conv1", "act1", "conv2", "act2", "conv3"]
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 4, 128)
