"""``tessera demo`` checks its model with the pointing game and explains a few test samples."""

import json

import pytest

from tessera.cli import main


@pytest.mark.slow
def test_demo_prints_the_pointing_game_and_writes_explained_samples(tmp_path, capsys):
    out = tmp_path / "demo"
    small = ["schedule.epochs=1", "schedule.warmup_epochs=0", "model.args.embed_dim=16", "model.args.depths=[1,1]",
             "model.args.num_heads=[1,1]", "pretrain.schedule.epochs=1", "pretrain.schedule.warmup_epochs=0"]
    assert main(["demo", "--scenes", "-o", str(out), "--explained", "2", *small]) == 0
    printed = capsys.readouterr().out
    # the digits stage ran first, with the same architecture, and the scenes started from it
    first = json.loads((out / "pretrain" / "run.json").read_text())["recipe"]
    scenes = json.loads((out / "run.json").read_text())["recipe"]
    assert first["model"]["args"]["embed_dim"] == scenes["model"]["args"]["embed_dim"] == 16
    assert first["schedule"]["epochs"] == 1 and first["data"]["root"] == "digits:train"
    assert scenes["model"]["pretrained"] == str(out / "pretrain" / "best.safetensors")
    pointing = json.loads((out / "pointing.json").read_text())
    assert pointing["unit"] == "image" and pointing["count"] == 600 and pointing["tolerance"] == 4
    # the method and the layer are those (of three methods, two stages) that pointed best on
    # the validation scenes
    on_val = pointing["validation_inside_the_box"]
    assert sorted(on_val) == ["gradcam", "gradcam++", "layercam"]
    assert all(sorted(v) == ["layers.0.blocks.0.norm2", "layers.1.blocks.0.norm2"] for v in on_val.values())
    assert on_val[pointing["method"]][pointing["layer"]] == max(f for v in on_val.values() for f in v.values())
    assert 0 <= pointing["inside_the_box"] <= pointing["pointing_game"] <= 100
    assert pointing["hits_inside"] == round(pointing["inside_the_box"] * 6)
    assert f"falls inside the digit's box for {pointing['inside_the_box']:.1f} % of 600 held-out images" in printed
    # the explained samples use the chosen method and layer
    explained = sorted(p.name for p in (out / "explained").iterdir())
    assert explained == [f"test_000.{pointing['method']}.png", f"test_100.{pointing['method']}.png"]
    assert f"--method {pointing['method']} --layer {pointing['layer']}" in printed
