"""``tessera explain`` and ``tessera windows`` from the command line: model sources, the JSON
record, the pictures and animations written, and one-line errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import tessera
from tessera.cli import main
from tessera.data.video import write_video
from tessera.train.checkpoint import save_weights

SWIN_ARGS = ["embed_dim=16", "depths=(2,2)", "num_heads=(1,2)", "window_size=4", "img_size=32", "num_classes=3"]
VIDEO_ARGS = ["embed_dim=16", "depths=(2,2)", "num_heads=(1,2)", "window_size=(2,4,4)", "num_classes=3"]


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "scene.png"
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(path)
    return path


def trained_run(tmp_path):
    """A run directory as ``tessera train`` leaves it (random weights, the run information)."""
    torch.manual_seed(0)
    model = tessera.create_model("swin_t", embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, img_size=32,
                                 num_classes=3)
    info = {"model": "swin_t", "model_args": model.model_args, "classes": ["cat", "dog", "fox"],
            "data": {"kind": "image", "img_size": 32, "crop_pct": 1.0, "interpolation": "bicubic",
                     "mean": [0.5] * 3, "std": [0.25] * 3}}
    run = tmp_path / "run"
    run.mkdir()
    save_weights(run / "best.safetensors", model.state_dict(), info)
    return run


def test_explain_a_trained_run_prints_json_and_writes_the_picture(tmp_path, image, capsys):
    run = trained_run(tmp_path)
    out = tmp_path / "pictures"
    assert main(["explain", "--checkpoint", str(run), str(image), "--json", "-o", str(out), "--target", "dog"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["class"] == "dog" and record["class_index"] == 1 and 0 < record["score"] < 1
    assert record["method"] == "gradcam" and record["layer"] == "layers.0.blocks.1.norm2"
    # the peak is a pixel of the file (40x48): the 32x32 crop of the 32x38 resize, mapped back
    assert 0 <= record["peak"]["x"] < 40 and 0 <= record["peak"]["y"] < 48 and "t" not in record["peak"]
    (picture,) = record["outputs"]
    assert picture == str(out / "scene.gradcam.png") and Image.open(picture).size[0] > 300
    for method in ("gradcam++", "attention"):
        assert main(["explain", "--checkpoint", str(run / "best.safetensors"), str(image), "--method", method,
                     "-o", str(out), "--query", "3,30"]) == 0
        assert (out / f"scene.{method}.png").exists()
    assert "scene.png: " in capsys.readouterr().out


def test_explain_takes_the_sources_the_other_commands_take(tmp_path, image, capsys):
    """A tessera weights directory (its classes and data config) and --model NAME with a
    foreign-format checkpoint go through the one resolver, as in ``tessera predict``."""
    from tessera.weights import save_pretrained

    torch.manual_seed(0)
    model = tessera.create_model("swin_t", embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, img_size=32,
                                 num_classes=3)
    directory = save_pretrained(model, tmp_path / "weights", classes=["ant", "bee", "cow"],
                                data={"kind": "image", "img_size": 32, "crop_pct": 1.0, "interpolation": "bicubic",
                                      "mean": [0.5] * 3, "std": [0.25] * 3})
    assert main(["explain", "--checkpoint", str(directory), str(image), "--json", "-o", str(tmp_path / "o"),
                 "--target", "bee"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["class"] == "bee" and record["layer"] == "layers.0.blocks.1.norm2"
    torch.save({"model": model.state_dict()}, tmp_path / "plain.pth")
    assert main(["explain", str(image), *SWIN_ARGS, "--model", "swin_t", "--checkpoint", str(tmp_path / "plain.pth"),
                 "--json", "-o", str(tmp_path / "o"), "--target", "2"]) == 0
    again = json.loads(capsys.readouterr().out)  # no class names with these weights: classes by index
    assert again["class"] == "2" and again["class_index"] == 2 and again["layer"] == record["layer"]


def test_explain_a_registered_model_on_a_video(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    write_video(video, np.random.default_rng(0).integers(0, 255, (12, 36, 44, 3), dtype=np.uint8))
    out = tmp_path / "pictures"
    args = ["explain", "--model", "video_swin_t", *VIDEO_ARGS, str(video), "--json", "-o", str(out), "--clip", "6,32"]
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["peak"]) == {"x", "y", "t"} and 0 <= record["peak"]["t"] < 12
    assert record["layer"] == "layers.0.blocks.1.norm2"  # 8x8 tokens at 32x32: the last stage of 7 or more
    assert 0 <= record["peak"]["x"] < 44 and 0 <= record["peak"]["y"] < 36
    strip, animation = map(str, (out / "clip.gradcam.png", out / "clip.gradcam.gif"))
    assert record["outputs"] == [strip, animation]
    gif = Image.open(animation)
    assert gif.n_frames == 6
    assert main([*args, "--animation", "mp4"]) == 0
    assert (out / "clip.gradcam.mp4").stat().st_size > 0


def test_explain_errors_are_one_line(tmp_path, image, capsys):
    run = trained_run(tmp_path)
    cases = [
        (["--checkpoint", str(run), "--target", "emu"],
         "--target 'emu' is not one of the model's classes (cat, dog, fox)"),
        (["--checkpoint", str(run), "--layer", "layers.0.blocks.5"], "no layer 'layers.0.blocks.5'"),
        (["--checkpoint", str(run), "--method", "rollout"], "attention rollout needs a class-token model"),
        (["--checkpoint", str(tmp_path / "nothing")], "nothing: no such file or directory"),
        (["--model", "swin_tt"], "unknown model 'swin_tt'"),
        (["--checkpoint", str(run), "--query", "1"], "--query '1': expected X,Y"),
    ]
    for extra, message in cases:
        assert main(["explain", str(image), "-o", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tessera explain: error: ") and message in err and "\n" not in err, err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["explain", "--checkpoint", str(run), str(bad), str(image), "-o", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: not a readable image" in captured.err and "scene.png: " in captured.out


def test_windows_command_draws_the_block(tmp_path, image, capsys):
    out = tmp_path / "w.png"
    assert main(["windows", str(image), "--model", "swin_t", *SWIN_ARGS, "--img-size", "32", "--stage", "0",
                 "--block", "1", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "grid 8x8 tokens (padded 8x8), window 4x4, shift 2x2, 4 windows" in text and out.exists()
    assert main(["windows", str(image), "--model", "swin_t", *SWIN_ARGS, "--stage", "1", "-o", str(out)]) == 0
    assert "window 4x4, shift none, 1 windows" in capsys.readouterr().out  # a 4x4 map: clamped
    assert main(["windows", str(image), "--model", "swin_t", *SWIN_ARGS, "--stage", "4", "-o", str(out)]) == 2
    assert "stage 4 out of range" in capsys.readouterr().err
    video = tmp_path / "clip.mp4"
    write_video(video, np.zeros((6, 32, 32, 3), np.uint8))
    assert main(["windows", str(video), "--model", "video_swin_t", *VIDEO_ARGS, "--clip", "4,32,32",
                 "-o", str(out)]) == 0
    assert "grid 2x8x8 tokens" in capsys.readouterr().out
