"""Hugging Face CvT (microsoft/cvt-*) and PVT v1 (Zetatech/pvt-*) directories load through the
loader with the settings of their config.json, and give transformers' outputs.

tests/data/hf_*_tiny/ were saved by transformers' ``save_pretrained`` and hf_cases.pt holds
their logits, recorded with transformers (tests/data/make_hf_references.py says how)."""

import json
from pathlib import Path

import pytest
import torch

import tessera
from tessera.cli import main
from tessera.weights.formats.hf_cvt import cvt_args
from tessera.weights.formats.hf_pvt import pvt_args

DATA = Path(__file__).parent / "data"
CASES = torch.load(DATA / "hf_cases.pt", weights_only=True)


@pytest.mark.parametrize("name,family", [("hf_cvt_tiny", "CvT"), ("hf_pvt_tiny", "PyramidVisionTransformer")])
def test_directory_gives_transformers_logits(name, family):
    case = CASES[name]
    resolved = tessera.resolve_model(DATA / name)
    assert type(resolved.model).__name__ == family
    assert resolved.report.format == name.replace("_tiny", "")
    assert not resolved.report.missing and not resolved.report.unexpected
    with torch.no_grad():
        out = resolved.model(case["x"])
    torch.testing.assert_close(out, case["logits"], atol=1e-4, rtol=1e-4)


def test_settings_come_from_the_config():
    cvt = cvt_args(json.loads((DATA / "hf_cvt_tiny" / "config.json").read_text()))
    assert cvt["act_layer"] == "gelu" and cvt["embed_dims"] == (8, 12, 16) and cvt["depths"] == (1, 2, 3)
    pvt = pvt_args(json.loads((DATA / "hf_pvt_tiny" / "config.json").read_text()))
    assert pvt["norm_eps"] == pvt["embed_norm_eps"] == 1e-6 and pvt["img_size"] == 32
    model = tessera.resolve_model(DATA / "hf_pvt_tiny").model
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6}  # every LayerNorm, the embeddings' and reductions' too


def test_official_settings_would_not_agree():
    """The settings matter: the official QuickGELU (CvT) and embedding eps (PVT) move the
    outputs by more than the tolerance, so the test above checks them."""
    case = CASES["hf_cvt_tiny"]
    config = json.loads((DATA / "hf_cvt_tiny" / "config.json").read_text())
    model = tessera.create_model("cvt_13", **{**cvt_args(config), "act_layer": "quick_gelu", "num_classes": 5})
    tessera.load_checkpoint(model, DATA / "hf_cvt_tiny", verbose=False)
    with torch.no_grad():
        assert (model.eval()(case["x"]) - case["logits"]).abs().max() > 1e-4


def test_convert_keeps_the_architecture(tmp_path, capsys):
    assert main(["convert", str(DATA / "hf_pvt_tiny"), str(tmp_path / "pvt")]) == 0
    model = tessera.from_pretrained(tmp_path / "pvt")
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(CASES["hf_pvt_tiny"]["x"]), CASES["hf_pvt_tiny"]["logits"],
                                   atol=1e-4, rtol=1e-4)
