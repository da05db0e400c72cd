"""The training loop end to end on tiny models: image folders through the command line,
evaluate and predict on the result, exact resume, non-finite steps, torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import tessera
from tessera.atomic import atomic_path
from tessera.cli import main
from tessera.errors import CheckpointError, TesseraError
from tessera.train import Trainer, load_recipe, load_trained_model, predict_images, read_run_info
from tessera.train.checkpoint import load_state, save_state

from digit_folders import TINY, write_digit_folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("digits")
    train = write_digit_folder(base / "train")
    (train / "7" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    val = write_digit_folder(base / "val", per_class=4, split="val")
    return train, val


@pytest.mark.slow
def test_any_recipe_trains_on_image_folders_then_evaluate_and_predict(folders, tmp_path, capsys, caplog):
    train, val = folders
    out = tmp_path / "run"
    args = ["train", "--config", "demo", f"data.root={train}", f"data.val_root={val}", f"data.test_root={val}",
            "data.max_bad_fraction=0.1", *TINY, "--output", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "epoch   1/2  train_loss" in stdout and "val_top1" in stdout and "img/s" in stdout
    assert "skipped 1 samples" in stdout
    assert caplog.text.count("corrupt.jpg") == 1  # reported once, though seen every epoch
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "val_top1", "lr", "images_per_s"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert all(r["val_top5"] is None for r in rows)  # 3 classes: top-5 says nothing
    assert rows[-1]["skipped_samples"] == 1
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    info = read_run_info(out / "best.safetensors")
    assert info["classes"] == ["0", "1", "7"] and info["model"] == "swin_t" and info["data"]["img_size"] == 32
    assert info["model_args"]["embed_dim"] == 16 and info["model_args"]["num_classes"] == 3

    # a second run into the same directory must say how to continue instead of overwriting
    assert main(args) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err

    # evaluate: the run directory (best weights) and a weights file both work
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(val), "--json", "--workers", "0"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["num_samples"] == 12 and set(res["per_class_top1"]) == {"0", "1", "7"}
    assert {"top1", "top5", "loss"} <= set(res) and res["top5"] is None  # 3 classes: no top-5
    assert Path(res["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    tested = json.loads((out / "test.json").read_text())  # the run's own test of its best weights
    assert tested["num_samples"] == 12 and tested["top1"] == pytest.approx(res["top1"])
    # the same accuracy as classifying the files one by one
    model, info = load_trained_model(out)
    from PIL import Image

    files = sorted(val.rglob("*.*"))
    preds = predict_images(model, info, [Image.open(f) for f in files], top_k=1)
    hits = sum(p[0][0] == f.parent.name for p, f in zip(preds, files))
    assert res["top1"] == pytest.approx(100.0 * hits / len(files))

    assert main(["evaluate", "--checkpoint", str(out / "last.safetensors"), "--data", str(val), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "top-1" in text and "per-class top-1:" in text and "(4 samples)" in text and "top-5" not in text

    assert main(["predict", "--checkpoint", str(out), str(files[0]), str(files[-1]), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(files[0]))
    assert all(lbl in "017" for line in lines for lbl in [part.split(" ")[0] for part in line.split(": ")[1].split(", ")])
    assert main(["predict", "--checkpoint", str(out), str(train / "7" / "corrupt.jpg")]) == 2
    assert "corrupt.jpg: not a readable image" in capsys.readouterr().err

    # fine-tuning: the trained weights with a new head for two other classes
    other = write_digit_folder(out.parent / "other", classes=("3", "8"), per_class=8)
    tuned = out.parent / "tuned"
    assert main(["train", "--config", "demo", f"data.root={other}", "data.val_root=null", "data.val_split=0", *TINY,
                 f"model.pretrained={out / 'best.safetensors'}", "train.max_steps=1", "--output", str(tuned)]) == 0
    start, after = load_file(out / "best.safetensors"), load_state(tuned / "state.pt")["model"]
    assert after["head.weight"].shape == (2, start["head.weight"].shape[1])
    # one warm-up step (lr 1e-5) away from the pretrained backbone
    assert max((after[k] - v).abs().max().item() for k, v in start.items() if not k.startswith("head.")) < 1e-3
    capsys.readouterr()
    # resuming from the command line: its own recipe, plus overrides
    assert main(["train", "--resume", str(tuned), "train.max_steps=2"]) == 0
    assert f"stopped after step 2, checkpoint saved in {tuned}; continue with: tessera train --resume {tuned}" \
           in capsys.readouterr().out
    assert load_state(tuned / "state.pt")["global_step"] == 2
    assert main(["train", "--resume", str(tuned), "--config", "demo"]) == 2
    assert "leave out --config" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_command_trains_tests_and_predicts(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), *TINY, "schedule.epochs=1", "schedule.warmup_epochs=0"]) == 0
    text = capsys.readouterr().out
    assert "test top-1:" in text and "360 held-out digits" in text
    samples = sorted((out / "samples").glob("*.png"))
    assert len(samples) == 6 and all(f"{s}: true " in text for s in samples)
    assert json.loads((out / "test.json").read_text())["num_samples"] == 360
    assert (out / "metrics.jsonl").exists() and (out / "curves.png").exists()
    # run again into the same directory: the demo replaces its previous run
    assert main(["demo", "--output", str(out), *TINY, "schedule.epochs=1", "schedule.warmup_epochs=0"]) == 0


def augmented_recipe(train: Path, val: Path, *extra: str):
    """Every source of randomness on: crops, RandAugment, erasing, mixup/cutmix, drop path,
    EMA, accumulation."""
    return load_recipe("demo", [
        f"data.root={train}", f"data.val_root={val}", "data.max_bad_fraction=0.1", *TINY,
        "model.args.drop_path_rate=0.1", "augment.randaugment_m=9", "augment.reprob=0.25", "augment.mixup=0.8",
        "augment.cutmix=1.0", "train.ema_decay=0.9", "optim.accum_steps=2", *extra])


@pytest.mark.slow
def test_resume_continues_the_same_run_bitwise(folders, tmp_path):
    train, val = folders
    full = Trainer(augmented_recipe(train, val), tmp_path / "full")
    full.fit()
    # the same run stopped in the middle of its first epoch, then resumed in a new trainer
    # (with data workers this time: the crops do not depend on them)
    first = Trainer(augmented_recipe(train, val, "train.max_steps=3"), tmp_path / "cut")
    summary = first.fit()
    assert not summary["finished"] and summary["steps"] == 3
    assert load_state(tmp_path / "cut" / "state.pt")["step_in_epoch"] == 3
    resumed = Trainer(augmented_recipe(train, val, "data.num_workers=2"), tmp_path / "cut", resume=True)
    assert (resumed.epoch, resumed.step_in_epoch, resumed.global_step) == (0, 3, 3)
    assert resumed.fit()["finished"]

    a, b = load_state(tmp_path / "full" / "state.pt"), load_state(tmp_path / "cut" / "state.pt")
    assert a["global_step"] == b["global_step"] == 2 * full.steps_per_epoch
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    opt_a, opt_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)
    drop = {"images_per_s"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in a["history"]] == \
           [{k: v for k, v in h.items() if k not in drop} for h in b["history"]]
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    la, lb = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "cut" / "last.safetensors")
    assert all(torch.equal(la[k], lb[k]) for k in la)


@pytest.mark.slow
def test_non_finite_steps_are_skipped_then_stop_the_run(folders, tmp_path):
    train, val = folders
    recipe = load_recipe("demo", [f"data.root={train}", f"data.val_root={val}", "data.max_bad_fraction=0.1", *TINY,
                                  "train.max_nan_steps=3"])
    trainer = Trainer(recipe, tmp_path / "run")
    loss_fn, calls = trainer.criterion, {"n": 0}

    def poisoned(logits, target):
        calls["n"] += 1
        loss = loss_fn(logits, target)
        # one NaN step in the first epoch, then only bad steps from the second epoch on:
        # infinite, minus infinite, NaN
        if calls["n"] == 2:
            return loss * float("nan")
        if calls["n"] > trainer.steps_per_epoch:
            return loss * (float("inf"), -float("inf"), float("nan"))[calls["n"] % 3]
        return loss

    trainer.criterion = poisoned
    before = {}

    def snapshot(step_fn):
        def wrapped(batches):
            before[trainer.global_step] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            return step_fn(batches)
        return wrapped

    trainer.train_step = snapshot(trainer.train_step)
    with pytest.raises(TesseraError, match=r"stopped: 3 steps in a row had a non-finite loss.*last good checkpoint"):
        trainer.fit()
    assert trainer.nan_total == 4 and trainer.history[0]["nan_steps"] == 1
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["nan_steps"] == 1
    # the skipped step changed nothing
    assert all(torch.equal(before[1][k], before[2][k]) for k in before[1])
    # the checkpoint of epoch 1 is intact and is what the model still holds
    last = load_file(tmp_path / "run" / "last.safetensors")
    assert all(torch.equal(last[k], v) for k, v in trainer.model.state_dict().items())
    assert load_state(tmp_path / "run" / "state.pt")["global_step"] == trainer.steps_per_epoch


def test_atomic_writes_keep_the_old_file_on_failure(tmp_path):
    target = tmp_path / "state.pt"
    save_state(target, {"step": 1, "w": torch.ones(2)})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a checkp")
            raise RuntimeError("killed while writing")
    assert load_state(target)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # an ordinary file, not a private temporary


def test_foreign_files_are_refused_clearly(tmp_path):
    save_file({"w": torch.zeros(1)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="holds no run information"):
        read_run_info(tmp_path / "plain.safetensors")
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a tessera training state"):
        load_state(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="without best.safetensors or last.safetensors"):
        load_trained_model(tmp_path)


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    """Two CPU processes (gloo) with the same global batch give the same weights as one
    process. The device-side randomness (augmentation, mixup, drop path) is off, since each
    process draws its own; the workers' crops are seeded per sample and stay on."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    train = write_digit_folder(tmp_path / "train")
    val = write_digit_folder(tmp_path / "val", per_class=5, split="val")  # 15: not a multiple of 2
    common = ["train", "--config", "demo", f"data.root={train}", f"data.val_root={val}", *TINY,
              "schedule.epochs=1", "schedule.warmup_epochs=0", "train.threads=1", "optim.accum_steps=2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "tessera", *common, "--output", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "tessera", *common,
                          "--output", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    a, b = load_state(tmp_path / "one" / "state.pt"), load_state(tmp_path / "two" / "state.pt")
    assert a["global_step"] == b["global_step"] == 6 and b["world_size"] == 2
    # validation is shared out and summed: the same scores over the same 15 images
    ha, hb = a["history"][0], b["history"][0]
    assert ha["val_top1"] == hb["val_top1"] and ha["val_loss"] == pytest.approx(hb["val_loss"], rel=1e-4)
    assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=1e-4)
    info = json.loads((tmp_path / "one" / "run.json").read_text())
    torch.manual_seed(info["recipe"]["train"]["seed"])
    start = tessera.create_model(info["model"], **info["model_args"]).state_dict()
    assert max((a["model"][k] - start[k]).abs().max().item() for k in start) > 1e-3  # training moved them
    for k, w in a["model"].items():
        # The two runs add the same gradients in another order (each process its half, then
        # the all-reduce): fp32 rounding, about 1e-7 of the gradient per step, which Adam's
        # per-element normalisation can enlarge where a gradient nearly cancels. Against the
        # whole update of each tensor that stays far below 1e-3; a real difference in what
        # was computed (another split of the batch, a missed average) is of the size of the
        # update itself.
        moved, diff = (w - start[k]).norm().item(), (b["model"][k] - w).norm().item()
        assert diff <= 1e-3 * moved + 1e-6 * w.norm().item(), (k, diff, moved)


def test_too_many_unreadable_images_stop_the_run(tmp_path, capsys, caplog):
    train = write_digit_folder(tmp_path / "train", per_class=4)
    for i in range(3):
        (train / "0" / f"empty{i}.png").write_bytes(b"")
    code = main(["train", "--config", "demo", f"data.root={train}", "data.val_root=null", "data.val_split=0", *TINY,
                 "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("tessera train: error: ")
    assert "of the 15 train samples could not be read (more than 1.0%, data.max_bad_fraction)" in err[-1]
    reported = [r.getMessage() for r in caplog.records if "skipped an unreadable train sample" in r.getMessage()]
    assert reported and all("empty" in m for m in reported)  # each named with its path, then the stop


def test_mixed_precision_settings():
    from tessera.errors import ConfigError
    from tessera.train.engine import amp_settings

    cpu = torch.device("cpu")
    assert amp_settings("auto", cpu) == (None, False) and amp_settings("bf16", cpu) == (torch.bfloat16, False)
    assert amp_settings("fp16", torch.device("cuda")) == (torch.float16, True)
    with pytest.raises(ConfigError, match="train.amp=fp16 needs a GPU"):
        amp_settings("fp16", cpu)
