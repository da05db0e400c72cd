"""Segmentation models: Swin-Unet against the official code's recorded logits, its
initialisation from an ImageNet Swin, UperNet's structure (the official config), its mmseg
key layout round trip and its initialisation from a classification checkpoint."""

import pytest
import torch
from torch import nn

import tessera
from tessera.models.seg import SwinUnet, UperNet

SMALL_BACKBONE = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
UNET = dict(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4, num_classes=5)


def small_upernet(**kwargs) -> UperNet:
    args = dict(num_classes=7, channels=32, aux_channels=16, backbone_args=SMALL_BACKBONE, img_size=64)
    return tessera.create_model("upernet_swin_t", **{**args, **kwargs})


def perturb(model: nn.Module) -> nn.Module:
    """Every weight and BatchNorm statistic away from its initial value."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    return model


# ---------------------------------------------------------------------------------------
# Swin-Unet
# ---------------------------------------------------------------------------------------


def test_swin_unet_reproduces_the_official_logits(golden):
    case = torch.load(golden / "seg" / "swin_unet_cases.pt", weights_only=True)["official_swin_unet"]
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in case["config"].items()}
    model = SwinUnet(**config).eval()
    report = tessera.load_checkpoint(model, golden / "seg" / "official_swin_unet.pth", strict=True)
    assert report.format == "swin_unet" and not report.missing and not report.unexpected
    with torch.no_grad():
        fast = model(case["x"])
        with tessera.backends.use("reference"):  # plain PyTorch: the official roll/partition code
            reference = model(case["x"])
    assert fast.shape == case["logits"].shape == (2, 5, 64, 64)
    torch.testing.assert_close(fast, case["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(reference, case["logits"], atol=1e-4, rtol=1e-4)


def test_swin_unet_structure_follows_the_official_decoder():
    model = SwinUnet(**UNET)
    # patch expanding: Linear(C -> 2C, no bias), LayerNorm(C / 2); the last one 4x: Linear(C -> 16C)
    assert model.layers_up[0].expand.weight.shape == (256, 128) and model.layers_up[0].expand.bias is None
    assert model.layers_up[0].norm.normalized_shape == (64,)
    assert model.up.expand.weight.shape == (256, 16) and model.up.norm.normalized_shape == (16,)
    # skips concatenated then Linear(2C -> C); the output a bias-free 1x1 convolution
    assert [tuple(m.weight.shape) for m in model.concat_back_dim[1:]] == [(64, 128), (32, 64), (16, 32)]
    assert model.output.bias is None and model.output.kernel_size == (1, 1)
    # the decoder stages copy their encoder stage's depth, heads and (clamped) window
    for j in range(1, 4):
        enc, dec = model.layers[3 - j], model.layers_up[j]
        assert len(dec.blocks) == len(enc.blocks) and dec.window_size == enc.window_size
        assert dec.shift_size == enc.shift_size
    assert model.layers[3].window_size == (2, 2) and model.layers[2].shift_size == (0, 0)  # maps 2x2 and 4x4
    # a patch expanding lays each token's channels out as a 2x2 block, channel (p1 * 2 + p2) * C/2 + c
    expand = model.layers_up[0]
    with torch.no_grad():
        expand.expand.weight.copy_(torch.eye(256, 128))
        expand.norm.weight.fill_(1)
        expand.norm.bias.zero_()
    x = torch.randn(1, 1, 1, 128)
    y = expand(x)
    blocks = torch.cat([x[0, 0, 0], torch.zeros(128)]).view(2, 2, 64)  # the identity's 256 outputs
    for p1 in range(2):
        for p2 in range(2):
            torch.testing.assert_close(y[0, p1, p2], nn.functional.layer_norm(blocks[p1, p2], (64,)))


def test_an_imagenet_swin_initialises_encoder_and_decoder_as_load_from_does():
    classifier = perturb(tessera.create_model("swin_t", img_size=64, window_size=4, num_classes=10, **SMALL_BACKBONE))
    model = SwinUnet(**UNET)
    report = tessera.load_checkpoint(model, classifier.state_dict(), verbose=False)
    assert any("load_from" in n for n in report.notes)
    assert sorted(report.unexpected) == ["head.bias", "head.weight"]
    assert all(k.startswith(("layers_up.0.", "layers_up.1.upsample", "layers_up.2.upsample", "concat_back_dim",
                             "norm_up", "up.", "output")) for k in report.missing)
    own, theirs = model.state_dict(), classifier.state_dict()
    for key, value in theirs.items():
        if key.startswith("layers.") and not key.endswith("relative_position_index"):
            assert torch.equal(own[key], value), key
            if ".blocks." in key and not key.startswith("layers.3."):  # decoder stage 3 - i copies stage i
                stage, rest = key[len("layers."):].split(".", 1)
                assert torch.equal(own[f"layers_up.{3 - int(stage)}.{rest}"], value), key
    assert torch.equal(own["norm.weight"], theirs["norm.weight"])


def test_load_from_leaves_tensors_of_another_shape_at_their_initialisation():
    # a 224 / window 7 classifier: every bias table has 13x13 rows where the model has 7x7
    classifier = perturb(tessera.create_model("swin_t", num_classes=10, **SMALL_BACKBONE))
    model = SwinUnet(**UNET)
    before = model.layers[0].blocks[0].attn.relative_position_bias_table.clone()
    report = tessera.load_checkpoint(model, classifier.state_dict(), verbose=False)
    assert torch.equal(model.layers[0].blocks[0].attn.relative_position_bias_table, before)
    assert "layers.0.blocks.0.attn.relative_position_bias_table" in report.missing
    assert torch.equal(model.layers_up[3].blocks[0].attn.qkv.weight, classifier.layers[0].blocks[0].attn.qkv.weight)


def test_swin_unet_takes_grey_images_and_rejects_sizes_its_skips_cannot_align():
    model = SwinUnet(**UNET).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x.repeat(1, 3, 1, 1)))
        assert model(torch.randn(1, 3, 96, 128)).shape == (1, 5, 96, 128)
    with pytest.raises(ValueError, match="expected H and W divisible by 32"):
        model(torch.randn(1, 3, 64, 80))


# ---------------------------------------------------------------------------------------
# UperNet
# ---------------------------------------------------------------------------------------


def mmseg_keys(depths, in_channels, aux_index=2):
    """The key names of an mmseg UperNet + FCN auxiliary head checkpoint, written out from
    the official module layout (index buffers included, as mmseg saves them)."""
    keys = ["backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias", "backbone.patch_embed.norm.weight",
            "backbone.patch_embed.norm.bias"]
    block = ["norm1.weight", "norm1.bias", "attn.relative_position_bias_table", "attn.relative_position_index",
             "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
             "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]
    for i, depth in enumerate(depths):
        keys += [f"backbone.layers.{i}.blocks.{j}.{k}" for j in range(depth) for k in block]
        if i < len(depths) - 1:
            keys += [f"backbone.layers.{i}.downsample.{k}" for k in ("reduction.weight", "norm.weight", "norm.bias")]
        keys += [f"backbone.norm{i}.weight", f"backbone.norm{i}.bias"]
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]

    def conv_module(prefix):
        return [f"{prefix}.conv.weight"] + [f"{prefix}.bn.{k}" for k in bn]

    for i in range(4):
        keys += conv_module(f"decode_head.psp_modules.{i}.1")
    keys += conv_module("decode_head.bottleneck")
    for i in range(len(in_channels) - 1):
        keys += conv_module(f"decode_head.lateral_convs.{i}") + conv_module(f"decode_head.fpn_convs.{i}")
    keys += conv_module("decode_head.fpn_bottleneck") + ["decode_head.conv_seg.weight", "decode_head.conv_seg.bias"]
    keys += conv_module("auxiliary_head.convs.0") + ["auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias"]
    return keys


def test_upernet_swin_t_is_the_official_config():
    with torch.device("meta"):
        model = tessera.create_model("upernet_swin_t")
    head, aux = model.decode_head, model.auxiliary_head
    assert model.num_classes == 150 and model.loss_weights == {"out": 1.0, "aux": 0.4} and not model.align_corners
    assert model.backbone.feature_info.channels() == [96, 192, 384, 768]
    assert [m[0].output_size for m in head.psp_modules] == [1, 2, 3, 6]
    assert head.psp_modules[0][1].conv.weight.shape == (512, 768, 1, 1)
    assert head.bottleneck.conv.weight.shape == (512, 768 + 4 * 512, 3, 3)
    assert [tuple(c.conv.weight.shape) for c in head.lateral_convs] == [(512, 96, 1, 1), (512, 192, 1, 1),
                                                                         (512, 384, 1, 1)]
    assert all(tuple(c.conv.weight.shape) == (512, 512, 3, 3) for c in head.fpn_convs)
    assert head.fpn_bottleneck.conv.weight.shape == (512, 4 * 512, 3, 3)
    assert head.conv_seg.weight.shape == (150, 512, 1, 1) and head.conv_seg.bias is not None
    assert isinstance(head.dropout, nn.Dropout2d) and head.dropout.p == 0.1
    assert head.bottleneck.conv.bias is None and isinstance(head.bottleneck.bn, nn.BatchNorm2d)
    assert len(aux.convs) == 1 and aux.convs[0].conv.weight.shape == (256, 384, 3, 3)
    assert aux.conv_seg.weight.shape == (150, 256, 1, 1) and aux.dropout.p == 0.1
    # the backbone partitions every stage (window 7, shift 3), with drop path 0.3
    assert all(s.window_size == (7, 7) and s.shift_size == (3, 3) for s in model.backbone.layers)
    assert model.backbone.model.model_args["drop_path_rate"] == 0.3
    assert set(model.state_dict()) | {k for k in mmseg_keys((2, 2, 6, 2), [96, 192, 384, 768])
                                      if k.endswith("relative_position_index")} == set(
        mmseg_keys((2, 2, 6, 2), [96, 192, 384, 768]))
    assert sum(p.numel() for p in model.parameters()) == 59_941_862


def test_upernet_round_trips_through_the_mmseg_layout(tmp_path):
    source = perturb(small_upernet()).eval()
    state = source.state_dict()
    # the file as mmseg writes it: official names (index buffers too) under state_dict, with meta
    names = mmseg_keys(SMALL_BACKBONE["depths"], [16, 32, 64, 128])
    assert {k for k in names if not k.endswith("relative_position_index")} == set(state)
    official = {}
    for name in names:
        if name.endswith("relative_position_index"):
            official[name] = torch.zeros(49, 49, dtype=torch.long)
        else:
            official[name] = state[name].clone()
    torch.save({"meta": {"CLASSES": [str(i) for i in range(7)]}, "state_dict": official}, tmp_path / "upernet.pth")

    model = small_upernet().eval()
    report = tessera.load_checkpoint(model, tmp_path / "upernet.pth", strict=True)
    assert report.format == "mmseg" and not report.missing and not report.unexpected
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), atol=0, rtol=0)
    assert model(x).shape == (2, 7, 64, 96)


def test_a_classification_checkpoint_initialises_the_upernet_backbone(golden):
    ckpt = golden / "official_swin2d_tiny16.pth"
    model = small_upernet()
    report = tessera.load_checkpoint(model, ckpt, verbose=False)
    classifier = tessera.create_model("swin_t", pretrained=ckpt, num_classes=3, **SMALL_BACKBONE)
    assert report.format == "official"
    assert sorted(report.unexpected) == ["backbone.head.bias", "backbone.head.weight", "backbone.norm.bias",
                                         "backbone.norm.weight"]
    assert {k.split(".")[0] for k in report.missing} == {"backbone", "decode_head", "auxiliary_head"}
    assert all(k.startswith("backbone.norm") for k in report.missing if k.startswith("backbone."))
    for key, value in classifier.state_dict().items():
        if not key.startswith(("norm.", "head.")):
            assert torch.equal(model.state_dict()[f"backbone.{key}"], value), key


def test_upernet_outputs_in_training_and_eval_and_another_class_count():
    model = small_upernet()
    x = torch.randn(2, 3, 64, 64)
    out = model.train()(x)
    assert set(out) == {"out", "aux"} and all(v.shape == (2, 7, 64, 64) for v in out.values())
    sum(v.mean() for v in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 7, 64, 64)
    # weights for 7 classes into a 4-class model: both classifiers are re-initialised
    other = small_upernet(num_classes=4)
    report = tessera.load_checkpoint(other, model.state_dict(), verbose=False)
    assert sorted(report.reinitialized) == ["auxiliary_head.conv_seg.bias", "auxiliary_head.conv_seg.weight",
                                            "decode_head.conv_seg.bias", "decode_head.conv_seg.weight"]
    assert torch.equal(other.decode_head.bottleneck.conv.weight, model.decode_head.bottleneck.conv.weight)


def test_registered_segmentation_models_rebuild_from_their_arguments():
    for name, kwargs in (("upernet_swin_t", dict(num_classes=7, channels=32, aux_channels=16,
                                                  backbone_args=SMALL_BACKBONE)), ("swin_unet_t", UNET)):
        model = tessera.create_model(name, **kwargs)
        again = tessera.create_model(name, **model.model_args)
        assert again.state_dict().keys() == model.state_dict().keys()
        assert all(a.shape == b.shape for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_upernet_on_swin_v2_has_fresh_norms_partitions_every_stage_and_starts_from_a_classifier():
    backbone = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
    args = dict(num_classes=5, channels=32, aux_channels=16, backbone_args=backbone)
    model = tessera.create_model("upernet_swin_v2_t", **args)
    assert type(model.backbone.model).__name__ == "SwinTransformerV2"
    assert model.backbone.model.size_rule == "always_partition"
    # window 8 at 256: the 8x8 map of stage 4 keeps its shift (the classifier clamps it)
    assert all(s.window_size == (8, 8) and s.shift_size == (4, 4) for s in model.backbone.layers)
    classifier = perturb(tessera.create_model("swinv2_t", num_classes=3, **backbone))
    assert classifier.layers[3].shift_size == (0, 0)
    report = tessera.load_checkpoint(model, classifier.state_dict(), verbose=False)
    assert sorted(report.unexpected) == ["backbone.head.bias", "backbone.head.weight", "backbone.norm.bias",
                                         "backbone.norm.weight"]
    assert {k for k in report.missing if k.startswith("backbone.")} == {
        f"backbone.norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    for key, value in classifier.state_dict().items():
        if not key.startswith(("norm.", "head.")):
            assert torch.equal(model.state_dict()[f"backbone.{key}"], value), key
    # and its own weights round-trip through the mmseg layout
    source = perturb(model).eval()
    again = tessera.create_model("upernet_swin_v2_t", **args).eval()
    report = tessera.load_checkpoint(again, {"state_dict": source.state_dict()}, strict=True, verbose=False)
    assert report.format == "mmseg" and not report.missing and not report.unexpected
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(again(x), source(x)) and source(x).shape == (1, 5, 64, 96)


@pytest.mark.slow
def test_upernet_exports_as_a_program_with_per_pixel_logits(tmp_path):
    from tessera.export import export_program

    model = perturb(small_upernet()).eval()
    result = export_program(model, tmp_path / "seg.pt2", (2, 3, 64, 64), dynamic_batch=True)
    assert result.verified and result.checked_batches == (2, 1)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        got = torch.export.load(str(tmp_path / "seg.pt2")).module()(x)
        expected = model(x)
    assert got.shape == expected.shape == (3, model.num_classes, 64, 64)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_swin_unet_exports_to_onnx_with_per_pixel_logits(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from tessera.export import export_onnx

    model = perturb(SwinUnet(**UNET)).eval()
    result = export_onnx(model, tmp_path / "seg.onnx", (2, 3, 64, 64), dynamic_batch=True)
    assert result.verified and result.max_abs_diff <= 1e-4
    x = torch.randn(3, 3, 64, 64)
    session = ort.InferenceSession(str(tmp_path / "seg.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        expected = model(x)
    assert got.shape == expected.shape == (3, 5, 64, 64)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
