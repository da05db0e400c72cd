"""tessera's own format (save_pretrained / from_pretrained), and converting any checkpoint
into it with the architecture read from the weights."""

import json
import logging
import os

import pytest
import torch

import tessera
from tessera.errors import CheckpointError, ConfigError
from tessera.models import SwinTransformer, VideoSwinTransformer
from tessera.models.base import TesseraModel
from tessera.weights import convert_checkpoint
from tessera.weights.infer import infer_architecture
from tessera.weights.load import convert_state_dict, read_state_dict
from tessera.weights.pretrained import WEIGHTS_NAME

SWIN_MODELS = [n for n in tessera.list_models("*swin*") if not n.startswith("upernet_")]  # classifiers and Swin-Unet
SMALL_2D = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=3)


def sample(model):
    shape = (4, 32, 32) if isinstance(model, VideoSwinTransformer) else (64, 64)
    return torch.randn(1, model.in_chans, *shape)


def assert_round_trip(model, directory):
    model.eval()
    tessera.save_pretrained(model, directory)
    config = json.loads((directory / "config.json").read_text())
    assert config == {"name": model.model_name, "class": type(model).__name__,
                      "args": json.loads(json.dumps(model.model_args)), "format_version": 1}
    rebuilt = tessera.from_pretrained(directory).eval()
    assert type(rebuilt) is type(model) and rebuilt.model_name == model.model_name
    assert rebuilt.model_args == model.model_args
    x = sample(model)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    return rebuilt


@pytest.mark.parametrize("name", SWIN_MODELS)
def test_round_trip_every_swin_variant_at_small_width(name, tmp_path):
    """Each variant's own arguments (windows, sizes, classes), with narrow stages."""
    with torch.device("meta"):
        heads = tessera.create_model(name).model_args["num_heads"]
    model = tessera.create_model(name, embed_dim=4 * heads[0])
    assert_round_trip(model, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SWIN_MODELS)
def test_round_trip_every_swin_model_at_full_size(name, tmp_path):
    assert_round_trip(tessera.create_model(name), tmp_path)


def test_create_model_loads_a_saved_directory(tmp_path):
    model = tessera.create_model("swin_t", **SMALL_2D).eval()
    tessera.save_pretrained(model, tmp_path)
    loaded = tessera.create_model("swin_t", pretrained=tmp_path, **SMALL_2D).eval()
    x = sample(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_from_pretrained_with_another_head(tmp_path, caplog):
    model = tessera.create_model("swin_t", **SMALL_2D)
    tessera.save_pretrained(model, tmp_path)
    with caplog.at_level(logging.WARNING, logger="tessera"):
        tuned = tessera.from_pretrained(tmp_path, num_classes=7)
    assert tuned.head.out_features == 7 and "re-initialised" in caplog.text
    assert torch.equal(tuned.norm.weight, model.norm.weight)


def test_saving_replaces_atomically_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    first = tessera.create_model("swin_t", **SMALL_2D)
    tessera.save_pretrained(first, tmp_path)
    before = (tmp_path / WEIGHTS_NAME).read_bytes()
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", WEIGHTS_NAME}
    assert os.stat(tmp_path / WEIGHTS_NAME).st_mode & 0o044  # readable like any other file

    import safetensors.torch

    def broken(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        tessera.save_pretrained(tessera.create_model("swin_t", **SMALL_2D), tmp_path)
    assert (tmp_path / WEIGHTS_NAME).read_bytes() == before  # the old weights are intact
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", WEIGHTS_NAME}


def test_from_pretrained_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        tessera.from_pretrained(tmp_path)
    tessera.save_pretrained(tessera.create_model("swin_t", **SMALL_2D), tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "format_version": 2}))
    with pytest.raises(CheckpointError, match=r"config\.json: format_version 2 .* upgrade tessera"):
        tessera.from_pretrained(tmp_path)
    config_file.write_text(json.dumps({**config, "class": "NoSuchModel"}))
    with pytest.raises(CheckpointError, match="unknown model class 'NoSuchModel'"):
        tessera.from_pretrained(tmp_path)
    config_file.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        tessera.from_pretrained(tmp_path)


class _Scaled(TesseraModel):
    def __init__(self, scale=None) -> None:
        super().__init__()
        self.head = torch.nn.Identity()


class _Linear(TesseraModel):
    """A family whose architecture cannot be read from its weights."""

    def __init__(self, width: int = 4, num_classes: int = 2) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, width
        self.head = torch.nn.Linear(width, num_classes)


def test_convert_a_tessera_directory_uses_its_config(tmp_path):
    source = _Linear(width=6, num_classes=3)
    tessera.save_pretrained(source, tmp_path / "a")
    converted, report = convert_checkpoint(tmp_path / "a", tmp_path / "b", num_classes=3)
    assert report.format == "tessera" and type(converted) is _Linear and converted.model_args["width"] == 6
    assert torch.equal(converted.head.weight, source.head.weight)


def test_save_pretrained_refuses_what_it_cannot_rebuild(tmp_path):
    with pytest.raises(ConfigError, match="arguments scale are not JSON values"):
        tessera.save_pretrained(_Scaled(scale=torch.ones(1)), tmp_path)
    features = tessera.create_model("swin_t", features_only=True, **SMALL_2D)
    with pytest.raises(ConfigError, match="takes a tessera model, got FeaturesModel"):
        tessera.save_pretrained(features, tmp_path)


# ---------------------------------------------------------------------------------------
# the architecture from the weights
# ---------------------------------------------------------------------------------------

GOLDEN_FILES = {
    "official_swin2d_tiny16.pth": ("official_cases.pt", "official_swin2d_tiny16"),
    "official_swin3d_tiny16.pth": ("official_cases.pt", "official_swin3d_tiny16"),
    "timm_swin2d.pth": ("peer_cases.pt", "timm_swin2d"),
    "torchvision_swin2d.pth": ("peer_cases.pt", "torchvision_swin2d"),
    "torchvision_swin3d.pth": ("peer_cases.pt", "torchvision_swin3d"),
    "hf_swin2d": ("peer_cases.pt", "hf_swin2d"),
}


def _as_tuple(value, n):
    return tuple(value) if isinstance(value, (list, tuple)) else (value,) * n


@pytest.mark.parametrize("file", sorted(GOLDEN_FILES))
def test_architecture_is_read_from_every_golden_checkpoint(golden, file):
    cases, case = GOLDEN_FILES[file]
    config = torch.load(golden / cases, weights_only=True)[case]["config"]
    sd, _, _ = read_state_dict(golden / file)
    arch = infer_architecture(convert_state_dict(sd)[0], json.loads((golden / file / "config.json").read_text())
                              if (golden / file).is_dir() else None)
    video = len(_as_tuple(config["patch_size"], 2)) == 3
    assert arch.cls is (VideoSwinTransformer if video else SwinTransformer)
    n = 3 if video else 2
    for key, value in config.items():
        if key in ("patch_size", "window_size", "img_size"):
            assert _as_tuple(arch.args[key], n) == _as_tuple(value, n), key
        else:
            assert tuple(arch.args[key]) == tuple(value) if isinstance(value, list) else arch.args[key] == value, key
    if not video:
        assert arch.args["img_size"] == 224


@pytest.mark.parametrize("name", ["swin_t", "video_swin_t", pytest.param("swin_b_384", marks=pytest.mark.slow),
                                  pytest.param("video_swin_b_ssv2", marks=pytest.mark.slow)])
def test_registered_models_are_recognised_by_their_weights(name):
    model = tessera.create_model(name, num_classes=11)
    arch = infer_architecture(model.state_dict())
    assert arch.name == name
    assert arch.args == model.model_args


def test_convert_reproduces_outputs_and_names_what_it_recognises(golden, tmp_path):
    case = torch.load(golden / "peer_cases.pt", weights_only=True)["timm_swin2d"]
    model, report = convert_checkpoint(golden / "timm_swin2d.pth", tmp_path / "a")
    assert report.format == "timm_swin" and model.model_name is None  # embed 16 is no registered model
    rebuilt = tessera.from_pretrained(tmp_path / "a").eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(case["x"][:1]), case["logits"][:1], atol=1e-4, rtol=1e-4)
    # a registered name, forced: the head keeps the checkpoint's classes unless told otherwise
    named, _ = convert_checkpoint(golden / "timm_swin2d.pth", tmp_path / "b", model="swin_t",
                                  embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
    assert named.model_name == "swin_t" and named.num_classes == 3
    assert json.loads((tmp_path / "b" / "config.json").read_text())["name"] == "swin_t"


def test_convert_recognises_a_registered_model_with_its_own_head(tmp_path):
    source = tessera.create_model("swin_t", num_classes=5, drop_path_rate=0.0)
    torch.save({"model": source.state_dict()}, tmp_path / "ckpt.pth")
    converted, _ = convert_checkpoint(tmp_path / "ckpt.pth", tmp_path / "out")
    assert converted.model_name == "swin_t" and converted.num_classes == 5
    assert converted.model_args["drop_path_rate"] == 0.2  # the registered recipe, not the source's
    # an override that changes the structure drops the name
    resized, report = convert_checkpoint(tmp_path / "ckpt.pth", tmp_path / "out2", window_size=12, img_size=384)
    assert resized.model_name is None and any("to 12x12" in n for n in report.notes)


def test_convert_refuses_weights_it_cannot_read_an_architecture_from(golden, tmp_path):
    with pytest.raises(CheckpointError, match="cannot tell the architecture"):
        convert_checkpoint(golden / "timm_vit.pth", tmp_path)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'windows'"):
        convert_checkpoint(golden / "timm_swin2d.pth", tmp_path, windows=3)
