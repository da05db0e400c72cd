"""Swin V2: the recorded outputs of the official code, timm, torchvision and Hugging Face, the
official sizes, the continuous position bias, padding and clamping, resolution transfer,
weights formats and conversion, and the head/features/export API."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import tessera
from tessera.cli import main
from tessera.errors import CheckpointError
from tessera.layers.windows import get_plan
from tessera.models import SwinTransformer, SwinTransformerV2
from tessera.models.features import features_model
from tessera.models.swin_v2 import SwinV2Block, log_spaced_coordinates
from tessera.weights.formats import FORMATS

SMALL = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5, drop_path_rate=0.0)
GOLDEN_FILES = {  # case -> (file, format)
    "official_swinv2_w8_64": ("official_swinv2_w8_64.pth", "official"),
    "timm_swinv2": ("timm_swinv2.pth", "timm_swin"),
    "torchvision_swinv2": ("torchvision_swinv2.pth", "torchvision_swinv2"),
    "hf_swinv2": ("hf_swinv2", "hf_swinv2"),
}
HF_CONFIG = dict(img_size=256, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=8,
                 num_classes=10)


def perturbed(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Every weight moved by noise (a fresh V2 has zero post-norms: every block the identity)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()


@pytest.fixture(scope="module")
def cases():
    from conftest import GOLDEN

    if not (GOLDEN / "v2").is_dir():
        pytest.skip(f"no Swin V2 reference data at {GOLDEN / 'v2'}")
    return torch.load(GOLDEN / "v2" / "swinv2_cases.pt", weights_only=True)


def golden_model(case_name: str, case: dict) -> SwinTransformerV2:
    config = HF_CONFIG if case_name == "hf_swinv2" else case["config"]
    return SwinTransformerV2(**config).eval()


# ---------------------------------------------------------------------------------------
# recorded outputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize("case_name", sorted(GOLDEN_FILES))
def test_golden_checkpoints_reproduce_their_logits(golden, cases, case_name, fast):
    case = cases[case_name]
    file, fmt = GOLDEN_FILES[case_name]
    model = golden_model(case_name, case)
    report = tessera.load_checkpoint(model, golden / "v2" / file)
    assert report.format == fmt
    assert not report.missing and not report.unexpected and not report.reinitialized
    with torch.no_grad(), tessera.backends.use("auto" if fast else "reference"):
        features = model.forward_features(case["x"])
        logits = model.forward_head(features)
    torch.testing.assert_close(logits, case["logits"], atol=1e-4, rtol=1e-4)
    if "features" in case:  # the official forward_features: normalised, then pooled
        torch.testing.assert_close(model.forward_head(features, pre_logits=True), case["features"],
                                   atol=1e-4, rtol=1e-4)


def test_the_official_case_clamps_stages_3_and_4(cases):
    model = SwinTransformerV2(**cases["official_swinv2_w8_64"]["config"])
    assert [layer.window_size for layer in model.layers] == [(8, 8), (8, 8), (4, 4), (2, 2)]
    assert [layer.shift_size for layer in model.layers] == [(4, 4), (0, 0), (0, 0), (0, 0)]
    assert model.layers[3].blocks[0].attn.relative_coords_table.shape == (1, 3, 3, 2)


def test_each_v2_format_is_detected_only_by_its_own_layout(golden):
    layouts = {
        "official": torch.load(golden / "v2" / "official_swinv2_w8_64.pth", weights_only=True)["model"],
        "timm_swin": torch.load(golden / "v2" / "timm_swinv2.pth", weights_only=True),
        "torchvision_swinv2": torch.load(golden / "v2" / "torchvision_swinv2.pth", weights_only=True),
        "hf_swinv2": load_file(golden / "v2" / "hf_swinv2" / "model.safetensors"),
    }
    for name, sd in layouts.items():
        accepting = [f.name for f in FORMATS if f.detect(sd)]
        assert accepting[0] == name and accepting[1:] in ([], ["tessera"]), (name, accepting)


def test_torchvision_qkv_bias_becomes_q_and_v_bias(golden):
    sd = torch.load(golden / "v2" / "torchvision_swinv2.pth", weights_only=True)
    model = SwinTransformerV2(**HF_CONFIG)
    tessera.load_checkpoint(model, sd)
    bias = sd["features.3.1.attn.qkv.bias"]
    attn = model.layers[1].blocks[1].attn
    assert torch.equal(attn.q_bias, bias[:32]) and torch.equal(attn.v_bias, bias[64:])
    assert bias[32:64].abs().sum() > 0  # torchvision's unused k third is dropped, not loaded


def test_v1_and_v2_weights_are_refused_by_the_other_model(golden):
    v2 = torch.load(golden / "v2" / "timm_swinv2.pth", weights_only=True)
    with pytest.raises(CheckpointError, match="Swin V2 checkpoint"):
        tessera.load_checkpoint(SwinTransformer(img_size=256, **SMALL), v2)
    v1 = SwinTransformer(img_size=256, window_size=8, **SMALL).state_dict()
    with pytest.raises(CheckpointError, match="Swin V1 checkpoint"):
        tessera.load_checkpoint(SwinTransformerV2(img_size=256, **SMALL), v1)


# ---------------------------------------------------------------------------------------
# sizes of the registered models
# ---------------------------------------------------------------------------------------

PARAMS = {  # timm's counts, without buffers
    "swinv2_t": 28_347_154, "swinv2_s": 49_728_418, "swinv2_b": 87_918_816, "swinv2_t_w16": 28_347_154,
    "swinv2_b_w16": 87_918_816, "swinv2_b_w12to24_384": 87_918_816, "swinv2_l_w12to16_256": 196_739_932,
    "swinv2_b_192_22k": 109_280_841, "swinv2_l_192_22k": 228_772_549,
}
GMACS = {  # the official figures (MODELHUB)
    "swinv2_t": 5.9, "swinv2_s": 11.5, "swinv2_b": 20.3, "swinv2_t_w16": 6.6, "swinv2_s_w16": 12.6,
    "swinv2_b_w16": 21.8, "swinv2_b_w12to24_384": 54.7, "swinv2_l_w12to16_256": 47.5, "swinv2_l_w12to24_384": 115.4,
}


def on_meta(name: str, **overrides) -> SwinTransformerV2:
    with torch.device("meta"):
        return tessera.create_model(name, **overrides)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
    assert sum(p.numel() for p in on_meta(name).parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(GMACS))
def test_gmacs_within_two_percent_of_the_official(name):
    model = on_meta(name)
    stats = tessera.model_stats(model, (1, *model.default_cfg["input_size"]), device="meta")
    assert stats["macs"] / 1e9 == pytest.approx(GMACS[name], rel=0.02)


def test_registered_windows_follow_the_official_configs():
    expected = {
        "swinv2_t": ((8, 8, 8, 8), (0, 0, 0, 0), 256), "swinv2_b_w16": ((16, 16, 16, 8), (0, 0, 0, 0), 256),
        "swinv2_b_192_22k": ((12, 12, 12, 6), (0, 0, 0, 0), 192),
        "swinv2_l_w12to16_256": ((16, 16, 16, 8), (12, 12, 12, 6), 256),
        "swinv2_b_w12to24_384": ((24, 24, 24, 12), (12, 12, 12, 6), 384),
    }
    for name, (windows, pretrained, size) in expected.items():
        model = on_meta(name)
        assert tuple(layer.window_size[0] for layer in model.layers) == windows, name
        assert tuple(layer.blocks[0].attn.pretrained_window_size[0] for layer in model.layers) == pretrained, name
        assert model.default_cfg["input_size"] == (3, size, size)
    assert on_meta("swinv2_l_192_22k").num_classes == 21841


# ---------------------------------------------------------------------------------------
# the continuous position bias
# ---------------------------------------------------------------------------------------


def test_log_spaced_coordinates():
    table = log_spaced_coordinates((16, 16), (12, 12))
    assert table.shape == (1, 31, 31, 2)
    # offset +11 along the first axis: 8 * 11 / 11 = 8 -> log2(9) / 3; the second axis at -15
    torch.testing.assert_close(table[0, 15 + 11, 0], torch.tensor([math.log2(9) / 3, -math.log2(8 * 15 / 11 + 1) / 3]))
    # without a pretrained window the largest offset is always 8 -> log2(9) / 3
    assert log_spaced_coordinates((5, 7), (0, 0)).amax(dim=(0, 1, 2)).tolist() == pytest.approx([math.log2(9) / 3] * 2)
    assert torch.equal(log_spaced_coordinates((1, 1), (0, 0)), torch.zeros(1, 1, 1, 2))  # no 0 / 0


def test_larger_window_keeps_the_pretrained_biases_of_shared_offsets():
    """The point of V2's coordinates: window 16 normalised by a pretrained 12 gives the offsets
    that window 12 had the very same biases; only the new offsets are extrapolated."""
    torch.manual_seed(0)
    small = perturbed(SwinTransformerV2(img_size=192, window_size=12, **SMALL))
    large = SwinTransformerV2(img_size=256, window_size=16, pretrained_window_sizes=(12, 12, 12, 6), **SMALL)
    large.load_state_dict(small.state_dict())
    with torch.no_grad():
        a, b = small.layers[0].blocks[0].attn, large.layers[0].blocks[0].attn
        inner = b.position_bias().view(-1, 16, 16, 16, 16)[:, :12, :12, :12, :12].reshape(-1, 144, 144)
        torch.testing.assert_close(inner, a.position_bias(), atol=1e-6, rtol=1e-6)


def test_bias_is_computed_after_16_sigmoid_with_the_official_index():
    attn = perturbed(SwinV2Block(8, 2, (3, 4), (0, 0), pretrained_window_size=(0, 0))).attn
    with torch.no_grad():
        table = attn.cpb_mlp(log_spaced_coordinates((3, 4), (0, 0))).view(5, 7, 2)
        bias = attn.position_bias()
        for a in [(0, 0), (2, 3), (1, 0)]:
            for b in [(0, 0), (2, 1), (0, 3)]:
                i, j = a[0] * 4 + a[1], b[0] * 4 + b[1]
                expected = 16 * torch.sigmoid(table[a[0] - b[0] + 2, a[1] - b[1] + 3])
                torch.testing.assert_close(bias[:, i, j], expected)


# ---------------------------------------------------------------------------------------
# padding, shifting, clamping: against a direct per-token computation
# ---------------------------------------------------------------------------------------


def _direct_block(blk: SwinV2Block, x: torch.Tensor, window, shift) -> torch.Tensor:
    """A V2 block token by token: the grid zero-padded at the end, a token's window is its
    rolled position // window, cosine scores scaled per head, the bias of the coordinate
    difference, -100 between tokens that came around the end on different axes."""
    b, *grid, c = x.shape
    padded = [math.ceil(g / w) * w for g, w in zip(grid, window)]
    y = torch.zeros(b, *padded, c)
    y[(slice(None), *[slice(0, g) for g in grid])] = x
    tokens = y.reshape(b, -1, c)
    attn = blk.attn
    h, d = attn.num_heads, c // attn.num_heads
    q, k, v = F.linear(tokens, attn.qkv.weight, attn.qkv_bias_vector()).view(b, -1, 3, h, d).unbind(2)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    table = 16 * torch.sigmoid(attn.cpb_mlp(attn.relative_coords_table)[0])  # (2W0-1, 2W1-1, h)
    coords = torch.stack(torch.meshgrid(*[torch.arange(p) for p in padded], indexing="ij"), -1).view(-1, 2)
    rolled = torch.stack([(coords[:, a] - shift[a]) % padded[a] for a in range(2)], -1)
    win_id, inner = rolled // torch.tensor(window), rolled % torch.tensor(window)
    wrapped = torch.stack([rolled[:, a] + shift[a] >= padded[a] for a in range(2)], -1)
    out = torch.zeros(b, len(coords), h, d)
    for i in range(len(coords)):
        members = (win_id == win_id[i]).all(-1).nonzero().squeeze(1)
        rel = inner[i] - inner[members] + torch.tensor(window) - 1
        scores = torch.einsum("bhd,bmhd->bhm", q[:, i], k[:, members]) * attn.logit_scale_factor().view(h, 1)
        scores = scores + table[rel[:, 0], rel[:, 1]].T
        if any(shift):
            scores = scores - 100.0 * (wrapped[members] != wrapped[i]).any(-1).float()
        out[:, i] = torch.einsum("bhm,bmhd->bhd", scores.softmax(-1), v[:, members])
    out = attn.proj(out.reshape(b, -1, c)).view(b, *padded, c)
    x = x + blk.norm1(out[(slice(None), *[slice(0, g) for g in grid])])
    return x + blk.norm2(blk.mlp(x))


@pytest.mark.parametrize("grid,shifted", [((9, 11), True), ((9, 11), False), ((8, 12), True)])
def test_block_equals_direct_computation(grid, shifted):
    torch.manual_seed(0)
    window, shift = (4, 4), (2, 2)
    blk = perturbed(SwinV2Block(8, 2, window, shift if shifted else (0, 0)), std=0.3)
    x = torch.randn(2, *grid, 8)
    plan = get_plan(grid, window, shift, x.device)
    with torch.no_grad():
        expected = _direct_block(blk, x, window, shift if shifted else (0, 0))
        for backend in ("reference", "native", "sdpa", "matmul"):
            with tessera.backends.use(backend):
                torch.testing.assert_close(blk(x, plan), expected, atol=1e-5, rtol=1e-5, msg=backend)


def test_window_clamped_at_run_time_is_the_model_built_at_that_size():
    """At 64 a model made for 128 clamps its last two stages at run time; it computes what
    the official code builds at 64 (the clamped windows' own coordinates and no shift)."""
    torch.manual_seed(0)
    made_for_128 = perturbed(SwinTransformerV2(img_size=128, window_size=8, **SMALL))
    built_at_64 = SwinTransformerV2(img_size=64, window_size=8, **SMALL).eval()
    built_at_64.load_state_dict(made_for_128.state_dict())
    assert [layer.window_size[0] for layer in made_for_128.layers] == [8, 8, 8, 4]
    assert [layer.window_size[0] for layer in built_at_64.layers] == [8, 8, 4, 2]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(made_for_128(x), built_at_64(x), atol=1e-5, rtol=1e-5)


SIZES = [(64, 64), (72, 56), (40, 100), (20, 20)]  # plain; padded; padded and clamped on one axis; all clamped


@pytest.mark.parametrize("size", SIZES)
def test_fast_path_equals_reference_outputs_and_gradients(size):
    torch.manual_seed(0)
    model = perturbed(SwinTransformerV2(img_size=64, window_size=4, **SMALL))
    x = torch.randn(2, 3, *size)
    results = []
    for setting in ("reference", "auto"):
        model.zero_grad()
        with tessera.backends.use(setting):
            out = model(x)
            out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert results[0][0].shape == (2, 5)


# ---------------------------------------------------------------------------------------
# resolution transfer: a window-12 192 checkpoint into the 12 -> 16 and 12 -> 24 models
# ---------------------------------------------------------------------------------------


def official_layout(model: SwinTransformerV2) -> dict:
    """``{'model': ...}`` with the buffers the official code saves."""
    sd = dict(model.state_dict())
    for name, buf in model.named_buffers():
        sd[name] = buf
    for i, layer in enumerate(model.layers):
        plan = get_plan((8, 8), layer.window_size, layer.shift_size, torch.device("cpu"))
        if plan.mask is not None:
            sd[f"layers.{i}.blocks.1.attn_mask"] = plan.mask
    return {"model": sd}


@pytest.mark.parametrize("target", ["swinv2_b_w12to16_256", "swinv2_b_w12to24_384"])
def test_window_12_checkpoint_loads_into_the_larger_windows(target, tmp_path):
    small = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=7)
    torch.manual_seed(0)
    source = perturbed(tessera.create_model("swinv2_b_192_22k", **small))
    torch.save(official_layout(source), tmp_path / "w12.pth")
    model = tessera.create_model(target, **small)
    report = tessera.load_checkpoint(model, tmp_path / "w12.pth")
    assert report.format == "official"
    assert not report.missing and not report.unexpected and not report.reinitialized
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())  # nothing resized
    window = model.layers[0].window_size[0]
    note = " ".join(report.notes)
    assert f"6 coordinate tables recomputed for window {window}x{window} (pretrained window 12x12)" in note
    assert "the checkpoint's were made for window 12x12" in note
    assert f"window {window // 2}x{window // 2} (pretrained window 6x6)" in note
    assert model.layers[3].blocks[0].attn.relative_coords_table.shape == (1, window - 1, window - 1, 2)


def test_timm_layout_without_tables_says_what_the_model_uses(golden):
    sd = torch.load(golden / "v2" / "timm_swinv2.pth", weights_only=True)
    model = SwinTransformerV2(img_size=256, window_size=16, pretrained_window_sizes=(8, 8, 8, 8),
                              **{**SMALL, "num_classes": 10})
    report = tessera.load_checkpoint(model, sd)
    assert not report.missing and not report.unexpected
    assert any("normalised by the pretrained windows (16x16 from 8x8)" in n for n in report.notes), report.notes


# ---------------------------------------------------------------------------------------
# conversion: the architecture read from the weights
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_name", ["official_swinv2_w8_64", "torchvision_swinv2", "hf_swinv2"])
def test_convert_without_naming_the_model(golden, cases, case_name, tmp_path, capsys):
    file, fmt = GOLDEN_FILES[case_name]
    assert main(["convert", str(golden / "v2" / file), str(tmp_path)]) == 0
    assert f"(format: {fmt})" in capsys.readouterr().out
    model = tessera.from_pretrained(tmp_path).eval()
    assert isinstance(model, SwinTransformerV2)
    case = cases[case_name]
    with torch.no_grad():
        torch.testing.assert_close(model(case["x"]), case["logits"], atol=1e-4, rtol=1e-4)


def test_timm_checkpoint_needs_the_model_named(golden, cases, tmp_path, capsys):
    source = str(golden / "v2" / "timm_swinv2.pth")
    assert main(["convert", source, str(tmp_path / "a")]) == 2
    assert "does not say its window: name the model" in capsys.readouterr().err
    args = ["convert", source, str(tmp_path / "b"), "--model", "swinv2_t", "embed_dim=16", "depths=2,2,2,2",
            "num_heads=1,2,2,4"]
    assert main(args) == 0
    model = tessera.from_pretrained(tmp_path / "b").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(cases["timm_swinv2"]["x"]), cases["timm_swinv2"]["logits"],
                                   atol=1e-4, rtol=1e-4)


def test_registered_fine_tunes_are_recognised_from_official_tables():
    from tessera.weights.infer import infer_architecture

    for name in ["swinv2_b_w12to16_256", "swinv2_l_w12to24_384", "swinv2_t_w16", "swinv2_b_192_22k"]:
        model = on_meta(name, num_classes=3)  # shapes are all that is read, and the tables' values:
        sd = dict(model.state_dict())
        for key, attn in model.named_modules():
            if key.endswith(".attn"):
                sd[key + ".relative_coords_table"] = log_spaced_coordinates(attn.window_size,
                                                                            attn.pretrained_window_size)
        arch = infer_architecture(sd)
        assert arch.name == name and arch.args == model.model_args


# ---------------------------------------------------------------------------------------
# the rest of the API
# ---------------------------------------------------------------------------------------


def test_fresh_blocks_are_the_identity_and_no_decay_names():
    model = SwinTransformerV2(img_size=64, **SMALL)
    blk = model.layers[0].blocks[1]
    assert not blk.norm1.weight.any() and not blk.norm2.weight.any()
    torch.testing.assert_close(blk.attn.logit_scale, torch.full((1, 1, 1), math.log(10)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_intermediates(x)[0], model.patch_embed(x).movedim(-1, 1))
    skip = model.no_weight_decay()
    assert "layers.0.blocks.0.attn.logit_scale" in skip and "layers.3.blocks.1.attn.cpb_mlp.2.weight" in skip
    assert "layers.0.blocks.0.attn.qkv.weight" not in skip


def test_features_only_pyramid():
    torch.manual_seed(0)
    model = perturbed(tessera.create_model("swinv2_t", img_size=64, embed_dim=16, num_heads=(1, 2, 2, 4)))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        last = model.forward_features(x)
        stages = model.forward_intermediates(x)
    twin = copy.deepcopy(model)  # wrapping takes the classifier's parts
    backbone = features_model(model)
    with torch.no_grad():
        maps = backbone(x)
    assert backbone.feature_info.channels() == [16, 32, 64, 128]
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    assert [tuple(m.shape[-2:]) for m in maps] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    # fresh norms on every output, the last one included (the official dense backbones')
    for out, stage in zip(maps, stages):
        expected = F.layer_norm(stage.movedim(1, -1), stage.shape[1:2]).movedim(-1, 1)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert (maps[-1] - last).abs().max() > 1e-2
    # started from the classifier's final norm on request: the last output is forward_features
    again = features_model(twin, last_norm_from_classifier=True)
    with torch.no_grad():
        torch.testing.assert_close(again(x)[-1], last)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(0)
    model = perturbed(SwinTransformerV2(img_size=64, window_size=4, **SMALL), std=0.02)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x).float()
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)


#: two stages: 40x24 gives a padded, shifted first stage (10x6 -> 12x8) and a second stage
#: padded in height and clamped in width at run time (5x3, window (4, 3))
TWO_STAGES = dict(img_size=32, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2), num_classes=5)


def test_onnx_export_of_a_padded_clamped_model_matches(tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from tessera.export import export_onnx

    torch.manual_seed(0)
    model = perturbed(SwinTransformerV2(**TWO_STAGES), std=0.02)
    result = export_onnx(model, tmp_path / "v2.onnx", (2, 3, 40, 24), dynamic_batch=True)
    assert result.verified and result.max_abs_diff <= 1e-4
    x = torch.randn(3, 3, 40, 24)
    session = ort.InferenceSession(str(tmp_path / "v2.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model(x), atol=1e-4, rtol=0)


def test_exported_program_matches(tmp_path):
    from tessera.export import export_program

    torch.manual_seed(0)
    model = perturbed(SwinTransformerV2(**TWO_STAGES), std=0.02)
    result = export_program(model, tmp_path / "v2.pt2", (2, 3, 32, 32), dynamic_batch=True)  # window order
    assert result.verified and result.max_abs_diff <= 1e-4
    program = torch.export.load(tmp_path / "v2.pt2")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), atol=1e-5, rtol=0)


def test_recipes_are_the_official_ones():
    from tessera.train.recipe import load_recipe

    data = ["data.root=/train", "data.val_root=/val"]
    t = load_recipe("swinv2_t_in1k", data)
    v1 = load_recipe("swin_t_in1k", data)
    assert (t.model.name, t.data.img_size, t.data.crop_pct) == ("swinv2_t", 256, 0.875)
    assert t.optim == v1.optim and t.schedule == v1.schedule and t.augment == v1.augment
    rates = {n: load_recipe(f"swinv2_{n}_in1k", data).model.args["drop_path_rate"] for n in "tsb"}
    assert rates == {"t": 0.2, "s": 0.3, "b": 0.5}
    pre = load_recipe("swinv2_b_in22k", data)
    assert (pre.model.name, pre.data.img_size, pre.data.batch_size) == ("swinv2_b_192_22k", 192, 4096)
    assert (pre.optim.lr, pre.optim.weight_decay) == (1.25e-4, 0.1)
    assert (pre.schedule.epochs, pre.schedule.warmup_epochs) == (90, 5)
    for size, name, crop in [(256, "swinv2_b_w12to16_256", 0.875), (384, "swinv2_b_w12to24_384", 1.0)]:
        ft = load_recipe(f"swinv2_b_22kto1k_{size}", data + ["model.pretrained=w12.pth"])
        assert (ft.model.name, ft.data.img_size, ft.data.crop_pct, ft.model.args["drop_path_rate"]) == (
            name, size, crop, 0.2)
        assert (ft.optim.lr, ft.optim.weight_decay) == (2e-5, 1e-8)
        assert (ft.schedule.epochs, ft.schedule.warmup_epochs) == (30, 5)
        assert (ft.schedule.warmup_lr, ft.schedule.min_lr) == (2e-8, 2e-7)
