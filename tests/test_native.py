"""The native CPU kernels compute what PyTorch computes, at every instruction-set tier this
host can run, and the models fall back to PyTorch's operators when they cannot be built."""

import os
import subprocess
import sys

import pytest
import torch

from tessera import backends
from tessera.backends import capability, native
from tessera.models import SwinTransformer, VideoSwinTransformer

HOST = capability.host()
#: the tiers this processor can run: its own and every lower one
TIERS = capability.TIERS[: capability.TIERS.index(HOST.tier) + 1] if HOST.machine == "x86_64" else ("portable",)
BUILDS = HOST.compiler is not None


def test_kernels_are_built_where_a_compiler_is():
    if not BUILDS:
        assert native.library() is None and "compiler" in native.unavailable_reason()
    else:
        assert native.library() is not None, native.unavailable_reason()
        assert native.lanes() == (16 if HOST.tier.startswith("avx512") else 8)


@pytest.fixture(params=TIERS)
def tier(request):
    """Kernels built for each tier in turn (a processor with AVX-512 stands in for one with
    only AVX2: the build for x86-64-v3 runs here)."""
    if not BUILDS:
        pytest.skip("no C++ compiler here")  # the test above asserts that there is none
    with capability.simulate(tier=request.param):
        assert native.library() is not None, native.unavailable_reason()
        assert native.lanes() == (16 if request.param.startswith("avx512") else 8)
        yield request.param


def _reference(qkv, bias, heads, n, scale, cosine=False):
    """The attention of every window with PyTorch's operators, in fp64."""
    b, length, c3 = qkv.shape
    c, d = c3 // 3, c3 // 3 // heads
    q, k, v = qkv.double().view(-1, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    scale = scale.double().view(-1, 1, 1) if isinstance(scale, torch.Tensor) else scale
    if cosine:
        q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    scores = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        scores = (scores.view(-1, bias.shape[0], heads, n, n) + bias.double()).view_as(scores)
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, length, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("windows,heads,n,d,bias_windows,cosine", [
    (8, 3, 49, 32, 1, False),    # Swin-T stage 1, regular windows
    (8, 3, 49, 32, 4, False),    # shifted: a mask per window
    (2, 2, 392, 32, 2, False),   # Video Swin (8 x 7 x 7 windows)
    (3, 4, 30, 20, 3, False),    # clamped window, head size not a multiple of the vector width
    (2, 2, 50, 16, 2, False),    # two keys past the last whole vector: dot products
    (2, 1, 5, 8, 0, False),      # tiny, no bias
    (4, 3, 64, 32, 2, True),     # Swin V2: cosine attention, a scale per head
])
def test_window_attention_matches_pytorch(tier, dtype, windows, heads, n, d, bias_windows, cosine):
    torch.manual_seed(0)
    batch = 2
    qkv = (torch.randn(batch, windows * n, 3 * heads * d) * 2).to(dtype)
    bias = torch.randn(bias_windows, heads, n, n) * 3 if bias_windows else None
    if bias is not None and bias_windows > 1:
        bias[:, :, :, : n // 3] -= 100.0  # like a shift mask
    scale = torch.tensor([10.0, 3.0, 7.0])[:heads] if cosine else d**-0.5
    got = native.window_attention(qkv, None if bias is None else native.pad_bias(bias), heads, n, scale, cosine)
    expected = _reference(qkv, bias, heads, n, scale, cosine)
    assert got.dtype == dtype and got.shape == expected.shape
    # fp32 arithmetic inside: only the rounding of the result to the storage type is lost
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=8e-3, atol=8e-3)
    torch.testing.assert_close(got.double(), expected, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cosine", [False, True])
def test_window_attention_reads_and_writes_rows_through_an_order(tier, dtype, cosine):
    """With ``order``, each window's rows are gathered from where they lie and the output is
    written back there: the same numbers as gathering first and scattering after."""
    torch.manual_seed(0)
    batch, windows, heads, n, d = 3, 4, 2, 49, 32
    tokens = windows * n
    qkv = (torch.randn(batch, tokens, 3 * heads * d) * 2).to(dtype)
    bias = native.pad_bias(torch.randn(windows, heads, n, n) * 3)
    order = torch.randperm(tokens, dtype=torch.int32)  # position of window order's token p
    scale = torch.tensor([4.0, 9.0]) if cosine else d**-0.5
    got = native.window_attention(qkv, bias, heads, n, scale, cosine, order=order)
    in_window_order = native.window_attention(qkv[:, order.long()].contiguous(), bias, heads, n, scale, cosine)
    expected = torch.empty_like(got)
    expected[:, order.long()] = in_window_order
    assert torch.equal(got, expected)


@pytest.mark.parametrize("c", [96, 768, 100])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_matches_pytorch(tier, c, dtype):
    torch.manual_seed(0)
    x = torch.randn(37, 5, c) * 3 + 1
    norm = torch.nn.LayerNorm(c)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    with torch.no_grad():
        got = native.layer_norm(x, norm.weight, norm.bias, norm.eps, dtype)
        expected = norm(x)
    assert got.dtype == dtype and got.shape == x.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:  # the fp32 result rounded to nearest: at most one bf16 step from PyTorch's rounding
        step = expected.abs().clamp_min(1e-3) * 2**-7
        assert ((got.float() - expected).abs() <= step).all()


def test_add_bf16_is_exact(tier):
    a = torch.randn(1000, 96)
    b = torch.randn(1000, 96).bfloat16()
    assert torch.equal(native.add_bf16(a, b), a + b.float())


def _swin(video: bool):
    torch.manual_seed(0)
    if video:
        return VideoSwinTransformer(embed_dim=32, depths=(2, 2), num_heads=(1, 2), window_size=(2, 7, 7),
                                    num_classes=10).eval(), torch.randn(2, 3, 4, 56, 56)
    return SwinTransformer(img_size=112, embed_dim=32, depths=(2, 2, 2), num_heads=(1, 2, 4),
                           num_classes=10).eval(), torch.randn(2, 3, 112, 112)


@pytest.mark.parametrize("video", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_models_give_the_same_outputs_with_and_without_the_kernels(video, autocast):
    model, x = _swin(video)
    outs = []
    for setting in ("auto", "auto,-native"):
        with backends.use(setting), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                                             enabled=autocast):
            outs.append(model(x).float())
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0], outs[1], **tol)
    assert not torch.equal(outs[0], torch.zeros_like(outs[0]))


def test_the_residual_stream_and_the_logits_are_fp32_under_autocast():
    model, x = _swin(False)
    seen = []
    model.layers[1].register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert seen == [(torch.float32, torch.float32)]
    assert logits.dtype == torch.float32


def test_autocast_agrees_with_fp32_better_than_a_bf16_stream():
    """The fp32 stream and classifier are there for accuracy: the bf16 logits are closer to
    the fp32 ones than with everything in bf16 (the whole model cast by ``.bfloat16()``)."""
    model, x = _swin(False)
    x = torch.randn(8, 3, 112, 112)
    with torch.inference_mode():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(x).float()
        low = model.bfloat16()(x.bfloat16()).float()
    assert (mixed - full).abs().mean() < 0.75 * (low - full).abs().mean()


def _fresh_process(env_update: dict, tmp_path) -> str:
    code = (
        "import torch; from tessera.backends import native; from tessera.models import SwinTransformer\n"
        "m = SwinTransformer(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(1, 2), num_classes=3).eval()\n"
        "with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):\n"
        "    y = m(torch.randn(1, 3, 64, 64))\n"
        "print(tuple(y.shape), native.unavailable_reason() or 'on')\n"
    )
    env = {**os.environ, "TESSERA_CACHE_DIR": str(tmp_path / "cache"), **env_update}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_unbuildable_kernels_fall_back(tmp_path):
    line = _fresh_process({"CXX": "/bin/false"}, tmp_path)
    assert line.startswith("(1, 3) /bin/false failed")
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-written left behind


@pytest.mark.skipif(not BUILDS, reason="no C++ compiler here")
def test_the_library_is_built_once_and_cached(tmp_path):
    assert _fresh_process({}, tmp_path) == "(1, 3) on"
    (lib,) = (tmp_path / "cache").glob("kernels-*.so")
    stamp = lib.stat().st_mtime_ns
    assert _fresh_process({}, tmp_path) == "(1, 3) on"
    assert lib.stat().st_mtime_ns == stamp
    assert not [p for p in (tmp_path / "cache").glob("kernels-*") if p != lib]


def test_failures_of_the_kernels_say_what_went_wrong():
    with pytest.raises(RuntimeError, match="window attention failed: out of memory"):
        native._check(3, "window attention")
    with pytest.raises(RuntimeError, match="layer norm failed: arguments out of range"):
        native._check(1, "layer norm")
    native._check(0, "layer norm")  # success raises nothing
