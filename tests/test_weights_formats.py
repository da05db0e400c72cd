"""Every checkpoint format: the recorded outputs of timm, torchvision and Hugging Face
checkpoints, format detection and forcing, and the wrappers training scripts add."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import tessera
from tessera.errors import CheckpointError
from tessera.models import SwinTransformer, VideoSwinTransformer
from tessera.weights.formats import FORMATS, detect_format

PEER_FILES = {
    "timm_swin2d": ("timm_swin2d.pth", "timm_swin"),
    "torchvision_swin2d": ("torchvision_swin2d.pth", "torchvision_swin"),
    "torchvision_swin3d": ("torchvision_swin3d.pth", "torchvision_swin3d"),
    "hf_swin2d": ("hf_swin2d", "hf_swin"),
}
SMALL_2D = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=3)


def model_for(case: dict) -> torch.nn.Module:
    """The tessera model of a recorded case (torchvision's 2D config has no img_size: 224)."""
    if case["x"].dim() == 5:
        return VideoSwinTransformer(**case["config"]).eval()
    return SwinTransformer(**{"img_size": 224, **case["config"]}).eval()


@pytest.fixture(scope="module")
def peer_cases():
    from conftest import GOLDEN

    if not GOLDEN.is_dir():
        pytest.skip(f"no golden reference data at {GOLDEN}")
    return torch.load(GOLDEN / "peer_cases.pt", weights_only=True)


@pytest.mark.parametrize("case_name", sorted(PEER_FILES))
def test_peer_checkpoints_reproduce_their_outputs(golden, peer_cases, case_name):
    case = peer_cases[case_name]
    file, fmt = PEER_FILES[case_name]
    model = model_for(case)
    report = tessera.load_checkpoint(model, golden / file)
    assert report.format == fmt
    assert not report.missing and not report.unexpected and not report.reinitialized
    with torch.no_grad():
        logits = model(case["x"])
    torch.testing.assert_close(logits, case["logits"], atol=1e-4, rtol=1e-4)


def test_each_format_is_detected_only_by_its_own_layout(golden):
    official = torch.load(golden / "official_swin2d_tiny16.pth", weights_only=True)["model"]
    layouts = {
        "official": official,
        "mmaction": torch.load(golden / "official_swin3d_tiny16.pth", weights_only=True)["state_dict"],
        "timm_swin": torch.load(golden / "timm_swin2d.pth", weights_only=True),
        "torchvision_swin": torch.load(golden / "torchvision_swin2d.pth", weights_only=True),
        "torchvision_swin3d": torch.load(golden / "torchvision_swin3d.pth", weights_only=True),
        "hf_swin": load_file(golden / "hf_swin2d" / "model.safetensors"),
    }
    for name, sd in layouts.items():
        accepting = [f.name for f in FORMATS if f.detect(sd)]
        assert accepting[0] == name and accepting[1:] in ([], ["tessera"]), (name, accepting)
    # a timm checkpoint without a head is still told apart by where its mergings sit
    headless = {k: v for k, v in layouts["timm_swin"].items() if not k.startswith("head")}
    assert detect_format(headless).name == "timm_swin"


@pytest.mark.parametrize("family", ["timm_vit", "timm_deit_distilled", "timm_cait", "timm_levit", "timm_pvt_v2"])
def test_other_families_are_not_taken_for_swin(golden, family):
    sd = torch.load(golden / f"{family}.pth", weights_only=True)
    assert detect_format(sd).name == "tessera"


def test_forcing_a_format_and_unknown_names(golden):
    model = SwinTransformer(img_size=224, **SMALL_2D)
    report = tessera.load_checkpoint(model, golden / "timm_swin2d.pth", format="timm_swin")
    assert report.format == "timm_swin"
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format 'timmm'.*timm_swin"):
        tessera.load_checkpoint(model, golden / "timm_swin2d.pth", format="timmm")
    # forced into the wrong converter, only the final norm and the head keep their names
    report = tessera.load_checkpoint(model, golden / "torchvision_swin2d.pth", format="timm_swin")
    assert sorted(report.loaded) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    with pytest.raises(CheckpointError, match=r"torchvision_swin2d\.pth: strict loading failed: missing patch_embed"):
        tessera.load_checkpoint(model, golden / "torchvision_swin2d.pth", format="timm_swin", strict=True)


def _hf_logits(golden, peer_cases, directory):
    case = peer_cases["hf_swin2d"]
    model = model_for(case)
    report = tessera.load_checkpoint(model, directory)
    with torch.no_grad():  # one image is enough to tell the weights apart
        return model(case["x"][:1]), case["logits"][:1], report


def test_hf_directory_with_pytorch_model_bin(golden, peer_cases, tmp_path):
    (tmp_path / "config.json").write_text((golden / "hf_swin2d" / "config.json").read_text())
    torch.save(load_file(golden / "hf_swin2d" / "model.safetensors"), tmp_path / "pytorch_model.bin")
    logits, expected, report = _hf_logits(golden, peer_cases, tmp_path)
    assert report.format == "hf_swin"
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_hf_sharded_safetensors(golden, peer_cases, tmp_path):
    sd = load_file(golden / "hf_swin2d" / "model.safetensors")
    keys = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: sd[k] for k in part}, tmp_path / name)
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    logits, expected, _ = _hf_logits(golden, peer_cases, tmp_path)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_hf_swin_model_without_prefix_and_head(golden, peer_cases):
    """``SwinModel`` saves the backbone without ``swin.`` and without a classifier."""
    sd = load_file(golden / "hf_swin2d" / "model.safetensors")
    backbone = {k[len("swin.") :]: v for k, v in sd.items() if k.startswith("swin.")}
    case = peer_cases["hf_swin2d"]
    full, bare = model_for(case), model_for(case)
    tessera.load_checkpoint(full, golden / "hf_swin2d")
    report = tessera.load_checkpoint(bare, backbone)
    assert report.format == "hf_swin" and report.missing == ["head.weight", "head.bias"]
    x = case["x"][:1]
    with torch.no_grad():
        torch.testing.assert_close(bare.forward_features(x), full.forward_features(x), atol=0, rtol=0)


def test_hf_qkv_is_query_key_value_stacked(golden):
    sd = load_file(golden / "hf_swin2d" / "model.safetensors")
    model = SwinTransformer(img_size=224, **SMALL_2D)
    tessera.load_checkpoint(model, golden / "hf_swin2d")
    prefix = "swin.encoder.layers.2.blocks.1.attention.self."
    qkv = model.layers[2].blocks[1].attn.qkv
    for i, part in enumerate(["query", "key", "value"]):
        rows = slice(i * 64, (i + 1) * 64)
        assert torch.equal(qkv.weight[rows], sd[prefix + part + ".weight"])
        assert torch.equal(qkv.bias[rows], sd[prefix + part + ".bias"])


def test_hf_with_a_missing_projection_names_it(golden):
    sd = load_file(golden / "hf_swin2d" / "model.safetensors")
    del sd["swin.encoder.layers.0.blocks.0.attention.self.key.weight"]
    with pytest.raises(CheckpointError, match=r"layers\.0\.blocks\.0\.attention\.self has query, value"):
        tessera.load_checkpoint(SwinTransformer(img_size=224, **SMALL_2D), sd)


def test_torchvision_v2_is_refused_clearly(golden):
    sd = dict(torch.load(golden / "torchvision_swin2d.pth", weights_only=True))
    sd["features.1.0.attn.logit_scale"] = torch.zeros(1, 1, 1)
    with pytest.raises(CheckpointError, match="Swin V2"):
        tessera.load_checkpoint(SwinTransformer(img_size=224, **SMALL_2D), sd)


# ---------------------------------------------------------------------------------------
# wrappers
# ---------------------------------------------------------------------------------------


@pytest.fixture
def two_state_dicts():
    torch.manual_seed(1)
    a = SwinTransformer(img_size=64, **SMALL_2D).state_dict()
    b = SwinTransformer(img_size=64, **SMALL_2D).state_dict()
    return a, b


@pytest.mark.parametrize(
    "wrap,note",
    [
        (lambda sd: {"model": sd, "optimizer": {"state": {0: {"step": torch.tensor(3)}}}, "epoch": 7}, "'model'"),
        (lambda sd: {"state_dict": sd, "meta": {"epoch": 3}}, "'state_dict'"),
        (lambda sd: {"module." + k: v for k, v in sd.items()}, "'module.'"),
        (lambda sd: {"model": {"module." + k: v for k, v in sd.items()}}, "'module.'"),
        (lambda sd: {"checkpoint": 1, "model": {"state_dict": sd}}, "'state_dict'"),
    ],
)
def test_wrappers_are_unwrapped(two_state_dicts, wrap, note, tmp_path):
    sd, _ = two_state_dicts
    torch.save(wrap(sd), tmp_path / "ckpt.pth")
    model = SwinTransformer(img_size=64, **SMALL_2D)
    report = tessera.load_checkpoint(model, tmp_path / "ckpt.pth")
    assert any(note in n for n in report.notes)
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("ema_key", ["model_ema", "state_dict_ema"])
def test_use_ema_picks_the_ema_weights(two_state_dicts, ema_key):
    plain, ema = two_state_dicts
    outer = "model" if ema_key == "model_ema" else "state_dict"
    ckpt = {outer: plain, ema_key: ema}
    for use_ema, expected in [(False, plain), (True, ema)]:
        model = SwinTransformer(img_size=64, **SMALL_2D)
        tessera.load_checkpoint(model, ckpt, use_ema=use_ema)
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    report = tessera.load_checkpoint(SwinTransformer(img_size=64, **SMALL_2D), {"model": plain}, use_ema=True)
    assert "no EMA weights in the checkpoint" in report.notes
