"""Deployment: ONNX graphs run in ONNX Runtime and torch.export programs reload, and both give
the PyTorch model's outputs."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import tessera
from tessera.cli import main
from tessera.errors import CheckpointError, ConfigError, TesseraError, UnknownModelError
from tessera.export import export, export_onnx, export_program, input_shape_for
from tessera.backends import CACHE
from tessera.models import SwinTransformer, VideoSwinTransformer

ATOL = 1e-4
SMALL_2D = dict(img_size=64, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4, num_classes=5)
SMALL_3D = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(4, 4, 4), num_classes=5)

#: one registered model of each ViT family, with fewer blocks (every kind of block kept)
FAMILIES = {
    "vit_t_16": dict(depth=2),
    "deit_t_distilled": dict(depth=2),
    "deepvit_s": dict(depth=2, reattention_blocks=1),
    "cait_xxs24": dict(depth=2),
    "cpvt_ti": dict(depth=2),
    "cvt_13": dict(depths=(1, 1, 1)),
    "ceit_t": dict(depth=2),
    "levit_128s": dict(depth=(1, 1, 1)),
    "shuffle_t": dict(depths=(2, 2, 2, 2)),
    "pvt_tiny": {},
    "pvt_v2_b0": {},
}


@pytest.fixture
def ort():
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnxruntime")


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Every weight moved by noise of std 0.02, so that every one of them shows in the output
    (freshly initialised transformers give nearly constant outputs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def run_onnx(ort, path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def assert_onnx_matches(ort, model, path, x):
    with torch.no_grad():
        expected = model(x)
    got = run_onnx(ort, path, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------
# Swin and Video Swin to ONNX
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (72, 60)], ids=["64", "72x60-padded"])
def test_swin_2d_onnx_matches_pytorch_at_another_batch(ort, tmp_path, size):
    model = perturbed(SwinTransformer(**SMALL_2D))
    path = tmp_path / "swin.onnx"
    result = export_onnx(model, path, (2, 3, *size), dynamic_batch=True)
    assert result.verified and result.max_abs_diff <= ATOL and result.checked_batches == (2, 1)
    assert_onnx_matches(ort, model, path, torch.randn(3, 3, *size))


@pytest.mark.parametrize("clip", [(8, 32, 32), (10, 40, 36)], ids=["8x32x32", "10x40x36-padded"])
def test_video_swin_onnx_matches_pytorch(ort, tmp_path, clip):
    model = perturbed(VideoSwinTransformer(**SMALL_3D))
    path = tmp_path / "video.onnx"
    result = export_onnx(model, path, (1, 3, *clip), dynamic_batch=True)
    assert result.input_shape == (2, 3, *clip)  # a batch of 1 is traced as 2, so that it stays free
    assert_onnx_matches(ort, model, path, torch.randn(3, 3, *clip))


def test_static_batch_is_fixed_in_the_graph_and_the_model_left_as_it_was(ort, tmp_path):
    model = perturbed(SwinTransformer(**SMALL_2D))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    model.train()
    path = tmp_path / "static.onnx"
    result = export_onnx(model, path, (2, 3, 64, 64))
    assert result.checked_batches == (2,) and "batch fixed at 2" in str(result)
    assert model.training
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [2, 3, 64, 64]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=0, rtol=0)
    assert_onnx_matches(ort, model, path, x)


def test_official_checkpoints_give_official_logits_in_onnx_runtime(ort, golden, tmp_path):
    cases = torch.load(golden / "official_cases.pt", weights_only=True)
    for name, cls in [("official_swin2d_tiny16", SwinTransformer), ("official_swin3d_tiny16", VideoSwinTransformer)]:
        case = cases[name]
        model = cls(**case["config"]).eval()
        tessera.load_checkpoint(model, golden / f"{name}.pth", verbose=False)
        path = tmp_path / f"{name}.onnx"
        export_onnx(model, path, tuple(case["x"].shape))
        torch.testing.assert_close(run_onnx(ort, path, case["x"]), case["logits"], atol=ATOL, rtol=ATOL)


# ---------------------------------------------------------------------------------------
# One model of each ViT family
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_vit_family_onnx_matches_pytorch(ort, tmp_path, name):
    if not tessera.is_model(name):
        pytest.skip(f"{name} is not registered")
    model = perturbed(tessera.create_model(name, img_size=64, num_classes=10, **FAMILIES[name]))
    path = tmp_path / f"{name}.onnx"
    result = export_onnx(model, path, (2, 3, 64, 64), dynamic_batch=True)
    assert result.verified
    assert_onnx_matches(ort, model, path, torch.randn(3, 3, 64, 64))


# ---------------------------------------------------------------------------------------
# torch.export
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_fn, shape",
    [
        (lambda: SwinTransformer(**SMALL_2D), (2, 3, 72, 60)),
        (lambda: VideoSwinTransformer(**SMALL_3D), (2, 3, 10, 40, 36)),
    ],
    ids=["2d", "3d"],
)
def test_exported_program_reloads_with_identical_outputs(tmp_path, model_fn, shape):
    model = perturbed(model_fn())
    path = tmp_path / "model.pt2"
    result = export_program(model, path, shape, dynamic_batch=True)
    assert result.verified and result.checked_batches == (2, 1)
    x = torch.randn(3, *shape[1:])
    with torch.no_grad():
        first = torch.export.load(str(path)).module()(x)
        assert torch.equal(torch.export.load(str(path)).module()(x), first)
        # the model's function (eager inference runs oneDNN's kernels, the program plain ops)
        torch.testing.assert_close(first, model.eval()(x), rtol=1e-5, atol=1e-6)


def test_torch_export_keeps_no_traced_tensors_in_the_window_caches():
    # torch.export traces with fake tensors; Swin's window plans and bias indices (here a
    # window clamped at run time) are cached, and must not keep a trace's tensors
    CACHE.clear()
    model = perturbed(VideoSwinTransformer(**SMALL_3D))
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        torch.export.export(model, (x,))
        out = model(x)
        with tessera.backends.use("reference"):
            torch.testing.assert_close(model(x), out, atol=1e-5, rtol=1e-5)
    cached = []
    for _, _, value, _ in CACHE._entries.values():
        tensors = [value] if isinstance(value, torch.Tensor) else [value.mask, *value.orders.values()]
        cached += [t for t in tensors if t is not None]
    assert cached and all(type(t) is torch.Tensor for t in cached)


# ---------------------------------------------------------------------------------------
# The dispatcher, weights directories, verification and errors
# ---------------------------------------------------------------------------------------


def weights_dir(tmp_path, model, name="swin_t"):
    """A weights directory in tessera's format: config.json and model.safetensors."""
    model.model_name = name
    return tessera.save_pretrained(model, tmp_path / "weights")


def test_cli_exports_a_weights_directory_and_prints_the_check(ort, tmp_path, capsys):
    model = perturbed(tessera.create_model("swin_t", **SMALL_2D))
    directory = weights_dir(tmp_path, model)
    out = tmp_path / "swin.onnx"
    assert main(["export", str(directory), "--output", str(out), "--img-size", "64", "--dynamic-batch"]) == 0
    text = capsys.readouterr().out
    assert f"weights from {directory}" in text and "ONNX opset" in text
    assert "batch dynamic, spatial size fixed at 64x64" in text
    assert "verified with ONNX Runtime (CPU) at batch 2, 1: largest difference from PyTorch" in text
    assert_onnx_matches(ort, model, out, torch.randn(1, 3, 64, 64))


def test_dispatcher_takes_the_format_and_the_clip(tmp_path):
    model = VideoSwinTransformer(**SMALL_3D)
    result = export(model, "torch-export", tmp_path / "v.pt2", clip="4,32,32", verify=False)
    assert result.input_shape == (1, 3, 4, 32, 32) and result.max_abs_diff is None
    assert "not verified" in str(result) and "clip size fixed at 4x32x32" in str(result)
    assert type(torch.export.load(str(tmp_path / "v.pt2"))) is torch.export.ExportedProgram


def test_verification_catches_a_graph_that_differs(tmp_path):
    class TracesOtherwise(torch.nn.Module):
        def forward(self, x):
            return x + 1 if torch.compiler.is_exporting() else x

    with pytest.raises(TesseraError, match=r"differs from the PyTorch model by 1.00e\+00, more than atol 1e-04"):
        export_program(TracesOtherwise(), tmp_path / "c.pt2", (2, 3, 8, 8))
    assert (tmp_path / "c.pt2").exists()


def test_input_shapes_and_their_errors():
    image, video = SwinTransformer(**SMALL_2D), VideoSwinTransformer(**SMALL_3D)
    assert input_shape_for(image) == (1, 3, 64, 64)
    assert input_shape_for(image, img_size=96, batch_size=4) == (4, 3, 96, 96)
    assert input_shape_for(video, clip="8,64,64") == (1, 3, 8, 64, 64)
    assert input_shape_for(video, img_size=112) == (1, 3, 32, 112, 112)
    for clip in ["8,64", "8,x,64", "0,64,64", "8,64,64,64"]:
        with pytest.raises(ConfigError, match="expected three positive integers T,H,W"):
            input_shape_for(video, clip=clip)
    with pytest.raises(ConfigError, match="clip size is for video models"):
        input_shape_for(image, clip="8,64,64")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "swin_tiny", "-o", "x.onnx"], "unknown model 'swin_tiny'; did you mean swin_t"),
        (["export", "video_swin_t", "-o", "x.onnx", "--clip", "8,224"], "clip size '8,224': expected three positive"),
        (["export", "swin_t", "-o", "x.onnx", "--clip", "8,224,224"], "a clip size is for video models"),
        (["export", "swin_t", "-o", "x.bin"], "give --format onnx or --format torch-export"),
        (["export", "swin_t", "-o", "x.pt2", "--opset", "18"], "an opset is for the onnx format"),
        (["export", "swin_t", "-o", "x.onnx", "--opset", "11"], "opset 11: the ONNX exporter writes opset 18 or newer"),
        (["export", "runs/missing", "-o", "x.onnx"], "runs/missing: no such file or directory"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_checkpoint_files_whose_architecture_cannot_be_read_need_the_model_name(tmp_path):
    model = tessera.create_model("vit_t_16", img_size=32, num_classes=3)
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))  # a Swin's would say what it is
    with pytest.raises(CheckpointError, match=r"w.safetensors: cannot tell the architecture.*name the model instead \(--model NAME, or NAME --checkpoint FILE\)"):
        export(tmp_path / "w.safetensors", "onnx", tmp_path / "x.onnx")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "swin"}))
    with pytest.raises(CheckpointError, match="hf: a directory without any of model.safetensors"):
        export(tmp_path / "hf", "onnx", tmp_path / "x.onnx")
    with pytest.raises(UnknownModelError):
        export("nope", "onnx", tmp_path / "x.onnx")


def test_missing_onnx_runtime_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(TesseraError, match=r"pip install 'tessera-vision\[export\]'"):
        export_onnx(SwinTransformer(**SMALL_2D), tmp_path / "x.onnx", (1, 3, 64, 64))
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_cli_exports_full_swin_t_from_a_fresh_process(ort, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tessera", "export", "swin_t", "--format", "onnx", "--output", "swin_t.onnx"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "batch fixed at 1, spatial size fixed at 224x224" in out.stdout
    assert "verified with ONNX Runtime (CPU) at batch 1" in out.stdout and out.stdout.rstrip().endswith("ok")
    session = ort.InferenceSession(str(tmp_path / "swin_t.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape == [1, 1000]


def test_cli_says_it_is_exporting_only_once_the_arguments_hold(tmp_path, capsys):
    assert main(["export", "swin_t", "--format", "onnx", "--output", str(tmp_path / "m.onnx"), "--clip", "4,32,32"]) == 2
    captured = capsys.readouterr()
    assert "exporting" not in captured.out and "clip" in captured.err
    assert not (tmp_path / "m.onnx").exists()
