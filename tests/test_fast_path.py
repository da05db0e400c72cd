"""The fast path computes the same function as the official reference path."""

import pytest
import torch

from tessera.layers import fused
from tessera.models import SwinTransformer, VideoSwinTransformer

SMALL_2D = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5, drop_path_rate=0.0)
SMALL_3D = dict(SMALL_2D, window_size=(2, 4, 4), head_drop_rate=0.0)


def _pair(video: bool):
    torch.manual_seed(0)
    if video:
        fast, ref = VideoSwinTransformer(**SMALL_3D), VideoSwinTransformer(**SMALL_3D)
    else:
        fast, ref = SwinTransformer(img_size=64, **SMALL_2D), SwinTransformer(img_size=64, **SMALL_2D)
    ref.load_state_dict(fast.state_dict())
    ref.set_fast_path(False)
    return fast.eval(), ref.eval()


CASES = [
    (False, (2, 3, 64, 64)),   # no padding: window order + gathers
    (False, (2, 3, 56, 72)),   # padding in the first stages
    (False, (1, 3, 32, 32)),   # every stage clamped: no shift at all
    (True, (2, 3, 4, 32, 32)),  # no padding
    (True, (1, 3, 6, 36, 20)),  # padding on every axis
]


@pytest.mark.parametrize("video,shape", CASES)
def test_inference_mode_matches_reference(video, shape):
    """Under inference_mode the fused oneDNN epilogues and cached biases are in play."""
    fast, ref = _pair(video)
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = ref(x)
        got = fast(x)
        again = fast(x)  # from the caches
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got, again)


@pytest.mark.parametrize("video,shape", CASES)
def test_training_gradients_match_reference(video, shape):
    fast, ref = _pair(video)
    fast.train()
    ref.train()
    x = torch.randn(*shape)
    for m in (fast, ref):
        m(x).square().mean().backward()
    for (name, a), (_, b) in zip(fast.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_fused_linear_is_off_where_gradients_flow():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(fused.linear(x, lin.weight, lin.bias, gelu=True),
                                   torch.nn.functional.gelu(lin(x)), rtol=1e-6, atol=1e-6)
        r = torch.randn(3, 4)
        torch.testing.assert_close(fused.linear_add(x, lin.weight, lin.bias, r), r + lin(x), rtol=1e-6, atol=1e-6)
    y = fused.linear(x, lin.weight, lin.bias)
    y.sum().backward()
    assert lin.weight.grad is not None


@pytest.mark.parametrize("with_bias,gelu,residual", [(True, False, False), (False, False, False), (True, True, False),
                                                      (True, False, True)])
def test_onednn_linear_gradients_equal_plain_linear(with_bias, gelu, residual):
    """The training path of ``fused.linear``/``linear_add`` (oneDNN forward and input gradient)
    against ``F.linear`` with autograd."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8, requires_grad=True)
    w = torch.randn(6, 8, requires_grad=True)
    b = torch.randn(6, requires_grad=True) if with_bias else None
    r = torch.randn(2, 5, 6, requires_grad=True)
    leaves = [t for t in (x, w, b, r) if t is not None]
    if residual:
        out = fused.linear_add(x, w, b, r)
        expected = r + torch.nn.functional.linear(x, w, b)
    else:
        out = fused.linear(x, w, b, gelu=gelu)
        expected = torch.nn.functional.linear(x, w, b)
        expected = torch.nn.functional.gelu(expected) if gelu else expected
    g = torch.randn_like(out)
    got = torch.autograd.grad(out, leaves, g, allow_unused=True)
    want = torch.autograd.grad(expected, leaves, g, allow_unused=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for a, e in zip(got, want):
        if e is None:
            assert a is None or not a.abs().sum()
        else:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_bias_cache_follows_the_table():
    fast, ref = _pair(False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = fast(x)
        for m in (fast, ref):
            table = m.layers[0].blocks[1].attn.relative_position_bias_table
            table.add_(torch.linspace(-1, 1, table.numel()).view_as(table))
        after = fast(x)
        torch.testing.assert_close(after, ref(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


@pytest.mark.parametrize("video", [False, True])
def test_bf16_autocast_close_to_fp32(video):
    fast, ref = _pair(video)
    x = torch.randn(4, 3, 4, 32, 32) if video else torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        expected = ref(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fast(x).float()
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("video", [False, True])
def test_compiles_without_graph_breaks(video):
    fast, _ = _pair(video)
    x = torch.randn(1, 3, 4, 32, 32) if video else torch.randn(1, 3, 64, 64)
    compiled = torch.compile(fast, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), fast(x), rtol=1e-5, atol=1e-5)
    fast.train()
    out = torch.compile(fast, fullgraph=True, backend="aot_eager")(x)
    out.sum().backward()
    assert all(p.grad is not None for p in fast.parameters())


@pytest.mark.skipif(not fused._AVAILABLE, reason="this torch build has no oneDNN")
def test_compiled_inference_keeps_onednn_and_exported_programs_stay_portable():
    fast, _ = _pair(False)
    x = torch.randn(1, 3, 64, 64)
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    with torch.no_grad():
        torch.testing.assert_close(torch.compile(fast, fullgraph=True, backend=record)(x), fast(x),
                                   rtol=1e-5, atol=1e-5)
    assert any("tessera.onednn_linear" in t for t in seen)  # opaque to the compiler, still fused
    with torch.no_grad():
        program = torch.export.export(fast, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("tessera" in t or "mkldnn" in t for t in targets), targets
