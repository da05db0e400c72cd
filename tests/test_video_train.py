"""Video training and evaluation: view averaging, the official video optimiser and
schedule, the recipes, and end to end through the command line (mp4 folders and
annotation lists, bad videos, fine-tuning from image weights, the video demo)."""

import json
import logging
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

import tessera
from tessera.cli import main
from tessera.data.loader import ShardSampler, build_loader
from tessera.data.moving_digits import CLASSES
from tessera.data.video import write_video
from tessera.train import Trainer, load_recipe, load_trained_model, predict_videos, read_run_info
from tessera.train.distributed import DistInfo
from tessera.train.evaluation import evaluate
from tessera.train.metrics import ClassificationMeter
from tessera.train.optim import build_optimizer, param_groups
from tessera.train.schedule import WarmupCosine

from digit_folders import VIDEO_TINY

# ---------------------------------------------------------------------------------------
# view averaging


class Views(Dataset):
    """Samples of three views whose "pixels" are the logits a pass-through model returns."""

    num_views = 3

    def __init__(self, logits, labels):
        self.logits, self.labels = torch.tensor(logits, dtype=torch.uint8), labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.logits[i], self.labels[i]


def test_video_score_is_the_mean_of_the_views_softmax():
    # sample 0: one very sure view for class 0, two fairly sure for class 1. Averaging the
    # logits would pick class 0 (6.7 > 6.0); averaging the probabilities picks class 1.
    logits = [[[20, 0, 0], [0, 9, 0], [0, 9, 0]], [[0, 0, 5], [0, 0, 5], [1, 0, 0]]]
    data = Views(logits, [1, 2])
    loader = build_loader(data, ShardSampler(2), 2, 0)
    clips = ClassificationMeter(3)
    meter = evaluate(torch.nn.Identity(), loader, lambda x: x.float(), 3, DistInfo(), per_view=clips)
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float32), -1)
    mean = probs.mean(1)
    assert mean[0].argmax() == 1 and torch.tensor(logits[0], dtype=torch.float32).mean(0).argmax() == 0
    res = meter.result()
    assert res["top1"] == 100.0 and res["num_samples"] == 2
    assert res["loss"] == pytest.approx(-(mean[0, 1].log() + mean[1, 2].log()).item() / 2, rel=1e-6)
    # clip level: every view on its own (6 views, 4 right)
    clip = clips.result()
    assert clip["num_samples"] == 6 and clip["top1"] == pytest.approx(400 / 6)
    assert meter.confusion.tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 1]]
    # the same in chunks of one view per forward pass
    chunked = evaluate(torch.nn.Identity(), loader, lambda x: x.float(), 3, DistInfo(), max_views=1).result()
    assert chunked["loss"] == pytest.approx(res["loss"])


# ---------------------------------------------------------------------------------------
# the official video optimiser and schedule


def tiny_video_model(num_classes=5):
    return tessera.create_model("video_swin_t", num_classes=num_classes, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                window_size=(2, 4, 4))


def test_backbone_lr_multiplier_in_the_param_groups():
    model = tiny_video_model()
    names = {n for n, _ in model.named_parameters()}
    tables = {n for n in names if "relative_position_bias_table" in n}
    heads = {"head.weight", "head.bias"}
    # intended: the backbone at lr x 0.1, no decay on biases, norms and tables
    groups = {g["name"]: g for g in param_groups(model, 0.02, 0.1)}
    assert set(groups) == {"head_decay", "head_no_decay", "backbone_decay", "backbone_no_decay"}
    assert {(g["lr_mult"], g["weight_decay"]) for g in groups.values()} == {(1.0, 0.02), (1.0, 0.0), (0.1, 0.02),
                                                                          (0.1, 0.0)}
    assert tables <= set(groups["backbone_no_decay"]["param_names"])
    assert "layers.0.blocks.0.norm1.weight" in groups["backbone_no_decay"]["param_names"]
    # as the official code ran (mmcv's first matching key): tables at full lr without decay,
    # everything else in the backbone (norms and biases too) at 0.1 with decay, the head at 1
    groups = {g["name"]: g for g in param_groups(model, 0.02, 0.1, rule="official_video")}
    assert set(groups) == {"backbone_table_no_decay", "backbone_decay", "head_decay"}
    assert set(groups["backbone_table_no_decay"]["param_names"]) == tables
    assert (groups["backbone_table_no_decay"]["lr_mult"], groups["backbone_table_no_decay"]["weight_decay"]) == (1.0, 0)
    assert set(groups["head_decay"]["param_names"]) == heads and groups["head_decay"]["lr_mult"] == 1.0
    backbone = groups["backbone_decay"]
    assert set(backbone["param_names"]) == names - tables - heads
    assert (backbone["lr_mult"], backbone["weight_decay"]) == (0.1, 0.02)
    # the recipe's optimiser: the schedule sets lr x lr_mult per group
    recipe = load_recipe("video_swin_t_k400", ["data.root=a", "data.val_root=b", "model.pretrained=c"])
    opt = build_optimizer(model, recipe)
    WarmupCosine(1e-3, 100).apply(opt, 0)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([1e-4, 1e-3])


def test_mmcv_schedule_cosine_per_epoch_with_warmup():
    # 10 epochs of 4 steps, 2.5 epochs (10 steps) of warm-up from 0.1 x lr
    s = WarmupCosine(base_lr=1.0, total_steps=40, warmup_steps=10, warmup_lr=0.1, min_lr=0.0, style="mmcv",
                     steps_per_epoch=4)
    cosine = [0.5 * (1 + math.cos(math.pi * e / 10)) for e in range(10)]
    assert s(0) == pytest.approx(0.1)  # 0.1 of epoch 0's rate
    assert s(5) == pytest.approx(cosine[1] * (1 - 0.9 * 0.5))  # halfway through the warm-up, epoch 1
    assert s(10) == pytest.approx(cosine[2])
    assert [s(t) for t in (12, 13, 14)] == pytest.approx([cosine[3]] * 3)  # constant within an epoch
    assert s(39) == pytest.approx(cosine[9])


def test_video_recipes_are_the_official_ones():
    data = ["data.root=a", "data.val_root=b", "model.pretrained=c"]
    t = load_recipe("video_swin_t_k400", data)
    assert (t.model.name, t.model.args["drop_path_rate"]) == ("video_swin_t", 0.1)
    d = t.data
    assert (d.kind, d.clip_len, d.frame_interval, d.num_clips, d.num_crops, d.img_size) == ("video", 32, 2, 4, 3, 224)
    assert (d.batch_size, t.optim.accum_steps, d.hflip, d.frame_uniform) == (64, 8, 0.5, False)
    o, s = t.optim, t.schedule
    assert (o.lr, o.lr_base_batch, o.weight_decay, o.backbone_lr_mult, o.clip_grad) == (1e-3, None, 0.02, 0.1, None)
    assert (s.epochs, s.warmup_epochs, s.warmup_lr / o.lr, s.min_lr, s.style) == (30, 2.5, pytest.approx(0.1), 0.0, "mmcv")
    assert (t.augment.randaugment_m, t.augment.mixup, t.augment.label_smoothing) == (0, 0, 0)
    models = {n: load_recipe(f"video_swin_{n}_k400", data) for n in "sb"}
    assert {n: (r.model.name, r.model.args["drop_path_rate"], r.optim.weight_decay) for n, r in models.items()} == {
        "s": ("video_swin_s", 0.1, 0.02), "b": ("video_swin_b", 0.3, 0.05)}
    ssv2 = load_recipe("video_swin_b_ssv2", data)
    assert ssv2.model.name == "video_swin_b_ssv2"
    d = ssv2.data
    assert (d.frame_uniform, d.clip_len, d.num_clips, d.num_crops, d.hflip) == (True, 32, 1, 3, 0.0)
    a = ssv2.augment
    assert (a.randaugment_n, round(3 * a.randaugment_m), a.label_smoothing, a.reprob) == (4, 7, 0.1, 0.25)
    assert (ssv2.optim.lr, ssv2.schedule.epochs, ssv2.schedule.warmup_lr / ssv2.optim.lr) == (3e-4, 60, pytest.approx(0.1))


# ---------------------------------------------------------------------------------------
# end to end


@pytest.fixture(scope="module")
def moving_files(tmp_path_factory):
    """The moving digits as mp4 files (3 per class and split), through the command."""
    root = tmp_path_factory.mktemp("videos") / "md"
    assert main(["make-moving-digits", str(root), "--per-class", "3"]) == 0
    (root / "train" / "east" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    return root


@pytest.mark.slow
def test_mp4_folders_and_lists_train_and_evaluate_through_the_cli(moving_files, tmp_path, capsys, caplog):
    root = moving_files
    out = tmp_path / "folder_run"
    args = ["train", "--config", "video_demo", f"data.root={root / 'train'}", f"data.val_root={root / 'val.txt'}",
            f"data.test_root={root / 'test'}", "data.max_bad_fraction=0.1", *VIDEO_TINY, "--output", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "on 25 samples of 8 classes" in stdout and "clip/s" in stdout
    assert "skipped 1 samples" in stdout and "skipped 1 unreadable samples in all" in stdout
    assert caplog.text.count("corrupt.mp4") == 1
    tested = json.loads((out / "test.json").read_text())
    assert tested["num_samples"] == 24 and tested["views"] == 6 and tested["num_clips"] == 144
    info = read_run_info(out / "best.safetensors")
    assert info["classes"] == CLASSES and info["data"]["kind"] == "video" and info["data"]["num_clips"] == 2

    # evaluate a folder and a list: video level and clip level, in JSON too
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(root / "test"), "--json", "--workers", "0"]) == 0
    folder = json.loads(capsys.readouterr().out)
    assert (folder["num_samples"], folder["views"], folder["num_clips"]) == (24, 6, 144)
    assert {"top1", "top5", "clip_top1", "clip_top5", "loss"} <= set(folder)
    assert folder["top1"] == pytest.approx(tested["top1"]) and folder["clip_top1"] == pytest.approx(tested["clip_top1"])
    assert main(["evaluate", "--checkpoint", str(out), "--data", str(root / "test.txt"), "--workers", "1",
                 "--clips", "1", "--crops", "1"]) == 0
    text = capsys.readouterr().out
    assert "video level  top-1" in text and "clip level   top-1" in text and "over 1 views: 1 clips x 1 crops" in text
    assert "(3 videos)" in text

    # predict video files: the same probabilities as the evaluation's views
    files = sorted((root / "test" / "north").glob("*.mp4"))
    assert main(["predict", "--checkpoint", str(out), *map(str, files), "--top-k", "2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["video"] for r in rows] == list(map(str, files)) and all(len(r["top_k"]) == 2 for r in rows)
    model, info = load_trained_model(out)
    assert predict_videos(model, info, [files[0]], top_k=1)[0][0][1] == pytest.approx(rows[0]["top_k"][0]["probability"])
    assert main(["predict", "--checkpoint", str(out), str(root / "train" / "east" / "corrupt.mp4")]) == 2
    assert "corrupt.mp4: not a readable video" in capsys.readouterr().err

    # an annotation list (with its class-name file) trains with no code change
    listed = tmp_path / "list_run"
    assert main(["train", "--config", "video_demo", f"data.root={root / 'train.txt'}",
                 f"data.class_names={root / 'classes.txt'}", f"data.val_root={root / 'val'}", *VIDEO_TINY,
                 "--output", str(listed)]) == 0
    assert read_run_info(listed / "last.safetensors")["classes"] == CLASSES
    assert "on 24 samples of 8 classes" in capsys.readouterr().out


@pytest.mark.slow
def test_fine_tuning_from_image_weights_and_from_video_weights(tmp_path, capsys, caplog):
    image = tessera.create_model("swin_t", num_classes=10, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                 window_size=4, img_size=32)
    save_file({k: v.contiguous() for k, v in image.state_dict().items()}, tmp_path / "image.safetensors")
    recipe = load_recipe("video_demo", [*VIDEO_TINY, "model.args.window_size=[2,4,4]", "train.max_steps=1",
                                        "data.val_root=null", f"model.pretrained={tmp_path / 'image.safetensors'}"])
    with caplog.at_level(logging.WARNING, logger="tessera"):
        trainer = Trainer(recipe, tmp_path / "from_image")
    trainer.fit()
    text = capsys.readouterr().out
    # the loader's report reaches the user once, with the run's description: inflated, and a
    # new head for the 8 directions (the loader's own warnings, which say the same, held back)
    assert "inflated image weights to video: patch embedding repeated over 2 frames and divided by 2" in text
    assert "re-initialised (shape differs): head.bias, head.weight" in text
    assert "inflated" not in caplog.text and "re-initialised" not in caplog.text
    inflated = trainer.model.patch_embed.proj.weight.detach()
    # one AdamW step (lr 1e-3) away from the image's patch embedding divided by the 2 frames
    assert (inflated[:, :, 0] - image.patch_embed.proj.weight / 2).abs().max() < 2e-3
    # from a video checkpoint (the state the run just saved): loaded as it is
    video = load_recipe("video_demo", [*VIDEO_TINY, "train.max_steps=1", "data.val_root=null",
                                       f"model.pretrained={tmp_path / 'from_image' / 'state.pt'}"])
    tuned = Trainer(video, tmp_path / "from_video")
    assert torch.equal(tuned.model.patch_embed.proj.weight, trainer.model.patch_embed.proj.weight)
    tuned.fit()
    text = capsys.readouterr().out
    report = tuned.load_report
    assert f"loaded {len(report.loaded)} tensors" in text and "inflated" not in text
    assert not report.missing and not report.reinitialized


@pytest.mark.slow
def test_video_demo_command(tmp_path, capsys):
    out = tmp_path / "vdemo"
    assert main(["demo", "--video", "--output", str(out), *VIDEO_TINY, "data.root=moving_digits:val"]) == 0
    text = capsys.readouterr().out
    assert "% video level (6 views per video)" in text and "360 held-out videos" in text
    samples = sorted((out / "samples").glob("*.mp4"))
    assert len(samples) == 8 and all(f"{s}: true " in text for s in samples)
    assert "s of CPU time" in text
    tested = json.loads((out / "test.json").read_text())
    assert tested["num_samples"] == 360 and tested["views"] == 6
    assert 0.0 <= tested["clip_top1"] <= 100.0 and 0.0 <= tested["top1"] <= 100.0
    write_video(tmp_path / "x.mp4", np.zeros((4, 32, 40, 3), np.uint8))  # shorter than a clip: loops
    model, info = load_trained_model(out)
    assert len(predict_videos(model, info, [tmp_path / "x.mp4"], top_k=8)[0]) == 8
