"""Fine-tuning on a few images: the recipe fits itself to the data (batch, warm-up), a
validation split is held out when there is no validation folder, the loader uses the cores
there are, a resumed run says when its schedule changed, and the reports fit the data
(rates below one image a second, no top-5 for five classes or fewer)."""

import json
import re

import numpy as np
import pytest
from digit_folders import write_digit_folder

import tessera
from tessera.cli import main
from tessera.data import stratified_split
from tessera.data.loader import default_num_workers
from tessera.errors import DataError
from tessera.train import Trainer, load_recipe
from tessera.train.metrics import ClassificationMeter, significant
from tessera.train.recipe import fit_to_data

#: the README's fine-tuning command on a tiny model and 32-pixel images
SMALL_MODEL = ["model.args.embed_dim=16", "model.args.depths=[2,2]", "model.args.num_heads=[1,2]",
               "model.args.window_size=4", "data.img_size=32"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrained") / "tiny"
    tessera.save_pretrained(tessera.create_model("swin_t", embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                                 window_size=4, img_size=32, num_classes=10), path)
    return path


@pytest.mark.slow
def test_finetune_recipe_on_three_classes_of_ten_images(pretrained, tmp_path, capsys, recwarn):
    data = write_digit_folder(tmp_path / "mine", per_class=10)
    out = tmp_path / "run"
    args = ["train", "--config", "finetune", f"model.pretrained={pretrained}", f"data.root={data}",
            "schedule.epochs=1", *SMALL_MODEL, "--output", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "no data.val_root: 3 of the 30 training samples held out for validation (data.val_split=0.1" in text
    assert "data.batch_size=64 is more than the 27 training samples: steps of 27 instead, one per epoch" in text
    assert ("schedule.warmup_epochs=5 is longer than the run (schedule.epochs=1): warming up over its first half "
            "(0.5 epochs) instead") in text
    assert not [w for w in recwarn if "worker" in str(w.message)]  # no more workers than cores
    line = next(x for x in text.splitlines() if x.startswith("epoch   1/1"))
    assert "val_top1" in line and "top5" not in line
    rate = re.search(r"  ([0-9.e+-]+) img/s", line).group(1)
    assert float(rate) > 0 and (float(rate) >= 100 or len(rate.replace(".", "").lstrip("0")) == 3)
    run = json.loads((out / "run.json").read_text())["recipe"]
    assert run["data"]["batch_size"] == 27 and run["schedule"]["warmup_epochs"] == 0.5  # what ran is recorded
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert isinstance(row["val_top1"], float) and row["val_top5"] is None


@pytest.mark.slow
def test_resuming_with_another_schedule_says_so(tmp_path, caplog):
    data = write_digit_folder(tmp_path / "mine", per_class=2)
    out = tmp_path / "run"
    base = ["train", "--config", "demo", f"data.root={data}", "data.val_root=null", "data.val_split=0",
            "data.batch_size=6", "schedule.warmup_epochs=0", *SMALL_MODEL]
    assert main([*base, "schedule.epochs=1", "--output", str(out)]) == 0
    assert "another learning-rate schedule" not in caplog.text
    assert main(["train", "--resume", str(out), "schedule.epochs=2"]) == 0
    message = next(r.getMessage() for r in caplog.records if "another learning-rate schedule" in r.getMessage())
    assert "(schedule.epochs 1 -> 2): it is recomputed for 2 epochs, 2 steps; at step 1 it moves from" in message
    assert json.loads((out / "run.json").read_text())["recipe"]["schedule"]["epochs"] == 2
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_stratified_split_holds_out_every_class_in_proportion():
    targets = [0] * 10 + [1] * 10 + [2] * 30
    kept, held = stratified_split(targets, 0.1, seed=3)
    assert sorted(kept + held) == list(range(len(targets))) and not set(kept) & set(held)
    assert np.bincount([targets[i] for i in held]).tolist() == [1, 1, 3]
    assert stratified_split(targets, 0.1, seed=3) == (kept, held)  # seeded
    assert stratified_split(targets, 0.1, seed=4)[1] != held
    assert stratified_split(targets, 0.0)[1] == []
    # ceil(0.1 * 10) = 1 sample held out, never the last one of a class
    assert stratified_split([0] * 9 + [1], 0.1, seed=0)[1] in [[i] for i in range(9)]


def test_fit_to_data_shrinks_the_batch_and_the_warm_up():
    recipe = load_recipe("finetune", ["model.pretrained=x", "data.root=x", "schedule.epochs=4"])
    fitted, notes = fit_to_data(recipe, 30, world_size=1)
    assert fitted.data.batch_size == 30 and fitted.schedule.warmup_epochs == 2 and len(notes) == 2
    assert recipe.data.batch_size == 64  # the given recipe is unchanged
    accum = load_recipe("demo", ["optim.accum_steps=4", "data.batch_size=64"])
    assert fit_to_data(accum, 30, world_size=2)[0].data.batch_size == 24  # a multiple of 4 x 2
    with pytest.raises(DataError, match="the training set has 5 samples, fewer than the 8 micro-batches"):
        fit_to_data(accum, 5, world_size=2)
    assert fit_to_data(load_recipe("demo"), 10_000)[1] == []


def test_workers_default_to_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_num_workers() == 2 and default_num_workers(2) == 1 and default_num_workers(4) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert default_num_workers() == 8
    assert load_recipe("finetune", ["model.pretrained=x", "data.root=x"]).data.num_workers is None


def test_rates_keep_three_significant_digits():
    assert [significant(x) for x in (0.0004567, 0.4532, 4.567, 45.67, 456.7, 12345.6)] == [
        "0.000457", "0.453", "4.57", "45.7", "457", "12346"]
    row = {"epoch": 1, "train_loss": 1.0, "lr": 1e-4, "images_per_s": 0.4532, "skipped_samples": 0, "nan_steps": 0}
    assert "0.453 img/s" in Trainer.summary_line(row, 3)


@pytest.mark.parametrize("classes,top5", [(3, None), (5, None), (6, 100.0)])
def test_top5_only_with_more_than_five_classes(classes, top5):
    import torch

    meter = ClassificationMeter(classes)
    meter.update(torch.log_softmax(torch.eye(classes), -1), torch.arange(classes))
    assert meter.result()["top5"] == top5 and meter.result()["top1"] == 100.0


def test_a_class_too_small_to_validate_trains_without_validation(tmp_path):
    from tessera.data import build_train_and_val

    root = write_digit_folder(tmp_path / "one", per_class=1)
    recipe = load_recipe("demo", [f"data.root={root}", "data.val_root=null"])
    train, val, notes = build_train_and_val(recipe.data)
    assert val is None and len(train) == 3 and "none is held out" in notes[0]
