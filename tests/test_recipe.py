"""Recipes: shipped files, overrides, and one clear line for every bad key or value."""

import pytest

from tessera.cli import main
from tessera.errors import ConfigError
from tessera.train.recipe import load_recipe, shipped_recipes

DATA = ["data.root=/train", "data.val_root=/val"]


def test_shipped_recipes_are_listed_and_load():
    names = shipped_recipes()
    assert {"swin_t_in1k", "swin_s_in1k", "swin_b_in1k", "finetune", "demo"} <= set(names)
    assert {"video_swin_t_k400", "video_swin_s_k400", "video_swin_b_k400", "video_swin_b_ssv2", "video_demo"} <= set(names)
    for name in names:
        needs_weights = (name == "finetune" or "22kto1k" in name
                         or name.startswith(("video_swin", "upernet", "swin_unet")))
        extra = DATA + (["model.pretrained=x.pth"] if needs_weights else [])
        load_recipe(name, extra if not name.endswith("demo") else [])


def test_imagenet_recipes_are_the_official_ones():
    t = load_recipe("swin_t_in1k", DATA)
    assert (t.optim.lr, t.optim.lr_base_batch, t.optim.weight_decay, t.optim.clip_grad) == (5e-4, 512, 0.05, 5.0)
    assert (t.optim.betas, t.optim.eps) == ((0.9, 0.999), 1e-8)
    assert (t.schedule.epochs, t.schedule.warmup_epochs, t.schedule.warmup_lr, t.schedule.min_lr) == (300, 20, 5e-7, 5e-6)
    a = t.augment
    assert (a.randaugment_n, a.randaugment_m, a.reprob, a.mixup, a.cutmix, a.switch_prob, a.label_smoothing) == (
        2, 9, 0.25, 0.8, 1.0, 0.5, 0.1)
    assert (t.data.img_size, t.data.crop_pct, t.data.interpolation, t.data.scale) == (224, 0.875, "bicubic", (0.08, 1.0))
    assert t.train.ema_decay == 0.0
    drop_path = {n: load_recipe(f"swin_{n}_in1k", DATA).model for n in "tsb"}
    assert {n: (m.name, m.args["drop_path_rate"]) for n, m in drop_path.items()} == {
        "t": ("swin_t", 0.2), "s": ("swin_s", 0.3), "b": ("swin_b", 0.5)}
    # swin_s inherits everything else from swin_t
    assert load_recipe("swin_s_in1k", DATA).optim == t.optim


def test_segmentation_recipes_are_the_official_ones():
    t = load_recipe("upernet_swin_t_ade20k", [*DATA, "model.pretrained=null"])
    assert (t.task, t.data.kind, t.model.name) == ("segmentation", "segmentation", "upernet_swin_t")
    o, s, d = t.optim, t.schedule, t.data
    assert (o.name, o.lr, o.lr_base_batch, o.weight_decay, o.betas, o.clip_grad, o.param_groups) == (
        "adamw", 6e-5, None, 0.01, (0.9, 0.999), None, "official_seg")
    assert (s.style, s.power, s.iters, s.warmup_iters, s.warmup_lr, s.min_lr) == ("poly", 1.0, 160000, 1500, 6e-11, 0.0)
    assert (d.batch_size, d.img_size, d.img_scale, d.ratio_range, d.cat_max_ratio, d.hflip, d.photometric) == (
        16, 512, (2048, 512), (0.5, 2.0), 0.75, 0.5, True)
    assert (d.reduce_zero_label, d.ignore_index, d.test_mode, d.layout) == (True, 255, "whole", "ade20k")
    assert {n: load_recipe(f"upernet_swin_{n}_ade20k", [*DATA, "model.pretrained=null"]).model.name
            for n in "sb"} == {"s": "upernet_swin_s", "b": "upernet_swin_b"}
    u = load_recipe("swin_unet_224", [*DATA, "model.pretrained=null"])
    assert (u.loss.ce_weight, u.loss.dice_weight, u.data.img_size, u.optim.name, u.optim.lr, u.optim.momentum,
            u.optim.weight_decay, u.schedule.power, u.schedule.epochs, u.data.batch_size) == (
        0.4, 0.6, 224, "sgd", 0.01, 0.9, 1e-4, 0.9, 150, 24)


def test_overrides_are_typed():
    r = load_recipe("demo", ["optim.lr=1e-3", "data.scale=[0.5, 1]", "model.args.embed_dim=32",
                             "optim.clip_grad=null", "train.ema_decay=0.99", "data.hflip=0"])
    assert r.optim.lr == 0.001 and isinstance(r.optim.lr, float)
    assert r.data.scale == (0.5, 1.0)
    assert r.model.args["embed_dim"] == 32 and r.model.args["depths"] == [2, 2, 2]  # merged, not replaced
    assert r.optim.clip_grad is None and r.train.ema_decay == 0.99 and r.data.hflip == 0.0


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown key 'optim.lrr' (did you mean optim.lr?)"),
    ("optimiser.lr=1", "unknown key 'optimiser'"),
    ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
    ("data.batch_size=1.5", "data.batch_size: expected an integer, got 1.5"),
    ("model.compile=maybe", "model.compile: expected true or false, got 'maybe'"),
    ("data.scale=[1]", "data.scale: expected a list of 2 numbers"),
    ("optim.accum_steps=3", "must be a multiple of optim.accum_steps"),
    ("train.amp=fp8", "train.amp must be auto, none, bf16 or fp16"),
    ("optim.lr", "is not of the form section.key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_recipe("demo", [override])
    assert message in str(e.value)


def test_missing_values_are_asked_for():
    with pytest.raises(ConfigError, match=r"data.root: the recipe needs a value; add data.root=\.\.\."):
        load_recipe("swin_t_in1k")
    with pytest.raises(ConfigError, match="model.pretrained: the recipe needs a value"):
        load_recipe("finetune", DATA)


def test_recipe_files_and_bases(tmp_path):
    (tmp_path / "mine.yaml").write_text("base: demo\noptim:\n  lr: 2e-3\nschedule:\n  epochs: 3\n")
    r = load_recipe(str(tmp_path / "mine.yaml"))
    assert r.optim.lr == 2e-3 and r.schedule.epochs == 3 and r.data.root == "digits:train"
    (tmp_path / "loop.yaml").write_text(f"base: {tmp_path / 'loop.yaml'}\n")
    with pytest.raises(ConfigError, match="is its own base"):
        load_recipe(str(tmp_path / "loop.yaml"))
    with pytest.raises(ConfigError, match="no recipe 'nope'.*demo"):
        load_recipe("nope")
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(str(tmp_path / "bad.yaml"))


def test_cli_config_errors_are_one_line(capsys, tmp_path):
    assert main(["train", "--config", "demo", "optim.lr=abc", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tessera train: error: optim.lr: expected a number, got 'abc'"
    assert main(["train", "--config", "demo", "optim.nope=1", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown key 'optim.nope'" in err
    assert not any(tmp_path.iterdir())  # nothing written for a bad recipe
