"""Swin and Video Swin: official numbers, sizes, padding, the head API and input checks."""

import math

import pytest
import torch

import tessera
from tessera import backends
from tessera.backends import native
from tessera.layers.windows import get_plan
from tessera.models import SwinTransformer, VideoSwinTransformer
from tessera.models.swin import SwinBlock, SwinStage

SMALL_2D = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5)
SMALL_3D = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5, window_size=(4, 7, 7))

# ---------------------------------------------------------------------------------------
# official outputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [False, True])
def test_official_2d_logits(golden, fast):
    case = torch.load(golden / "official_cases.pt", weights_only=True)["official_swin2d_tiny16"]
    model = SwinTransformer(**case["config"]).eval()
    report = tessera.load_checkpoint(model, golden / "official_swin2d_tiny16.pth")
    assert report.format == "official" and not report.missing and not report.unexpected
    with torch.no_grad(), backends.use("auto" if fast else "reference"):
        logits = model(case["x"])
    torch.testing.assert_close(logits, case["logits"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fast", [False, True])
def test_official_3d_features_and_logits(golden, fast):
    case = torch.load(golden / "official_cases.pt", weights_only=True)["official_swin3d_tiny16"]
    model = VideoSwinTransformer(**case["config"]).eval()
    report = tessera.load_checkpoint(model, golden / "official_swin3d_tiny16.pth")
    assert report.format == "mmaction" and not report.missing and not report.unexpected
    with torch.no_grad(), backends.use("auto" if fast else "reference"):
        features = model.forward_features(case["x"])
        logits = model.forward_head(features)
    torch.testing.assert_close(features, case["features"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits, case["logits"], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------
# the registry: parameter counts and GMACs
# ---------------------------------------------------------------------------------------

PARAMS = {
    "swin_t": 28_288_354, "swin_s": 49_606_258, "swin_b": 87_768_224, "swin_b_384": 87_903_584,
    "swin_l": 196_532_476, "video_swin_t": 28_158_070, "video_swin_s": 49_816_678, "video_swin_b": 88_048_984,
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts(name):
    model = tessera.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def _video_from_image_count(image: torch.nn.Module, video: torch.nn.Module) -> int:
    """What a video model's count must be given its image twin: a temporal patch axis, 3-D
    bias tables, and its own head."""
    count = sum(p.numel() for p in image.parameters())
    pt, ph, pw = video.patch_size
    count += image.patch_embed.proj.weight.numel() * (pt - 1)
    wd, wh, ww = video.window_size
    for stage in image.layers:
        for blk in stage.blocks:
            table = blk.attn.relative_position_bias_table
            count += ((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1) - table.shape[0]) * table.shape[1]
    count += (video.num_classes - image.num_classes) * (image.num_features + 1)
    return count


@pytest.mark.parametrize("image,video", [("swin_t", "video_swin_t"), ("swin_l", "video_swin_l"), ("swin_b", "video_swin_b_ssv2")])
def test_video_counts_follow_image_counts(image, video):
    img, vid = tessera.create_model(image), tessera.create_model(video)
    assert sum(p.numel() for p in vid.parameters()) == _video_from_image_count(img, vid)


GMACS = {
    "swin_t": ((1, 3, 224, 224), 4.49), "swin_s": ((1, 3, 224, 224), 8.74), "swin_b": ((1, 3, 224, 224), 15.43),
    "swin_b_384": ((1, 3, 384, 384), 47.08), "video_swin_t": ((1, 3, 32, 224, 224), 87.8),
}


@pytest.mark.parametrize("name", sorted(GMACS))
def test_gmacs(name):
    shape, expected = GMACS[name]
    with torch.device("meta"):  # the same count as the real model (tests/test_cli.py), without computing
        model = tessera.create_model(name)
    stats = tessera.model_stats(model, shape)
    assert stats["macs"] / 1e9 == pytest.approx(expected, rel=0.01)
    assert stats["flops"] == 2 * stats["macs"]


def test_gmacs_do_not_depend_on_the_attention_kernel():
    model = SwinTransformer(**SMALL_2D, img_size=64)
    fast = tessera.model_stats(model, (1, 3, 64, 64))["macs"]
    with backends.use("reference"):
        assert tessera.model_stats(model, (1, 3, 64, 64))["macs"] == fast


def test_registry_lists_and_suggests():
    assert {"swin_t", "video_swin_b_ssv2", "swin_l_384"} <= set(tessera.list_models("*swin*"))
    with pytest.raises(tessera.errors.UnknownModelError, match="swin_t"):
        tessera.create_model("swin_tt")


def test_model_args_rebuild_the_model():
    model = tessera.create_model("swin_t", num_classes=7, drop_path_rate=0.0)
    args = model.model_args
    assert args["num_classes"] == 7 and args["embed_dim"] == 96 and args["window_size"] == 7
    rebuilt = SwinTransformer(**args)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]


def test_official_2d_clamping_at_construction():
    model = tessera.create_model("swin_t")
    assert model.layers[3].window_size == (7, 7) and model.layers[3].shift_size == (0, 0)
    assert model.layers[2].shift_size == (3, 3)
    small = SwinTransformer(img_size=112, **SMALL_2D)  # 28 -> 14 -> 7 -> 4 (merging pads the odd 7)
    assert small.layers[3].window_size == (4, 4) and small.layers[3].shift_size == (0, 0)
    assert small.layers[3].blocks[0].attn.relative_position_bias_table.shape[0] == 49


# ---------------------------------------------------------------------------------------
# padding and shifting against a direct per-token computation
# ---------------------------------------------------------------------------------------


def _direct_block(blk: SwinBlock, x: torch.Tensor, window, shift) -> torch.Tensor:
    """A Swin block computed token by token from coordinates: pad with zeros after norm1,
    the window of a token is its rolled position // window, the bias is the table entry of
    the coordinate difference inside the window, and keys that came around the end of the
    grid on another axis than the query are masked with -100."""
    b, *grid, c = x.shape
    n = len(grid)
    padded = [math.ceil(g / w) * w for g, w in zip(grid, window)]
    y = torch.zeros(b, *padded, c)
    y[(slice(None), *[slice(0, g) for g in grid])] = blk.norm1(x)
    tokens = y.reshape(b, -1, c)
    attn = blk.attn
    h, d = attn.num_heads, attn.head_dim
    q, k, v = attn.qkv(tokens).view(b, -1, 3, h, d).unbind(2)
    coords = torch.stack(torch.meshgrid(*[torch.arange(p) for p in padded], indexing="ij"), -1).view(-1, n)
    rolled = torch.stack([(coords[:, a] - shift[a]) % padded[a] for a in range(n)], -1)
    win_id = rolled // torch.tensor(window)
    inner = rolled % torch.tensor(window)
    wrapped = torch.stack([rolled[:, a] + shift[a] >= padded[a] for a in range(n)], -1)
    strides = [math.prod(2 * w - 1 for w in window[a + 1:]) for a in range(n)]
    out = torch.zeros(b, len(coords), h, d)
    for i in range(len(coords)):
        members = (win_id == win_id[i]).all(-1).nonzero().squeeze(1)
        rel = inner[i] - inner[members] + torch.tensor(window) - 1
        index = (rel * torch.tensor(strides)).sum(-1)
        bias = attn.relative_position_bias_table[index].T  # (h, M)
        scores = torch.einsum("bhd,bmhd->bhm", q[:, i] * attn.scale, k[:, members]) + bias
        if any(shift):
            cut = (wrapped[members] != wrapped[i]).any(-1)
            scores = scores + cut.float() * -100.0
        out[:, i] = torch.einsum("bhm,bmhd->bhd", scores.softmax(-1), v[:, members])
    out = attn.proj(out.reshape(b, -1, c)).view(b, *padded, c)
    x = x + out[(slice(None), *[slice(0, g) for g in grid])]
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize(
    "grid,window,shifted",
    [((9, 11), (4, 4), True), ((9, 11), (4, 4), False), ((3, 5, 6), (2, 3, 3), True), ((5, 4, 7), (2, 3, 3), True)],
)
def test_padded_block_equals_direct_computation(grid, window, shifted):
    dim = 8
    shift = tuple(w // 2 for w in window)
    blk = SwinBlock(dim, 2, window, shift if shifted else (0,) * len(window)).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_(0, 1.0)  # make the bias matter
        x = torch.randn(2, *grid, dim)
        plan = get_plan(grid, window, shift, x.device)
        expected = _direct_block(blk, x, window, shift if shifted else (0,) * len(window))
        for backend in ("reference", "auto", "native", "sdpa", "matmul"):
            with backends.use(backend):
                torch.testing.assert_close(blk(x, plan), expected, atol=1e-5, rtol=1e-5, msg=backend)


@pytest.mark.parametrize("backend", ["window_order", "grid_order"])
@pytest.mark.parametrize("grid,window", [((14, 21), (7, 7)), ((4, 6, 6), (2, 3, 3))])
def test_window_order_stage_equals_direct_computation(grid, window, backend):
    if backend == "grid_order" and native.unavailable_reason():
        pytest.skip(f"grid_order needs the native kernels: {native.unavailable_reason()}")
    dim = 8
    shift = tuple(w // 2 for w in window)
    stage = SwinStage(dim, 2, 2, window, shift).eval()  # a regular block, then a shifted one
    with torch.no_grad():
        for blk in stage.blocks:
            blk.attn.relative_position_bias_table.normal_(0, 1.0)
        x = torch.randn(2, *grid, dim)
        expected = _direct_block(stage.blocks[1], _direct_block(stage.blocks[0], x, window, (0,) * len(window)),
                                 window, shift)
        with backends.use(backend):
            out = stage(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert [c["choice"] for c in backends.choices() if c["op"] == "swin_blocks" and c["setting"] == backend
            and c["key"][1] == "SwinBlock" and c["key"][5] == "grid=" + "x".join(map(str, grid))] == [backend]


# ---------------------------------------------------------------------------------------
# any input size, fast path == reference path, the head API, checkpointing
# ---------------------------------------------------------------------------------------


def _both_paths(model, x):
    with backends.use("reference"):
        ref = model(x)
    return ref, model(x)


@pytest.mark.parametrize("size", [(64, 64), (100, 130), (37, 53), (224, 160)])
def test_any_image_size(size):
    model = SwinTransformer(img_size=224, **SMALL_2D).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref, fast = _both_paths(model, x)
        features = model.forward_features(x)
    assert ref.shape == (2, 5) and torch.isfinite(ref).all()
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert features.shape == (2, 128, *[math.ceil(s / 32) for s in size])


@pytest.mark.parametrize("size", [(8, 64, 64), (5, 33, 47), (3, 96, 40), (1, 20, 20)])
def test_any_clip_size(size):
    model = VideoSwinTransformer(**SMALL_3D).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ref, fast = _both_paths(model, x)
        features = model.forward_features(x)
    assert ref.shape == (1, 5) and torch.isfinite(ref).all()
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert features.shape == (1, 128, math.ceil(size[0] / 2), *[math.ceil(s / 32) for s in size[1:]])


@pytest.mark.parametrize("video", [False, True])
def test_fast_path_gradients_equal_reference(video):
    if video:
        model, x = VideoSwinTransformer(**SMALL_3D, drop_path_rate=0.0), torch.randn(1, 3, 6, 40, 44)
    else:
        model, x = SwinTransformer(**SMALL_2D, img_size=64, drop_path_rate=0.0), torch.randn(2, 3, 72, 60)
    model.eval()
    grads = []
    for fast in (False, True):
        model.zero_grad()
        with backends.use("auto" if fast else "reference"):
            model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize("fast", [False, True])
def test_gradient_checkpointing_same_outputs_and_gradients(fast):
    model = SwinTransformer(**SMALL_2D, img_size=64, drop_path_rate=0.0)
    x = torch.randn(2, 3, 64, 64)
    results = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        with backends.use("auto" if fast else "reference"):
            out = model(x)
            out.sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=0, rtol=0)
    for name, g in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], g, atol=1e-6, rtol=1e-5)


def test_forward_is_head_of_features_and_reset_classifier():
    model = SwinTransformer(**SMALL_2D, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 128, 2, 2)
        torch.testing.assert_close(model.forward_head(features), model(x))
        pooled = model.forward_head(features, pre_logits=True)
        model.reset_classifier(11)
        assert model(x).shape == (2, 11) and model.num_classes == 11
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pooled)


def test_video_head_is_i3d_style():
    model = VideoSwinTransformer(**SMALL_3D)
    assert model.head_drop.p == 0.5
    model.eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        f = model.forward_features(x)
        torch.testing.assert_close(model(x), model.head(f.mean((2, 3, 4))))


def test_stochastic_depth_is_linear_over_blocks():
    model = SwinTransformer(**SMALL_2D, drop_path_rate=0.7, img_size=64)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for s in model.layers for b in s.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.7, 8))


@pytest.mark.parametrize(
    "cls,shape,expected",
    [
        (SwinTransformer, (3, 64, 64), r"\(B, 3, H, W\).*\(3, 64, 64\)"),
        (SwinTransformer, (2, 1, 64, 64), r"3 input channels.*\(2, 1, 64, 64\)"),
        (SwinTransformer, (2, 3, 8, 64, 64), r"\(B, 3, H, W\)"),
        (VideoSwinTransformer, (2, 3, 64, 64), r"\(B, 3, T, H, W\).*\(2, 3, 64, 64\)"),
        (VideoSwinTransformer, (1, 4, 4, 32, 32), r"3 input channels"),
        (SwinTransformer, (1, 3, 2, 64), r"smaller than one patch"),
    ],
)
def test_clear_input_errors(cls, shape, expected):
    model = cls(**(SMALL_2D if cls is SwinTransformer else SMALL_3D))
    with pytest.raises(ValueError, match=expected):
        model(torch.randn(*shape))


def test_integer_input_is_rejected():
    model = SwinTransformer(**SMALL_2D, img_size=64)
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
