"""The backend layer: every implementation computes what the reference computes (outputs and
gradients), on this host and on the hosts it can stand in for; choices are measured, kept and
explained; caches are bounded; bf16 autocast never falls into emulation."""

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from torch import nn

from tessera import backends
from tessera.backends import CACHE, capability, dispatch, native
from tessera.errors import ConfigError
from tessera.models import SwinTransformer, VideoSwinTransformer

SMALL_2D = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=5, drop_path_rate=0.0)
SMALL_3D = dict(SMALL_2D, window_size=(2, 4, 4), head_drop_rate=0.0)

#: every named implementation; forcing one uses it wherever it can take the call
BACKENDS = ["auto", "window_order", "grid_order", "onednn", "onednn_packed", "onednn_packed_then_add", "native", "sdpa",
            "matmul"]


def _model(video: bool) -> nn.Module:
    torch.manual_seed(0)
    model = VideoSwinTransformer(**SMALL_3D) if video else SwinTransformer(img_size=64, **SMALL_2D)
    with torch.no_grad():  # every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


CASES = [
    (False, (2, 3, 64, 64)),   # no padding: window order + gathers
    (False, (2, 3, 56, 72)),   # padding in the first stages
    (False, (1, 3, 32, 32)),   # every stage clamped: no shift at all
    (True, (2, 3, 4, 32, 32)),  # no padding
    (True, (1, 3, 6, 36, 20)),  # padding on every axis
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("video,shape", CASES)
def test_inference_equals_reference(backend, video, shape):
    model = _model(video)
    x = torch.randn(*shape)
    with torch.inference_mode():
        with backends.use("reference"):
            expected = model(x)
        with backends.use(backend):
            got = model(x)
            again = model(x)  # from the caches
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got, again)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("video,shape", [CASES[0], CASES[1], CASES[3]])
def test_training_gradients_equal_reference(backend, video, shape):
    model = _model(video).train()
    x = torch.randn(*shape)
    grads = []
    for setting in ("reference", backend):
        model.zero_grad()
        with backends.use(setting):
            model(x).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_forced_backends_are_used_where_they_can_run():
    dispatch.forget()  # only this test's calls: other tests' forced calls may have met grids it cannot take
    model = _model(False)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        for name in ("window_order", "grid_order", "native", "onednn", "onednn_packed", "onednn_packed_then_add"):
            with backends.use(name):
                model(x)
    rows = [r for r in backends.choices() if r["key"][0][2] == ""]  # fp32, no autocast
    chosen = {(r["op"], r["setting"]): r for r in rows}
    assert chosen[("swin_blocks", "window_order")]["choice"] == "window_order"
    grid = chosen[("swin_blocks", "grid_order")]  # unless this host has no native kernels
    assert grid["choice"] == "grid_order" or native.unavailable_reason() is not None, grid
    for op, name in (("window_attention", "native"), ("layer_norm_for_matmul", "native"), ("linear", "onednn"),
                     ("linear", "onednn_packed"), ("linear", "onednn_packed_then_add")):
        row = chosen[(op, name)]
        # forced: the named implementation, unless this host lacks it, which the row says
        assert row["choice"] == name or isinstance(row["results"].get(name), str), row


def test_reference_setting_reaches_every_op():
    model = _model(False)
    calls = []
    originals = {name: op.reference for name, op in dispatch.ops().items()}
    try:
        for name, op in dispatch.ops().items():
            op.reference = (lambda f, n: lambda *a, **k: calls.append(n) or f(*a, **k))(op.reference, name)
        with torch.inference_mode(), backends.use("reference"):
            model(torch.randn(1, 3, 64, 64))
    finally:
        for name, op in dispatch.ops().items():
            op.reference = originals[name]
    assert {"swin_blocks", "window_attention", "linear", "layer_norm_for_matmul"} <= set(calls)


# ---------------------------------------------------------------------------------------
# hosts this one can stand in for
# ---------------------------------------------------------------------------------------

SIMULATED = {
    "no-avx512": dict(tier="avx2"),
    "portable": dict(tier="portable"),
    "no-native-bf16": dict(native_bf16=False),
    "no-compiler": dict(compiler=None),
    "no-onednn": dict(onednn=False),
}


@pytest.mark.parametrize("host", sorted(SIMULATED))
@pytest.mark.parametrize("video", [False, True])
def test_simulated_hosts_compute_the_reference(host, video):
    model = _model(video)
    x = torch.randn(*(CASES[3][1] if video else CASES[0][1]))
    with backends.use("reference"), torch.inference_mode():
        expected = model(x)
    with capability.simulate(**SIMULATED[host]):
        with torch.inference_mode():
            got = model(x)
        model.train()
        model(x).square().mean().backward()
        model.eval()
        rows = backends.choices()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert all(p.grad is not None for p in model.parameters())
    reasons = {(r["op"], name): why for r in rows if r["key"][0][3] == "nograd"
               for name, why in r["results"].items() if isinstance(why, str)}
    if host == "no-compiler":
        assert "compiler" in reasons[("window_attention", "native")]
    if host == "no-onednn":
        assert "oneDNN" in reasons[("linear", "onednn")]


def test_bf16_autocast_without_native_bf16_computes_in_fp32(caplog):
    model = _model(False)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        fp32 = model(x)
        with capability.simulate(native_bf16=False), torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
            model(x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, fp32, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_with_native_bf16_runs_in_bf16():
    native_bf16, why = capability.native_bf16()
    model = _model(False)
    x = torch.randn(2, 3, 64, 64)
    seen = []
    model.layers[0].blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.inference_mode(), backends.use("reference"), capability.simulate(native_bf16=True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(x)
        fp32 = model(x)
    assert seen[0] == torch.bfloat16 and got.dtype == torch.float32  # the classifier stays fp32
    torch.testing.assert_close(got, fp32, rtol=0.05, atol=0.05)
    assert isinstance(native_bf16, bool) and why


def _run(code: str, env: dict, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TESSERA_CACHE_DIR": str(tmp_path / "cache"), **env}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


ZEN3 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


@pytest.mark.slow
def test_a_processor_without_avx512_runs_bf16_autocast_for_every_model(tmp_path):
    """In a process whose oneDNN and ATen are limited to AVX2 (a processor of the Zen 3 kind:
    oneDNN's bf16 linear raises there, and PyTorch's bf16 products are emulated), every
    registered model runs under bf16 autocast, computes in fp32, and says so."""
    code = """
import json, torch, tessera
from tessera.backends import capability
torch.manual_seed(0)
caps = capability.host()
out = {"tier": caps.tier, "limited_by": caps.limited_by, "native_bf16": capability.native_bf16()[0], "models": {}}
for name in tessera.list_models():
    with torch.device("meta"):
        big = sum(p.numel() for p in tessera.create_model(name).parameters()) > 30_000_000
    if big:
        continue
    video = name.startswith("video_")
    model = tessera.create_model(name, **({} if video else {"img_size": 64})).eval()
    x = torch.randn(1, 3, 4, 32, 32) if video else torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        fp32 = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(x)
    out["models"][name] = [str(bf16.dtype), (bf16.float() - fp32).abs().max().item()]
print(json.dumps(out))
"""
    result = _run(code, ZEN3, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["tier"] in ("avx2", "portable") and "ONEDNN_MAX_CPU_ISA" in out["limited_by"]
    assert out["native_bf16"] is False
    assert len(out["models"]) >= 20
    for name, (dtype, diff) in out["models"].items():
        assert dtype == "torch.float32" and diff <= 1e-5, (name, dtype, diff)
    assert result.stderr.count("no native bf16") == 1  # said once


@pytest.mark.slow
def test_onednn_without_bf16_kernels_is_measured_unavailable(tmp_path):
    """Where oneDNN has no bf16 matrix product, the probe sees it fail and keeps the reason."""
    code = """
import json, torch
from tessera import backends
from tessera.backends import capability
x, w = torch.randn(64, 96), torch.randn(288, 96)
with capability.simulate(native_bf16=True), torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    y = backends.linear(x, w, None)
    row = [r for r in backends.choices() if r["op"] == "linear"][0]
print(json.dumps({"dtype": str(y.dtype), "choice": row["choice"], "onednn": row["results"]["onednn"]}))
"""
    result = _run(code, ZEN3, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["choice"] == "reference" and out["onednn"].startswith("failed")


# ---------------------------------------------------------------------------------------
# choosing
# ---------------------------------------------------------------------------------------


@pytest.fixture
def toy_op():
    """An op with a reference, a candidate that raises, one that is wrong and one that is
    right but slow, registered for one test."""
    import time

    op = dispatch.Op("toy_op_for_tests", lambda x: x * 2, lambda x: (x.shape[0],))

    @op.candidate("toy_raises")
    def _(x):
        raise RuntimeError("no kernel for this")

    @op.candidate("toy_wrong")
    def _(x):
        return x * 2 + 1

    @op.candidate("toy_slow")
    def _(x):
        time.sleep(0.02)
        return x + x

    @op.candidate("toy_refuses", lambda x: "never takes anything")
    def _(x):
        return x * 2

    yield op
    del dispatch._OPS["toy_op_for_tests"]


def test_probing_drops_failing_and_wrong_candidates_and_keeps_the_reasons(toy_op, monkeypatch, tmp_path):
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    dispatch.DISK.forget()
    x = torch.arange(4.0)
    torch.manual_seed(3)
    before = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(toy_op(x), x * 2)
    assert torch.equal(torch.rand(1), before)  # probing never moves the random stream
    (row,) = [r for r in backends.choices() if r["op"] == "toy_op_for_tests"]
    assert row["choice"] == "reference" and row["how"].startswith("measured")
    results = row["results"]
    assert results["toy_raises"].startswith("failed: no kernel")
    assert results["toy_wrong"].startswith("differs from the reference")
    assert results["toy_refuses"] == "never takes anything"
    assert results["toy_slow"] > results["reference"]
    with backends.use("toy_slow"):
        assert torch.equal(toy_op(x), x * 2)
    with backends.use("auto,-toy_slow"):
        toy_op(x)
    rows = {r["setting"]: r for r in backends.choices() if r["op"] == "toy_op_for_tests"}
    assert rows["toy_slow"]["choice"] == "toy_slow" and rows["toy_slow"]["how"] == "forced"
    assert rows["auto,-toy_slow"]["results"]["toy_slow"] == "excluded"
    dispatch.DISK.forget()


def test_choices_are_kept_on_disk_for_the_next_process(tmp_path):
    code = """
import json, torch
from tessera import backends
backends.linear(torch.randn(64, 32), torch.randn(48, 32), torch.randn(48))
row = [r for r in backends.choices() if r["op"] == "linear"][0]
print(json.dumps({"choice": row["choice"], "how": row["how"]}))
"""
    env = {"TESSERA_BACKEND": "auto"}
    first = _run(code, env, tmp_path)
    assert first.returncode == 0, first.stderr
    made = json.loads(first.stdout.splitlines()[-1])
    assert made["how"].startswith("measured")
    assert len(list((tmp_path / "cache").glob("choices-*.json"))) == 1
    second = json.loads(_run(code, env, tmp_path).stdout.splitlines()[-1])
    assert second["choice"] == made["choice"] and second["how"].startswith("from disk")


def test_setting_parsing_and_the_environment_variable(tmp_path):
    assert str(dispatch.Setting.parse("auto,-native,-sdpa")) == "auto,-native,-sdpa"
    assert dispatch.Setting.parse("-native").mode == "auto"
    for bad in ("fastest", "auto,native", "auto,-reference", "-nothing"):
        with pytest.raises(ConfigError):
            dispatch.Setting.parse(bad)
    before = backends.current()
    with backends.use("reference") as setting:
        assert backends.current() == setting
    assert backends.current() == before
    code = "from tessera import backends; print(backends.current())"
    assert _run(code, {"TESSERA_BACKEND": "auto,-native"}, tmp_path).stdout.strip() == "auto,-native"


# ---------------------------------------------------------------------------------------
# caches
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["reference", "native", "sdpa", "matmul", "window_order"])
def test_caches_are_bounded_explicit_and_never_per_batch(setting):
    # each backend fixed in turn (under "auto" batch sizes of another shape class may choose
    # another backend, whose entries are then its own, not the batch size's)
    model = _model(False)
    backends.clear_caches()
    assert CACHE.stats()["entries"] == 0
    with torch.inference_mode(), backends.use(setting):
        model(torch.randn(1, 3, 64, 64))
        after_one = set(CACHE._entries)
        for batch in (2, 3, 5):
            model(torch.randn(batch, 3, 64, 64))
    # nothing is made per batch size: the same entries serve every batch
    assert set(CACHE._entries) == after_one
    windows = {1} | {CACHE.peek(k).num_windows for k in after_one if k[0] == "window plan"}
    biases = [k for k in after_one if k[0] == "window bias"]
    assert all(CACHE.peek(k).shape[0] in windows for k in biases)  # 1 or nW, never B * nW
    assert biases or setting in ("reference", "window_order")  # whose attention is the reference
    assert not any(hasattr(p, "_tessera_cast") for p in model.parameters())
    stats = CACHE.stats()
    assert stats["bytes"] <= stats["limit_bytes"]
    backends.clear_caches()
    assert CACHE.stats()["entries"] == 0


def test_a_small_cache_evicts_the_oldest_and_still_computes_the_same():
    small = backends.cache.BoundedCache(limit_bytes=4096)
    a, b = torch.ones(512), torch.ones(512)  # 2 KiB each
    small.get("a", lambda: a.clone(), (a,))
    small.get("b", lambda: b.clone(), (b,))
    small.get("c", lambda: torch.ones(512))
    assert list(small._entries) == ["b", "c"] and small.stats()["evictions"] == 1
    a.add_(1)  # a changed: its entry would be rebuilt
    assert small.get("a", lambda: a.clone(), (a,))[0] == 2


def test_cached_entries_follow_their_parameters():
    model = _model(False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        table = model.layers[0].blocks[1].attn.relative_position_bias_table
        table.add_(torch.linspace(-1, 1, table.numel()).view_as(table))
        after = model(x)
        with backends.use("reference"):
            expected = model(x)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


@pytest.mark.skipif(not capability.host().onednn, reason="this torch build has no oneDNN")
def test_packed_weights_follow_their_parameters():
    """oneDNN's packed copy of a weight is rebuilt when the weight changes in place, and is
    never used where gradients flow."""
    model = _model(False)
    x = torch.randn(1, 3, 64, 64)
    with backends.use("onednn_packed"):
        with torch.no_grad():
            before = model(x)
            model.layers[0].blocks[0].mlp.fc1.weight.mul_(-1.5)
            after = model(x)
            with backends.use("reference"):
                expected = model(x)
        rows = [r for r in backends.choices() if r["op"] == "linear" and r["setting"] == "onednn_packed"]
        model.train()
        model(x).sum().backward()
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)
    assert any(r["choice"] == "onednn_packed" for r in rows)
    trained = [r for r in backends.choices() if r["op"] == "linear" and r["key"][0][3] == "grad"]
    assert trained and all("inference only" in r["results"]["onednn_packed"] for r in trained)



@pytest.mark.skipif(not capability.host().onednn, reason="this torch build has no oneDNN")
def test_weight_copies_follow_a_fused_optimizer_step():
    """A fused AdamW step writes the weights without counting a version; the packed copies
    made for evaluation must still be rebuilt after it (validation during training)."""
    from tessera.backends.optim import adamw

    model = _model(False)
    x = torch.randn(2, 3, 64, 64)
    optimizer = adamw(model.parameters(), lr=1e-2)
    assert optimizer.defaults["fused"]
    with backends.use("onednn_packed"):
        with torch.no_grad():
            before = model(x)
        model.train()
        model(x).square().mean().backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            after = model(x)
            with backends.use("reference"):
                expected = model(x)
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after)


_MMAPPED = """
import ctypes, json, torch
from tessera import backends
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t)
                for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
def mmapped_by(size):
    before = libc.mallinfo2().hblkhd
    t = torch.empty(size, dtype=torch.uint8)
    grown = libc.mallinfo2().hblkhd - before
    del t
    return grown
out = {"default": mmapped_by(64 << 20)}
with torch.inference_mode():
    torch.nn.functional.gelu(backends.linear(torch.randn(4, 8), torch.randn(8, 8), None))  # the backends choose
out["after"] = mmapped_by(64 << 20)
out["state"] = backends.memory.state()
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is for glibc")
@pytest.mark.parametrize("setting", ["auto", "auto,-malloc"])
def test_large_freed_blocks_are_kept_unless_malloc_is_excluded(setting):
    """A 64 MiB tensor is mapped from the system by default; once the backends have chosen,
    it comes from the heap (and its block stays there for the next one), unless the setting
    says ``-malloc``."""
    env = {**os.environ, "TESSERA_BACKEND": setting}
    out = json.loads(subprocess.run([sys.executable, "-c", _MMAPPED], env=env, capture_output=True, text=True,
                                    check=True).stdout)
    assert out["default"] >= 64 << 20
    if setting == "auto":
        assert out["after"] == 0 and "keeps freed blocks" in out["state"]
    else:
        assert out["after"] >= 64 << 20 and out["state"].startswith("not changed")
    with pytest.raises(ConfigError, match="only be excluded"):
        backends.use("malloc")


# ---------------------------------------------------------------------------------------
# compiling and exporting
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("video", [False, True])
def test_compiles_without_graph_breaks(video):
    # a fresh compiler state: after the other model's shapes, dynamo would trace this one with
    # symbolic (dynamic) shapes, ten times slower and not what a user compiling it meets
    torch._dynamo.reset()
    model = _model(video)
    x = torch.randn(1, 3, 4, 32, 32) if video else torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    model.train()
    out = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.skipif(not capability.host().onednn, reason="this torch build has no oneDNN")
def test_compiled_inference_keeps_onednn_and_exported_programs_stay_portable():
    model = _model(False)
    x = torch.randn(1, 3, 64, 64)
    seen = []

    def record(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, fullgraph=True, backend=record)(x), model(x),
                                   rtol=1e-5, atol=1e-5)
    assert any("tessera.onednn_linear" in t for t in seen)  # opaque to the compiler, still fused
    with torch.no_grad():
        program = torch.export.export(model, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert not any("tessera" in t or "mkldnn" in t for t in targets), targets


def test_a_stage_candidate_probed_in_training_survives_the_probes_of_the_ops_inside_it(monkeypatch, tmp_path):
    """The window-order stage calls the linear op with new kinds of call (residual adds)
    whose probes run backward passes inside the stage's own probe: no candidate fails for it."""
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    dispatch.DISK.forget()
    dispatch.forget()
    model = SwinTransformer(embed_dim=16, depths=(2, 2), num_heads=(1, 2), img_size=56).train()
    model(torch.randn(2, 3, 56, 56)).sum().backward()
    rows = [r for r in backends.choices() if r["op"] == "swin_blocks" and "train" in r["key"]]
    assert len(rows) == 2
    for row in rows:
        assert not any(str(v).startswith("failed") for v in row["results"].values()), row["results"]
    dispatch.forget()
    dispatch.DISK.forget()


def test_hooks_on_a_norm_still_see_its_calls():
    """The native norm replaces the module's call; a forward hook on the module (features,
    explanations) makes the module itself run, so the hook sees every call."""
    norm, x = nn.LayerNorm(96), torch.randn(2, 49, 96)
    seen = []
    with torch.inference_mode(), backends.use("native"):
        plain = backends.layer_norm_for_matmul(x, norm)
        handle = norm.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        try:
            hooked = backends.layer_norm_for_matmul(x, norm)
        finally:
            handle.remove()
    assert seen == [x.shape]
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
