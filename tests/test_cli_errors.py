"""Every command, every kind of bad input: a truncated, corrupted or missing file, weights of
another architecture, a recipe key that does not exist or has the wrong type, an unknown
model (with the closest names), an argument argparse refuses, an image or a video that
cannot be read, a size smaller than one patch, a place that cannot be written. Each gives
one line on stderr that names the culprit, exit status 2 and no traceback."""

import dataclasses
import json
import shutil

import pytest
import torch

import tessera
from tessera.cli import main
from tessera.train import load_recipe
from tessera.train.checkpoint import save_state, save_weights
from tessera.train.recipe import DataConfig

SMALL = dict(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), num_classes=3)
RECIPE = ["data.root=digits:train", "data.val_root=null", "model.args.embed_dim=16", "model.args.depths=[2,2]",
          "model.args.num_heads=[1,2]"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad files, by name."""
    d = tmp_path_factory.mktemp("files")
    model = tessera.create_model("swin_t", **SMALL)
    info = {"model": "swin_t", "model_args": model.model_args, "classes": ["0", "1", "2"],
            "data": {"img_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "kind": "image"}}
    save_weights(d / "good.safetensors", model.state_dict(), info)
    data = (d / "good.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (d / "corrupted.safetensors").write_bytes(data[:8] + b"#" * 64 + data[72:])
    wide = tessera.create_model("swin_t", **{**SMALL, "embed_dim": 24})
    save_weights(d / "wide.safetensors", wide.state_dict(), info)  # the run information says embed_dim=16
    torch.save(model.state_dict(), d / "weights.pth")
    (d / "truncated.pth").write_bytes((d / "weights.pth").read_bytes()[:4000])
    (d / "unknown_key.yaml").write_text("base: demo\noptim:\n  lrr: 0.1\n")
    (d / "broken.yaml").write_text("optim: [1, 2\n")
    (d / "text.jpg").write_text("not an image\n")
    (d / "empty.png").write_bytes(b"")
    from PIL import Image

    Image.new("RGB", (32, 32)).save(d / "image.png")
    recipe = load_recipe("demo", RECIPE).to_dict()
    for name, state in [("run_truncated", None), ("run_wide", wide.state_dict()), ("run_badjson", None)]:
        (d / name).mkdir()
        (d / name / "run.json").write_text(json.dumps({"recipe": recipe}))
    (d / "run_truncated" / "state.pt").write_bytes((d / "truncated.pth").read_bytes())
    save_state(d / "run_wide" / "state.pt", {"model": wide.state_dict(), "optimizer": {}, "scaler": {}, "ema": None})
    (d / "run_badjson" / "run.json").write_text("{not json")
    (d / "no_weights").mkdir()
    # a video model, videos that cannot be read, annotation lists
    video = tessera.create_model("video_swin_t", embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 4, 4),
                                 num_classes=3)
    clips = DataConfig(kind="video", img_size=32, clip_len=4, frame_interval=2, num_clips=1, num_crops=1)
    save_weights(d / "video.safetensors", video.state_dict(),
                 {**info, "model": "video_swin_t", "model_args": video.model_args,
                  "data": {**dataclasses.asdict(clips), "mean": [0.5] * 3, "std": [0.5] * 3}})
    (d / "garbage.mp4").write_bytes(b"\x00\x01 not a video")
    (d / "no_frames").mkdir()
    (d / "missing.txt").write_text("gone.mp4 0\n")
    (d / "malformed.txt").write_text("a.mp4\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


#: (command line, what the message names); ``{d}`` is the folder of :func:`files`, ``{o}`` a fresh one
CASES = [
    # train: recipes, models, checkpoints, states, data, devices, argparse
    (["train", "--config", "demo", "optim.lr=abc", "-o", "{o}"], "optim.lr: expected a number, got 'abc'"),
    (["train", "--config", "demo", "optim.lrr=1", "-o", "{o}"], "unknown key 'optim.lrr' (did you mean optim.lr?)"),
    (["train", "--config", "{d}/unknown_key.yaml", "-o", "{o}"], "unknown key 'optim.lrr'"),
    (["train", "--config", "{d}/broken.yaml", "-o", "{o}"], "broken.yaml' is not valid YAML"),
    (["train", "--config", "no_such_recipe", "-o", "{o}"], "no recipe 'no_such_recipe'"),
    (["train", "--config", "demo", "model.name=swin_tt", "-o", "{o}"], "unknown model 'swin_tt'; did you mean swin_t"),
    (["train", "--config", "demo", "model.args.windows=3", "-o", "{o}"], "cannot build swin_t with"),
    (["train", "--config", "demo", *RECIPE, "model.pretrained={d}/truncated.pth", "-o", "{o}"], "truncated.pth"),
    (["train", "--config", "demo", *RECIPE, "model.pretrained={d}/missing.pth", "-o", "{o}"], "missing.pth: no such"),
    (["train", "--config", "demo", "data.root={d}/no_such_dir", "-o", "{o}"], "no_such_dir: no such directory"),
    (["train", "--config", "demo", "train.device=gpu", "-o", "{o}"], "device 'gpu'"),
    (["train", "--config", "demo", *RECIPE, "data.img_size=2", "-o", "{o}"], "smaller than one patch"),
    (["train", "--resume", "{d}/no_such_run"], "no_such_run: not a run directory"),
    (["train", "--resume", "{d}/run_truncated"], "run_truncated/state.pt: not a readable checkpoint"),
    (["train", "--resume", "{d}/run_wide"], "run_wide/state.pt: does not fit this run's model"),
    (["train", "--resume", "{d}/run_badjson"], "run_badjson/run.json: not a run description"),
    (["train", "--config", "demo", "--epochs", "3"], "unrecognized arguments: --epochs"),
    # evaluate
    (["evaluate", "--checkpoint", "{d}/truncated.safetensors", "--data", "digits"], "truncated.safetensors: not a"),
    (["evaluate", "--checkpoint", "{d}/corrupted.safetensors", "--data", "digits"], "corrupted.safetensors: not a"),
    (["evaluate", "--checkpoint", "{d}/wide.safetensors", "--data", "digits"], "wide.safetensors: the checkpoint does"),
    # a bare checkpoint is read (its architecture from the weights): the data must have its classes
    (["evaluate", "--checkpoint", "{d}/weights.pth", "--data", "digits"], "digits: its classes"),
    (["evaluate", "--data", "digits"], "give --model NAME.TAG (published weights) or --checkpoint"),
    (["evaluate", "--model", "deepvit_s", "--data", "digits"], "deepvit_s has no trained weights"),
    (["evaluate", "--checkpoint", "{d}/missing.safetensors", "--data", "digits"], "missing.safetensors: no such"),
    (["evaluate", "--checkpoint", "{d}/no_weights", "--data", "digits"], "no_weights: a directory without"),
    (["evaluate", "--checkpoint", "{d}/good.safetensors", "--data", "{d}/no_such_dir"], "no_such_dir: no such"),
    (["evaluate", "--checkpoint", "{d}/good.safetensors"], "the following arguments are required: --data"),
    (["evaluate", "--checkpoint", "{d}/good.safetensors", "--data", "digits", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--checkpoint", "{d}/good.safetensors", "--data", "digits", "--device", "gpu"], "device 'gpu'"),
    # predict
    (["predict", "--checkpoint", "{d}/truncated.safetensors", "{d}/image.png"], "truncated.safetensors: not a"),
    (["predict", "--checkpoint", "{d}/good.safetensors", "{d}/text.jpg"], "text.jpg: not a readable image"),
    (["predict", "--checkpoint", "{d}/good.safetensors", "{d}/empty.png"], "empty.png: not a readable image"),
    (["predict", "--checkpoint", "{d}/good.safetensors", "{d}/missing.png"], "missing.png: not a readable image"),
    (["predict", "--checkpoint", "{d}/good.safetensors", "{d}/image.png", "--top-k", "0"], "--top-k"),
    (["predict", "--checkpoint", "{d}/good.safetensors"], "the following arguments are required: INPUT"),
    (["predict", "{d}/image.png"], "give --model NAME.TAG (published weights) or --checkpoint"),
    (["predict", "--model", "swin_t.in1k", "{d}/image.png"], "swin_t has no weights tagged 'in1k'; its tags: ms_in1k"),
    (["predict", "--model", "swim_t.ms_in1k", "{d}/image.png"], "unknown model 'swim_t'; did you mean swin_t"),
    (["predict", "--checkpoint", "{d}/good.safetensors", "{d}/*.webp"], "*.webp: the pattern matches no file"),
    (["predict", "--checkpoint", "{d}/good.safetensors", "{d}/image.png", "--timeline"], "--timeline is for video"),
    (["predict", "--model", "vit_t_16", "--checkpoint", "{d}/good.safetensors", "{d}/image.png"],
     "names its model itself; leave out the model name (vit_t_16)"),
    (["predict", "--checkpoint", "{d}/no_weights", "{d}/image.png"], "no_weights: a directory without weights"),
    (["train", "--config", "demo", *RECIPE, "-o", "{d}/text.jpg/run"], "text.jpg/run: Not a directory"),
    # videos: make-moving-digits, evaluate and predict
    (["make-moving-digits", "{d}/text.jpg"], "text.jpg: not a directory"),
    (["make-moving-digits", "{d}/text.jpg/sub"], "text.jpg/sub: Not a directory"),
    (["make-moving-digits", "{o}", "--per-class", "0"], "videos per class, not 0"),
    (["make-moving-digits", "{o}", "--splits", "tests"], "invalid choice: 'tests'"),
    (["predict", "--checkpoint", "{d}/video.safetensors", "{d}/garbage.mp4"], "garbage.mp4: not a readable video"),
    (["predict", "--checkpoint", "{d}/video.safetensors", "{d}/no_frames"], "a folder without frame images"),
    (["predict", "--checkpoint", "{d}/video.safetensors", "{d}/gone.mp4"], "gone.mp4: not a readable video (no such"),
    (["evaluate", "--checkpoint", "{d}/video.safetensors", "--data", "{d}/garbage.mp4"], "one video, not a data set"),
    (["evaluate", "--checkpoint", "{d}/video.safetensors", "--data", "{d}/missing.txt", "--workers", "0"],
     "missing.txt: none of its 1 samples could be read"),
    (["evaluate", "--checkpoint", "{d}/video.safetensors", "--data", "{d}/malformed.txt"], "malformed.txt:1: expected"),
    (["evaluate", "--checkpoint", "{d}/video.safetensors", "--data", "{d}/no_frames"], "no_frames: no videos found"),
    (["evaluate", "--checkpoint", "{d}/video.safetensors", "--data", "digits"], "digits: no such directory"),
    (["evaluate", "--checkpoint", "{d}/video.safetensors", "--data", "moving_digits", "--clips", "0"], "--clips"),
    (["evaluate", "--checkpoint", "{d}/video.safetensors", "--data", "moving_digits", "--crops", "2"], "--crops"),
    # convert and inflate
    (["convert", "{d}/truncated.pth", "{o}"], "truncated.pth: not a readable checkpoint (truncated or corrupted?)"),
    (["convert", "{d}/missing.pth", "{o}"], "missing.pth: no such file"),
    (["convert", "{d}/corrupted.safetensors", "{o}"], "corrupted.safetensors: not a readable safetensors file"),
    (["convert", "{d}/weights.pth", "{o}", "--model", "swin_tt"], "unknown model 'swin_tt'; did you mean swin_t"),
    (["convert", "{d}/weights.pth", "{o}", "--model", "vit_t_16"], "weights.pth: the checkpoint does not fit"),
    (["convert", "{d}/weights.pth", "{o}", "--model", "swin_t", "embed_dim=abc"], "cannot build swin_t with embed_dim"),
    (["convert", "{d}/weights.pth", "{d}/text.jpg/out"], "text.jpg/out: Not a directory"),
    (["inflate", "{d}/truncated.pth", "{o}", "--model", "video_swin_t"], "truncated.pth: not a readable checkpoint"),
    (["inflate", "{d}/weights.pth", "{o}", "--model", "video_swinn_t"], "did you mean video_swin_t"),
    (["inflate", "{d}/weights.pth", "{o}", "--model", "video_swin_t", "window_size=0"], "cannot build video_swin_t"),
    (["inflate", "{d}/weights.pth", "{o}"], "the following arguments are required: --model"),
    # export
    (["export", "swin_tt", "-o", "{o}/m.onnx"], "unknown model 'swin_tt'; did you mean swin_t"),
    (["export", "swin_t", "--checkpoint", "{d}/truncated.pth", "-o", "{o}/m.onnx"], "truncated.pth: not a readable"),
    (["export", "swin_t", "--checkpoint", "{d}/missing.pth", "-o", "{o}/m.onnx"], "missing.pth: no such file"),
    (["export", "swin_t", "--checkpoint", "{d}/wide.safetensors", "-o", "{o}/m.onnx"], "wide.safetensors: the check"),
    (["export", "{d}/no_weights", "-o", "{o}/m.onnx"], "no_weights: a directory without weights"),
    (["export", "swin_t.ms_in1k_nope", "-o", "{o}/m.onnx"], "swin_t has no weights tagged 'ms_in1k_nope'"),
    (["list", "--markdown"], "--markdown and --json are for --pretrained"),
    (["export", "swin_t", "--clip", "1,2", "-o", "{o}/m.onnx"], "clip size '1,2'"),
    (["export", "swin_t", "--img-size", "2", "-o", "{o}/m.onnx"], "smaller than one patch"),
    (["export", "swin_t", "--img-size", "-3", "-o", "{o}/m.onnx"], "--img-size"),
    (["export", "swin_t", "-o", "{o}/m.txt"], "m.txt: give --format onnx"),
    # summary, benchmark, list, and no command at all
    (["summary", "swin_tiny"], "unknown model 'swin_tiny'; did you mean swin_t"),
    (["summary", "swin_t", "--img-size", "2"], "smaller than one patch"),
    (["summary", "swin_t", "--clip", "4,32,32"], "a clip size is for video models"),
    (["summary", "video_swin_t", "--clip", "a,b"], "clip size 'a,b'"),
    (["summary", "swin_t", "--num-classes", "x"], "--num-classes"),
    (["benchmark", "swin_tt"], "unknown model 'swin_tt'"),
    (["benchmark", "swin_t", "--img-size", "2", "--warmup", "0", "--iters", "1", "--rounds", "1"], "smaller than one"),
    (["benchmark", "swin_t", "--clip", "4,32,32"], "--clip is for video models"),
    (["benchmark", "swin_t", "--rounds", "0"], "--rounds"),
    (["list", "--long"], "unrecognized arguments: --long"),
    (["fit"], "invalid choice: 'fit'"),
]
if not torch.cuda.is_available():
    CASES.append((["benchmark", "swin_t", "--device", "cuda"], "device 'cuda': no CUDA device is available"))


@pytest.mark.parametrize("argv,names", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_line_naming_it(files, tmp_path, capsys, argv, names):
    argv = [a.format(d=files, o=tmp_path / "out") for a in argv]
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    prog = "tessera" if argv[0] == "fit" else f"tessera {argv[0]}"
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err
    assert names.format(d=files) in lines[0], lines[0]
    assert not (tmp_path / "out" / "config.json").exists()  # nothing written on an error


def test_debug_shows_the_traceback(files, capsys):
    with pytest.raises(tessera.errors.CheckpointError, match="truncated.safetensors"):
        main(["--debug", "evaluate", "--checkpoint", str(files / "truncated.safetensors"), "--data", "digits"])
