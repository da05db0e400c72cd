"""``tessera train`` with the ADE20K UperNet recipe on a tiny ADE20K-layout folder: it trains,
validates with sliding windows, is evaluated and predicts; killed mid-run and resumed, it
ends with the weights of a run that was never stopped. Real processes, as a user runs them."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_crash_safety import environment, finish, halted, tessera

from tessera.train.checkpoint import load_state, read_run_info

TINY_UPERNET = ("model.args={channels: 16, aux_channels: 8, backbone_args: {embed_dim: 8, depths: [2, 2, 2, 2], "
                "num_heads: [1, 1, 2, 2], window_size: 4, drop_path_rate: 0.1}}")


def write_ade_folder(root: Path, train: int = 8, val: int = 2) -> Path:
    """ADEChallengeData2016 in small: 40x56 images of coloured rectangles on a noisy ground,
    their labels 1-3 (0 "other" around them, reduced away)."""
    rng = np.random.default_rng(0)
    colours = {1: (200, 40, 40), 2: (40, 200, 40), 3: (40, 40, 200)}
    for split, count in (("training", train), ("validation", val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(count):
            labels = np.zeros((40, 56), np.uint8)
            image = rng.integers(0, 60, (40, 56, 3)).astype(np.uint8)
            for c in (1, 2, 3):
                y, x = rng.integers(0, 24), rng.integers(0, 40)
                labels[y : y + 16, x : x + 16] = c
            for c, colour in colours.items():
                image[labels == c] = colour
            Image.fromarray(image).save(root / "images" / split / f"ADE_{split}_{i:08d}.jpg", quality=95)
            Image.fromarray(labels).save(root / "annotations" / split / f"ADE_{split}_{i:08d}.png")
    return root


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    return write_ade_folder(tmp_path_factory.mktemp("ade") / "ADEChallengeData2016")


def train_args(ade: Path, *extra: str) -> list[str]:
    """2 steps of 4 crops per epoch, 6 steps: 3 epochs, each validated with sliding windows."""
    return ["train", "--config", "upernet_swin_t_ade20k", "model.pretrained=null", f"data.root={ade}",
            f"data.val_root={ade}", TINY_UPERNET, "data.crop_size=[32, 32]", "data.img_scale=[64, 32]",
            "data.batch_size=4", "data.num_workers=0", "data.test_mode=slide", "data.test_stride=[16, 16]",
            "schedule.iters=6", "schedule.warmup_iters=2", "optim.lr=1e-3", "train.eval_every=1",
            "train.save_every_steps=2", "train.threads=1", "train.deterministic=true", *extra]


@pytest.mark.slow
def test_train_evaluate_predict_and_resume_on_an_ade20k_folder(ade, tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "killed"
    ref_proc = tessera(*train_args(ade, "--output", str(reference)))

    # killed (SIGKILL) in the middle of the second epoch, after a checkpoint; then resumed
    proc = halted(train_args(ade, "--output", str(run)), "step 3")
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    proc.communicate()
    assert load_state(run / "state.pt")["global_step"] == 2
    out = finish(tessera("train", "--resume", str(run)))
    assert "done: 3 epochs, 6 steps" in out and "best validation mIoU" in out

    ref_out = finish(ref_proc)
    assert "done: 3 epochs, 6 steps" in ref_out
    a, b = load_state(reference / "state.pt"), load_state(run / "state.pt")
    assert a["global_step"] == b["global_step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    wa, wb = load_file(reference / "last.safetensors"), load_file(run / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[-1]["step"] == 6
    for r in rows:
        assert 0 <= r["val_miou"] <= 100 and 0 <= r["val_acc"] <= 100 and r["val_loss"] > 0
    assert (run / "curves.png").stat().st_size > 0
    info = read_run_info(run / "best.safetensors")
    assert info["task"] == "segmentation" and len(info["classes"]) == 150 and info["data"]["test_mode"] == "slide"
    assert info["val_miou"] == max(r["val_miou"] for r in rows)

    # evaluate: the same sliding windows as validation, then multi-scale + flip
    res = json.loads(finish(tessera("evaluate", "--checkpoint", str(run / "last.safetensors"), "--data",
                                    f"{ade}:validation", "--json")))
    assert res["miou"] == pytest.approx(rows[-1]["val_miou"]) and res["num_samples"] == 2
    assert "sliding 32x32 windows, stride 16x16" in res["protocol"] and Path(res["confusion_png"]).exists()
    assert set(res["per_class"]["wall"]) == {"iou", "acc", "dice"}
    text = finish(tessera("evaluate", "--checkpoint", str(run), "--data", str(ade), "--aug-test"))
    assert "mIoU" in text and "ratios 0.5, 0.75, 1, 1.25, 1.5, 1.75 + flips" in text

    # predict: an overlay and a label map whose values are the classes predicted
    image = next((ade / "images" / "validation").iterdir())
    out = finish(tessera("predict", "--checkpoint", str(run), str(image), "-o", str(tmp_path / "pred")))
    labels = np.array(Image.open(tmp_path / "pred" / f"{image.stem}_labels.png"))
    overlay = Image.open(tmp_path / "pred" / f"{image.stem}_overlay.png")
    assert labels.shape == (40, 56) and overlay.size == (56, 40) and labels.max() < 150
    assert str(tmp_path / "pred" / f"{image.stem}_overlay.png") in out


def test_a_segmentation_recipe_needs_segmentation_data(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tessera", "train", "--config", "upernet_swin_t_ade20k",
                           "model.pretrained=null", "data.root=x", "data.val_root=x", "data.kind=image"],
                          env=environment(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "segmentation takes data.kind=segmentation" in proc.stderr.strip().splitlines()[-1]


def test_weights_without_a_run_are_evaluated_and_predicted_as_ade20k(ade, tmp_path, capsys):
    """A segmentation model saved outside a training run (no recipe): 150 classes are read
    as ADE20K, tested as the official configs test it."""
    from tessera import create_model, save_pretrained
    from tessera.cli import main

    model = create_model("upernet_swin_t", num_classes=150, channels=8, aux_channels=8,
                         backbone_args=dict(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)))
    save_pretrained(model, tmp_path / "weights")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "weights"), "--data", f"{ade}:validation", "--json",
                 "--workers", "0", "--confusion", str(tmp_path / "c.png")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["num_samples"] == 2 and res["protocol"] == "whole image, scale 2048x512"
    assert list(res["per_class"])[:3] == ["wall", "building", "sky"] and 0 <= res["miou"] <= 100
    image = next((ade / "images" / "validation").iterdir())
    assert main(["predict", "--checkpoint", str(tmp_path / "weights"), str(image), "-o", str(tmp_path / "p")]) == 0
    labels = np.array(Image.open(tmp_path / "p" / f"{image.stem}_labels.png"))
    assert labels.shape == (40, 56) and labels.max() < 150


TINY_SEG_DEMO = ("model.args={img_size: 64, channels: 8, pool_scales: [1, 2], aux_index: null, dropout: 0.0, "
                 "backbone_args: {img_size: 64, embed_dim: 8, depths: [1, 1, 1], num_heads: [1, 1, 1], "
                 "window_size: 8, drop_path_rate: 0.0}}")


@pytest.mark.slow
def test_segmentation_demo_trains_tests_on_the_held_out_scenes_and_writes_overlays(tmp_path, capsys):
    from tessera import backends
    from tessera.cli import main

    out = tmp_path / "seg_demo"
    before = backends.current()
    assert main(["demo", "--segmentation", "--output", str(out), TINY_SEG_DEMO, "schedule.iters=3"]) == 0
    assert backends.current() == before  # the demo's choice of implementations ends with it
    text = capsys.readouterr().out
    assert "held-out mIoU:" in text and "400 test scenes" in text
    res = json.loads((out / "test.json").read_text())
    assert res["num_samples"] == 400 and res["num_pixels"] == 400 * 64 * 64 and len(res["per_class"]) == 11
    overlays = sorted((out / "samples").glob("*_overlay.png"))
    assert len(overlays) == 6 and all(f"{o}: digits " in text for o in overlays)
    for overlay in overlays:  # each scene's predicted label map beside it, 11 classes at most
        labels = np.array(Image.open(str(overlay).replace("_overlay", "_labels")))
        assert labels.shape == (64, 64) and labels.max() <= 10


def test_a_class_weight_per_class_or_a_clear_error(tmp_path):
    from tessera.errors import ConfigError
    from tessera.train import Trainer, load_recipe

    recipe = load_recipe("seg_demo", [TINY_SEG_DEMO, "loss.class_weight=[1.0, 2.0]"])
    with pytest.raises(ConfigError, match="loss.class_weight has 2 weights but the data has 11 classes"):
        Trainer(recipe, tmp_path / "run")
