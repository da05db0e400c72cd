"""The commands with published weights served by a local stand-in (through
TESSERA_WEIGHTS_MIRROR, under the real URL paths): predict by name and by an official file,
videos and their timelines, evaluate on ImageNet-style synset folders, export of a run,
benchmark by name, and fine-tuning from a run's weights.

The stand-ins are the registered models made small; their heads are set so that one class
wins, which the commands must print by name."""

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import tessera
from tessera.cli import main
from tessera.data.video import write_video
from tessera.labels import label_names
from tessera.train.checkpoint import save_weights
from tessera.weights import zoo
from tessera.weights.zoo import VideoViews
import weights_server

TINY_SWIN = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2))
TINY_VIDEO = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=(2, 4, 4))
GOLDEN_RETRIEVER = 207
server = weights_server.server  # the fixture


def winning(model: torch.nn.Module, index: int) -> torch.nn.Module:
    """The model, its head made to pick class ``index`` whatever the input."""
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.bias[index] = 20.0
    return model


def tiny_entry(monkeypatch, name: str, **changes) -> zoo.Pretrained:
    """Make the registered entry's model small (its source, URL included, stays as it is)."""
    entry = dataclasses.replace(zoo.get_pretrained(name), **changes)
    monkeypatch.setitem(zoo._ENTRIES, name, entry)
    return entry


def saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (120 + 10 * i, 160, 3), dtype=np.uint8)).save(folder / f"p{i}.jpg")
    return folder


@pytest.fixture
def swin_t_served(server, monkeypatch):
    """swin_t.ms_in1k, small, served in the official layout under its real URL."""
    entry = tiny_entry(monkeypatch, "swin_t.ms_in1k", args=TINY_SWIN)
    model = winning(tessera.create_model("swin_t", **TINY_SWIN), GOLDEN_RETRIEVER)
    path = server.add_url(entry.sources[0].url, saved({"model": model.state_dict()}))
    return server, path, model


def test_predict_by_name_prints_imagenet_names(swin_t_served, photos, capsys):
    srv, path, _ = swin_t_served
    assert main(["predict", "--model", "swin_t.ms_in1k", str(photos / "p0.jpg"), "--top-k", "2"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"{photos / 'p0.jpg'}: golden retriever (1.000), ")
    assert out.split(", ")[1].split(" (")[0] in label_names("imagenet-1k")
    # a folder and a glob, batched, as JSON
    assert main(["predict", "--model", "swin_t.ms_in1k", str(photos), str(photos / "*.jpg"), "--json",
                 "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 6 and {r["top_k"][0]["label"] for r in rows} == {"golden retriever"}
    assert rows[0]["top_k"][0]["index"] == GOLDEN_RETRIEVER
    assert srv.gets(path) == 1  # downloaded once, then read from the cache


def test_predict_batches_one_forward_pass_per_batch(swin_t_served, photos, monkeypatch):
    from tessera.predict import predict_image_files

    resolved = tessera.resolve_model("swin_t.ms_in1k", default_tag=True)
    calls = []
    resolved.model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    files = sorted(str(p) for p in photos.iterdir()) * 3
    results = list(predict_image_files(resolved.model, resolved.data, resolved.classes, files, batch_size=4))
    assert calls == [4, 4, 1] and all(r.top[0][1] == "golden retriever" for r in results)


def test_predict_an_official_checkpoint_file(tmp_path, photos, capsys):
    model = winning(tessera.create_model("swin_t", **TINY_SWIN), 1)
    file = tmp_path / "swin_tiny_patch4_window7_224.pth"
    file.write_bytes(saved({"model": model.state_dict()}))
    assert main(["predict", "--checkpoint", str(file), str(photos / "p1.jpg"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"{photos / 'p1.jpg'}: goldfish (1.000)"


@pytest.fixture
def video_served(server, monkeypatch):
    """video_swin_t.k400_1k, small and with few views, served in the mmaction2 layout."""
    views = VideoViews(clip_len=4, frame_interval=2, num_clips=2, num_crops=1)
    entry = tiny_entry(monkeypatch, "video_swin_t.k400_1k", args=TINY_VIDEO, video=views, img_size=32)
    model = winning(tessera.create_model("video_swin_t", **TINY_VIDEO), label_names("kinetics-400").index(
        "playing guitar"))
    state = {f"backbone.{k}": v for k, v in model.state_dict().items() if not k.startswith("head.")}
    state.update({"cls_head.fc_cls.weight": model.head.weight, "cls_head.fc_cls.bias": model.head.bias})
    return server.add_url(entry.sources[0].url, saved({"state_dict": state, "meta": {}}))


def test_predict_videos_by_name_with_kinetics_names(video_served, tmp_path, capsys):
    folder = tmp_path / "clips"
    rng = np.random.default_rng(1)
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name, rng.integers(0, 255, (20, 48, 64, 3), dtype=np.uint8))
    assert main(["predict", "--model", "video_swin_t.k400_1k", str(folder / "a.mp4"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"{folder / 'a.mp4'}: playing guitar (1.000)"
    assert main(["predict", "--model", "video_swin_t.k400_1k", str(folder), "--top-k", "1"]) == 0  # a folder of videos
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    png = tmp_path / "strip.png"
    assert main(["predict", "--model", "video_swin_t.k400_1k", str(folder / "b.mp4"), "--timeline", str(png)]) == 0
    out = capsys.readouterr().out.splitlines()
    segments = [line for line in out if " s: " in line]
    assert len(segments) == 3 and all("playing guitar (1.000)" in s for s in segments)  # 20 frames, 8 per clip
    assert png.is_file() and Image.open(png).size[0] > 200


def test_evaluate_maps_synset_folders_to_the_label_set(swin_t_served, tmp_path, photos, capsys):
    data = tmp_path / "val"
    for synset, n in (("n02099601", 2), ("n01443537", 1)):  # golden retriever, goldfish
        (data / synset).mkdir(parents=True)
        for i in range(n):
            Image.open(photos / f"p{i}.jpg").save(data / synset / f"{i}.jpg")
    assert main(["evaluate", "--model", "swin_t.ms_in1k", "--data", str(data), "--workers", "0", "--json",
                 "--confusion", str(tmp_path / "c.png")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["num_samples"] == 3 and res["top1"] == pytest.approx(200 / 3)
    assert res["per_class_top1"] == {"goldfish": 0.0, "golden retriever": 100.0}


def test_export_a_run_directory(tmp_path, capsys):
    model = tessera.create_model("swin_t", img_size=32, window_size=4, **TINY_SWIN, num_classes=3)
    run = tmp_path / "runs" / "demo"
    run.mkdir(parents=True)
    info = {"model": "swin_t", "model_args": model.model_args, "classes": ["a", "b", "c"],
            "data": {"kind": "image", "img_size": 32, "crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3}}
    save_weights(run / "best.safetensors", model.state_dict(), info)
    for source in (run, run / "best.safetensors"):
        assert main(["export", str(source), "--output", str(tmp_path / "m.onnx")]) == 0
        out = capsys.readouterr().out
        assert f"weights from {run / 'best.safetensors'}" in out and "(1, 3, 32, 32)" in out
        assert (tmp_path / "m.onnx").stat().st_size > 10_000
    # convert keeps the class names and the preprocessing; summary takes the run and the directory
    assert main(["convert", str(run), str(tmp_path / "converted")]) == 0
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["classes"] == ["a", "b", "c"] and config["data"]["img_size"] == 32
    capsys.readouterr()
    for source in (run, tmp_path / "converted"):
        assert main(["summary", str(source)]) == 0
        assert "(1, 3, 32, 32)" in capsys.readouterr().out


def test_benchmark_by_name_loads_the_weights(swin_t_served, capsys):
    srv, path, _ = swin_t_served
    assert main(["benchmark", "swin_t.ms_in1k", "--batch-size", "1", "--warmup", "0", "--iters", "1",
                 "--rounds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "swin_t.ms_in1k" and srv.gets(path) == 1


def test_finetuning_from_published_weights_by_name(swin_t_served, tmp_path):
    from tessera.train import Trainer, load_recipe

    _, _, served = swin_t_served
    recipe = load_recipe("finetune", ["model.pretrained=swin_t.ms_in1k", "data.root=digits:train",
                                      "data.val_root=digits:val", "data.batch_size=8", "data.num_workers=0"])
    trainer = Trainer(recipe, tmp_path / "tuned")
    assert trainer.model.model_args["embed_dim"] == 16 and trainer.model.num_classes == 10
    torch.testing.assert_close(trainer.model.patch_embed.proj.weight, served.patch_embed.proj.weight)
    assert sorted(trainer.load_report.reinitialized) == ["head.bias", "head.weight"]


def test_finetuning_from_a_run_builds_the_model_it_records(tmp_path):
    from tessera.train import Trainer, load_recipe

    pretrained = tessera.create_model("swin_t", img_size=32, window_size=4, embed_dim=16, depths=(2, 2),
                                      num_heads=(1, 2), num_classes=10)
    info = {"model": "swin_t", "model_args": pretrained.model_args, "classes": [str(i) for i in range(10)],
            "data": {"kind": "image", "img_size": 32}}
    save_weights(tmp_path / "best.safetensors", pretrained.state_dict(), info)
    recipe = load_recipe("finetune", [f"model.pretrained={tmp_path / 'best.safetensors'}", "data.root=digits:train",
                                      "data.val_root=digits:val",
                                      "data.img_size=32", "data.batch_size=8", "data.num_workers=0"])
    trainer = Trainer(recipe, tmp_path / "tuned")  # the recipe's model is a full Swin-T: the run's is used
    args = trainer.model.model_args
    assert (args["embed_dim"], args["depths"], args["window_size"], args["drop_path_rate"]) == (16, (2, 2), 4, 0.1)
    tuned = trainer.model.state_dict()
    assert all(torch.equal(v, tuned[k]) for k, v in pretrained.state_dict().items()
               if not k.startswith("head.") and "relative_position_index" not in k)
    assert "the model is swin_t with the arguments" in trainer.load_report.notes[0]
