"""``tessera convert`` and ``tessera inflate`` on the golden checkpoints, in process."""

import json

import pytest
import torch

import tessera
from tessera.cli import main
from tessera.cli.convert import parse_overrides

CASES = {
    "official_swin2d_tiny16.pth": ("official_cases.pt", "official_swin2d_tiny16", "official"),
    "official_swin3d_tiny16.pth": ("official_cases.pt", "official_swin3d_tiny16", "mmaction"),
    "timm_swin2d.pth": ("peer_cases.pt", "timm_swin2d", "timm_swin"),
    "torchvision_swin2d.pth": ("peer_cases.pt", "torchvision_swin2d", "torchvision_swin"),
    "torchvision_swin3d.pth": ("peer_cases.pt", "torchvision_swin3d", "torchvision_swin3d"),
    "hf_swin2d": ("peer_cases.pt", "hf_swin2d", "hf_swin"),
}


@pytest.mark.parametrize("source", sorted(CASES))
def test_convert_every_golden_checkpoint_without_naming_the_model(golden, source, tmp_path, capsys):
    cases, case_name, fmt = CASES[source]
    case = torch.load(golden / cases, weights_only=True)[case_name]
    assert main(["convert", str(golden / source), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"(format: {fmt})" in out and f"to {tmp_path / 'out'}" in out
    model = tessera.from_pretrained(tmp_path / "out").eval()
    if case["x"].dim() == 4:  # image models keep the size rule of the library that made the weights
        rule = {"timm_swin": "timm", "torchvision_swin": "torchvision"}.get(fmt, "official")
        assert json.loads((tmp_path / "out" / "config.json").read_text())["args"]["size_rule"] == rule
        assert model.size_rule == rule
    with torch.no_grad():
        logits = model(case["x"][:1])
    torch.testing.assert_close(logits, case["logits"][:1], atol=1e-4, rtol=1e-4)


def test_convert_with_a_named_model_and_overrides(golden, tmp_path, capsys, caplog):
    args = ["convert", str(golden / "timm_swin2d.pth"), str(tmp_path), "--model", "swin_t",
            "embed_dim=16", "depths=2,2,2,2", "num_heads=1,2,2,4", "num_classes=5"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "re-initialised (shape differs): head.weight, head.bias" in captured.out
    assert "re-initialised" not in caplog.text + captured.err  # said once, in the report
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["name"] == "swin_t" and config["args"]["num_classes"] == 5
    assert config["args"]["depths"] == [2, 2, 2, 2]


def test_inflate_the_image_checkpoint_into_a_video_model(golden, tmp_path, capsys, caplog):
    args = ["inflate", str(golden / "official_swin2d_tiny16.pth"), str(tmp_path), "--model", "video_swin_t",
            "embed_dim=16", "depths=2,2,2,2", "num_heads=1,2,2,4", "num_classes=3"]
    assert main(args) == 0
    captured = capsys.readouterr()
    everything = captured.out + captured.err + caplog.text
    assert everything.count("inflated image weights to video") == 1  # the report's note, not also a warning
    video = tessera.from_pretrained(tmp_path)
    image = torch.load(golden / "official_swin2d_tiny16.pth", weights_only=True)["model"]
    conv = video.patch_embed.proj.weight
    assert conv.shape == (16, 3, 2, 4, 4) and torch.equal(conv[:, :, 1], image["patch_embed.proj.weight"] / 2)
    assert torch.equal(video.head.weight, image["head.weight"])


@pytest.mark.parametrize(
    "args,expected",
    [
        (["convert", "{golden}/nope.pth", "{tmp}"], "nope.pth: no such file"),
        (["convert", "{golden}/timm_vit.pth", "{tmp}"], "cannot tell the architecture"),
        (["convert", "{golden}/timm_swin2d.pth", "{tmp}", "windows=3"], "unexpected keyword argument 'windows'"),
        (["convert", "{golden}/timm_swin2d.pth", "{tmp}", "--format", "tv"], "unknown checkpoint format 'tv'"),
        (["convert", "{golden}/timm_swin2d.pth", "{tmp}", "--model", "swin_tt"], "unknown model 'swin_tt'"),
        (["inflate", "{golden}/official_swin3d_tiny16.pth", "{tmp}", "--model", "video_swin_t"], "not an image checkpoint"),
        (["inflate", "{golden}/official_swin2d_tiny16.pth", "{tmp}", "--model", "swin_t"], "swin_t is not a video model"),
    ],
)
def test_errors_are_one_line_and_exit_2(golden, tmp_path, capsys, args, expected):
    args = [a.format(golden=golden, tmp=tmp_path / "out") for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"tessera {args[0]}: error:") and expected in err
    assert not (tmp_path / "out" / "config.json").exists()


def test_parse_overrides():
    assert parse_overrides(["num_classes=10", "window_size=8,7,7", "ape=true", "qk_scale=None", "name=x"]) == {
        "num_classes": 10, "window_size": (8, 7, 7), "ape": True, "qk_scale": None, "name": "x"}
    with pytest.raises(tessera.errors.ConfigError, match="expected KEY=VALUE"):
        parse_overrides(["10"])
