"""``tessera demo`` checks its model with the pointing game and explains a few test samples."""

import json

import pytest

from tessera.cli import main


@pytest.mark.slow
def test_demo_prints_the_pointing_game_and_writes_explained_samples(tmp_path, capsys):
    out = tmp_path / "demo"
    small = ["schedule.epochs=1", "schedule.warmup_epochs=0", "model.args.embed_dim=16", "model.args.depths=[1,1]",
             "model.args.num_heads=[1,1]"]
    assert main(["demo", "--scenes", "-o", str(out), "--explained", "2", *small]) == 0
    printed = capsys.readouterr().out
    pointing = json.loads((out / "pointing.json").read_text())
    assert pointing["unit"] == "image" and pointing["count"] == 600 and pointing["tolerance"] == 4
    assert pointing["layer"] == "layers.1.blocks.0.norm2"  # the last stage, 8x8 tokens (at least 7 a side)
    assert 0 <= pointing["inside_the_box"] <= pointing["pointing_game"] <= 100
    assert pointing["hits_inside"] == round(pointing["inside_the_box"] * 6)
    assert f"falls inside the digit's box for {pointing['inside_the_box']:.1f} % of 600 held-out images" in printed
    explained = sorted(p.name for p in (out / "explained").iterdir())
    assert explained == ["test_000.gradcam.png", "test_100.gradcam.png"]
