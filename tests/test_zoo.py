"""The table of published weights: names, sources spelled as published, label sets, the
preprocessing of each weight, and the README's table generated from it."""

import dataclasses
import hashlib
import io
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import tessera
from tessera.errors import ConfigError, UnknownModelError
from tessera.labels import LABEL_SETS, label_names, label_set_for, synset_to_index, synsets
from tessera.weights import zoo
from tessera.weights.zoo import find_by_file_name, get_pretrained, list_pretrained
from tessera.weights.zoo_table import HEADER, entry_stats, markdown_table, row
import weights_server

server = weights_server.server  # the fixture

README = Path(__file__).resolve().parents[1] / "README.md"

_SWIN = "https://github.com/SwinTransformer/storage/releases/download/"
_TV = "https://download.pytorch.org/models/"
#: every URL and hub repository of the reference model zoo, spelled as published
PUBLISHED_URLS = {_SWIN + p for p in [
    "v1.0.0/swin_tiny_patch4_window7_224.pth", "v1.0.0/swin_small_patch4_window7_224.pth",
    "v1.0.0/swin_base_patch4_window7_224.pth", "v1.0.0/swin_base_patch4_window12_384.pth",
    "v1.0.8/swin_tiny_patch4_window7_224_22k.pth", "v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth",
    "v1.0.8/swin_small_patch4_window7_224_22k.pth", "v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth",
    "v1.0.0/swin_base_patch4_window7_224_22k.pth", "v1.0.0/swin_base_patch4_window7_224_22kto1k.pth",
    "v1.0.0/swin_base_patch4_window12_384_22k.pth", "v1.0.0/swin_base_patch4_window12_384_22kto1k.pth",
    "v1.0.0/swin_large_patch4_window7_224_22k.pth", "v1.0.0/swin_large_patch4_window7_224_22kto1k.pth",
    "v1.0.0/swin_large_patch4_window12_384_22k.pth", "v1.0.0/swin_large_patch4_window12_384_22kto1k.pth",
    "v1.0.4/swin_tiny_patch244_window877_kinetics400_1k.pth", "v1.0.4/swin_small_patch244_window877_kinetics400_1k.pth",
    "v1.0.4/swin_base_patch244_window877_kinetics400_1k.pth", "v1.0.4/swin_base_patch244_window877_kinetics400_22k.pth",
    "v1.0.4/swin_base_patch244_window877_kinetics600_22k.pth", "v1.0.4/swin_base_patch244_window1677_sthv2.pth",
    "v1.0.4/swin_base_patch244_window1677_kinetics400_22k.pth",
    "v2.0.0/swinv2_tiny_patch4_window8_256.pth", "v2.0.0/swinv2_small_patch4_window8_256.pth",
    "v2.0.0/swinv2_base_patch4_window8_256.pth", "v2.0.0/swinv2_tiny_patch4_window16_256.pth",
    "v2.0.0/swinv2_small_patch4_window16_256.pth", "v2.0.0/swinv2_base_patch4_window16_256.pth",
    "v2.0.0/swinv2_base_patch4_window12_192_22k.pth", "v2.0.0/swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth",
    "v2.0.0/swinv2_base_patch4_window12to24_192to384_22kto1k_ft.pth", "v2.0.0/swinv2_large_patch4_window12_192_22k.pth",
    "v2.0.0/swinv2_large_patch4_window12to16_192to256_22kto1k_ft.pth",
    "v2.0.0/swinv2_large_patch4_window12to24_192to384_22kto1k_ft.pth",
]} | {_TV + f for f in [
    "swin_t-704ceda3.pth", "swin_s-5e29d889.pth", "swin_b-68c6b09e.pth", "swin_v2_t-b137f0e2.pth",
    "swin_v2_s-637d8ceb.pth", "swin_v2_b-781e5279.pth", "swin3d_t-7615ae03.pth", "swin3d_s-da41c237.pth",
    "swin3d_b_1k-24f7c7c6.pth", "swin3d_b_22k-7c6ae6fa.pth",
]}
#: the hub repositories the reference names: every registry must have them
REQUIRED_HUB = {
    "timm/swin_tiny_patch4_window7_224.ms_in1k", "timm/swin_tiny_patch4_window7_224.ms_in22k",
    "timm/swin_tiny_patch4_window7_224.ms_in22k_ft_in1k", "timm/vit_base_patch16_224.augreg2_in21k_ft_in1k",
    "timm/deit_small_patch16_224.fb_in1k", "timm/deit_base_distilled_patch16_224.fb_in1k",
    "timm/cait_xxs24_224.fb_dist_in1k", "timm/cait_s24_224.fb_dist_in1k", "timm/levit_128s.fb_dist_in1k",
    "timm/levit_256.fb_dist_in1k", "timm/pvt_v2_b0.in1k", "timm/pvt_v2_b2.in1k", "timm/pvt_v2_b2_li.in1k",
    "microsoft/swin-tiny-patch4-window7-224", "microsoft/cvt-13", "microsoft/cvt-21", "microsoft/cvt-13-384",
    "Zetatech/pvt-tiny-224", "Zetatech/pvt-small-224", "Zetatech/pvt-medium-224", "Zetatech/pvt-large-224",
    "OpenGVLab/pvt_v2_b0", "timm/swinv2_tiny_window8_256.ms_in1k",
    "timm/swinv2_base_window12to24_192to384.ms_in22k_ft_in1k", "microsoft/swinv2-tiny-patch4-window8-256",
}
PUBLISHED_HUB = REQUIRED_HUB | {
    # timm's other repositories of the same families (timm 1.0.31's pretrained configurations)
    "timm/swin_small_patch4_window7_224.ms_in1k", "timm/swin_small_patch4_window7_224.ms_in22k",
    "timm/swin_small_patch4_window7_224.ms_in22k_ft_in1k", "timm/swin_base_patch4_window7_224.ms_in1k",
    "timm/swin_base_patch4_window7_224.ms_in22k", "timm/swin_base_patch4_window7_224.ms_in22k_ft_in1k",
    "timm/swin_base_patch4_window12_384.ms_in1k", "timm/swin_base_patch4_window12_384.ms_in22k",
    "timm/swin_base_patch4_window12_384.ms_in22k_ft_in1k", "timm/swin_large_patch4_window7_224.ms_in22k",
    "timm/swin_large_patch4_window7_224.ms_in22k_ft_in1k", "timm/swin_large_patch4_window12_384.ms_in22k",
    "timm/swin_large_patch4_window12_384.ms_in22k_ft_in1k", "timm/deit_tiny_patch16_224.fb_in1k",
    "timm/deit_base_patch16_224.fb_in1k", "timm/deit_tiny_distilled_patch16_224.fb_in1k",
    "timm/deit_small_distilled_patch16_224.fb_in1k", "timm/swinv2_tiny_window16_256.ms_in1k",
    "timm/swinv2_small_window8_256.ms_in1k", "timm/swinv2_small_window16_256.ms_in1k",
    "timm/swinv2_base_window8_256.ms_in1k", "timm/swinv2_base_window16_256.ms_in1k",
    "timm/swinv2_base_window12_192.ms_in22k", "timm/swinv2_large_window12_192.ms_in22k",
    "timm/swinv2_base_window12to16_192to256.ms_in22k_ft_in1k",
    "timm/swinv2_large_window12to16_192to256.ms_in22k_ft_in1k",
    "timm/swinv2_large_window12to24_192to384.ms_in22k_ft_in1k",
    # the other OpenGVLab PVT v2 repositories
    "OpenGVLab/pvt_v2_b2", "OpenGVLab/pvt_v2_b2_linear",
}


def _sources():
    return [s for name in list_pretrained() for s in get_pretrained(name).sources]


def test_every_source_is_spelled_as_published_and_every_published_weight_is_there():
    urls = {s.url for s in _sources() if s.url}
    hubs = {s.hub for s in _sources() if s.hub}
    assert urls <= PUBLISHED_URLS, urls - PUBLISHED_URLS
    assert hubs <= PUBLISHED_HUB, hubs - PUBLISHED_HUB
    assert urls == PUBLISHED_URLS  # the whole zoo
    assert REQUIRED_HUB <= hubs, REQUIRED_HUB - hubs


def test_torchvision_hashes_are_the_file_names_digits():
    checked = [s for s in _sources() if s.url and s.url.startswith(_TV)]
    assert len(checked) == 10
    for s in checked:
        assert re.fullmatch(r"[0-9a-f]{8}", s.sha256) and s.url.endswith(f"-{s.sha256}.pth")


def test_names_defaults_and_lookups():
    names = list_pretrained()
    assert len(names) == len(set(names)) and all(n.count(".") == 1 for n in names)
    assert list_pretrained("swin_t") == ["swin_t.ms_in1k", "swin_t.ms_in22k_ft_in1k", "swin_t.ms_in22k",
                                         "swin_t.tv_in1k"]
    assert get_pretrained("swin_t").name == "swin_t.ms_in1k"  # a model's first entry is its default
    assert get_pretrained("swin_b").name == "swin_b.ms_in22k_ft_in1k"
    for name in names:
        entry = get_pretrained(name)
        assert tessera.is_model(entry.model) and entry.label_set in LABEL_SETS and entry.license
        assert entry.top1 is None or 60 < entry.top1 < 90
    with pytest.raises(UnknownModelError, match="swin_t has no weights tagged 'in1k'; its tags: ms_in1k"):
        get_pretrained("swin_t.in1k")
    with pytest.raises(UnknownModelError, match="deepvit_s has no pretrained weights"):
        get_pretrained("deepvit_s")


def test_create_model_by_name_and_tag_without_weights():
    with torch.device("meta"):  # the architecture alone: nothing allocated
        m = tessera.create_model("swin_b_384.ms_in22k")
    assert m.num_classes == 21841 and m.model_name == "swin_b_384" and m.pretrained_cfg["label_set"] == "imagenet-22k"
    assert m.default_cfg["crop_pct"] == 1.0
    m = tessera.create_model("video_swin_b.k600_22k", depths=(1, 1), num_heads=(1, 2), embed_dim=16)
    assert m.num_classes == 600 and m.pretrained_cfg["data"]["num_clips"] == 4
    with pytest.raises(ConfigError, match="already names its weights"):
        tessera.create_model("swin_t.ms_in1k", pretrained="tv_in1k")


def test_label_sets_have_their_sizes_and_imagenet_synsets():
    for name, (_, count) in LABEL_SETS.items():
        assert len(label_names(name)) == count and label_set_for(count) == name
    assert label_names("imagenet-1k")[:2] == ["tench", "goldfish"] and label_names("imagenet-1k")[207] == \
        "golden retriever"
    assert synsets("imagenet-1k")[0] == "n01440764" and synset_to_index("imagenet-1k")["n02099601"] == 207
    assert synsets("imagenet-22k")[0] == "n00004475" and len(set(synsets("imagenet-22k"))) == 21841
    assert label_names("kinetics-400")[0] == "abseiling" and label_names("kinetics-600")[-1] == "zumba"
    assert label_names("something-something-v2")[0] == "Approaching something with your camera"
    assert synsets("kinetics-400") is None and label_set_for(7) is None


def test_data_config_is_each_weights_own_preprocessing():
    tv = tessera.data_config("swin_t.tv_in1k")
    assert (tv["resize"], tv["img_size"], tv["interpolation"]) == (232, 224, "bicubic")
    official = tessera.data_config("swin_t.ms_in1k")
    assert official["resize"] == 256 and official["mean"] == [0.485, 0.456, 0.406]
    assert tessera.data_config("swin_b_384.ms_in1k")["resize"] == 384
    assert tessera.data_config("vit_b_16.augreg2_in21k_ft_in1k")["mean"] == [0.5, 0.5, 0.5]
    k400 = tessera.data_config("video_swin_t.k400_1k")
    assert (k400["clip_len"], k400["frame_interval"], k400["num_clips"], k400["num_crops"]) == (32, 2, 4, 3)
    ssv2 = tessera.data_config("video_swin_b_ssv2.ssv2")
    assert ssv2["frame_uniform"] and (ssv2["num_clips"], ssv2["num_crops"]) == (1, 3)
    assert tessera.data_config("deepvit_s")["crop_pct"] == 0.9  # no weights: the model's own defaults
    with torch.device("meta"):
        model = tessera.create_model("swin_t.tv_in1k")
    assert tessera.data_config(model) == tv


def test_swin_v2_entries_follow_the_v1_conventions():
    assert list_pretrained("swinv2_t") == ["swinv2_t.ms_in1k", "swinv2_t.tv_in1k"]
    assert [s.format for s in get_pretrained("swinv2_t").sources] == ["official", "timm_swin", "hf_swinv2"]
    assert [s.format for s in get_pretrained("swinv2_b.tv_in1k").sources] == ["torchvision_swinv2"]
    # the official TEST.CROP: short side to int(256 / 224 * size); none at 384; torchvision's own sizes
    assert [tessera.data_config(n)["resize"] for n in ("swinv2_t.ms_in1k", "swinv2_b_192_22k.ms_in22k",
                                                      "swinv2_l_w12to24_384.ms_in22k_ft_in1k", "swinv2_s.tv_in1k",
                                                      "swinv2_b.tv_in1k")] == [292, 219, 384, 260, 272]
    assert tessera.data_config("swinv2_b.tv_in1k")["img_size"] == 256
    with torch.device("meta"):
        pretrained_22k = tessera.create_model("swinv2_l_192_22k.ms_in22k")
        fine_tuned = tessera.create_model("swinv2_b_w12to24_384.ms_in22k_ft_in1k")
    assert pretrained_22k.num_classes == 21841 and pretrained_22k.pretrained_cfg["label_set"] == "imagenet-22k"
    assert fine_tuned.num_classes == 1000 and fine_tuned.pretrained_window_sizes == (12, 12, 12, 6)
    assert fine_tuned.default_cfg["crop_pct"] == 1.0
    assert find_by_file_name("swinv2_base_patch4_window12to16_192to256_22kto1k_ft.pth").name == \
        "swinv2_b_w12to16_256.ms_in22k_ft_in1k"


#: each Swin V2 source of the registry: (entry, its source, the recorded case of that layout)
V2_SOURCES = [("swinv2_t.ms_in1k", 0, "official_swinv2_w8_64"), ("swinv2_t.ms_in1k", 1, "timm_swinv2"),
              ("swinv2_t.ms_in1k", 2, "hf_swinv2"), ("swinv2_t.tv_in1k", 0, "torchvision_swinv2")]
V2_FILES = {"official_swinv2_w8_64": "official_swinv2_w8_64.pth", "timm_swinv2": "timm_swinv2.pth",
            "hf_swinv2": "hf_swinv2/model.safetensors", "torchvision_swinv2": "torchvision_swinv2.pth"}


@pytest.mark.parametrize("name, index, case_name", V2_SOURCES)
def test_swin_v2_sources_convert_their_layout(server, golden, monkeypatch, name, index, case_name):
    """A small checkpoint of the source's library served under the source's own URL or hub
    repository (a torchvision stand-in's own digest in place of the published one), the only
    source of its entry: the entry's format converts it, and the registered model, made as
    small, reproduces that library's recorded logits."""
    from safetensors.torch import save

    case = torch.load(golden / "v2" / "swinv2_cases.pt", weights_only=True)[case_name]
    data = (golden / "v2" / V2_FILES[case_name]).read_bytes()
    entry = get_pretrained(name)
    source = entry.sources[index]
    if source.url:
        path = server.add_url(source.url, data)
        if source.sha256:
            source = dataclasses.replace(source, sha256=hashlib.sha256(data).hexdigest()[:8])
    else:
        if case_name == "timm_swinv2":  # timm's hub holds safetensors
            sd = torch.load(io.BytesIO(data), weights_only=True)
            data = save({k: v.contiguous() for k, v in sd.items()})
        path = server.add_hub(source.hub, source.file, data)
    args = dict(img_size=case["x"].shape[-1], embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                num_classes=10)  # every case's settings, window 8 as swinv2_t's
    monkeypatch.setitem(zoo._ENTRIES, name, dataclasses.replace(entry, sources=(source,), args=args))
    model = tessera.create_model(name, pretrained=True).eval()
    report = model.load_report
    assert not report.missing and not report.unexpected and not report.reinitialized
    with torch.no_grad():
        torch.testing.assert_close(model(case["x"]), case["logits"], atol=1e-4, rtol=1e-4)
    assert server.gets(path) == 1


def test_eval_transform_resizes_crops_and_normalises():
    transform = tessera.eval_transform("swin_t.tv_in1k")
    img = Image.new("RGB", (464, 300), (255, 0, 0))
    x = transform(img)
    assert x.shape == (3, 224, 224)
    expected = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224,
                                                                                                      0.225])
    torch.testing.assert_close(x[:, 100, 100], expected)
    assert transform.crop.size == 224 and transform.crop.crop_pct == 224 / 232
    train = tessera.train_transform("swin_t.ms_in1k")
    assert train(img).shape == (3, 224, 224)


def _readme_rows() -> list[str]:
    text = README.read_text()
    start = text.index(HEADER)
    lines = text[start:].splitlines()
    return [line for line in lines[2:] if line.startswith("|")][: len(list_pretrained())]


def test_readme_table_lists_every_weight_as_the_registry_says():
    rows = _readme_rows()
    assert len(rows) == len(list_pretrained())
    for line, name in zip(rows, list_pretrained()):
        cells = [c.strip() for c in line.strip("|").split("|")]
        entry = get_pretrained(name)
        expected = row(entry, stats=(0, 0))
        assert [cells[i] for i in (0, 1, 2, 5)] == [expected[i] for i in (0, 1, 2, 5)], line
    # the counted columns, for a few models (the full table is checked by the slow test)
    for line in rows:
        if line.startswith(("| `levit_128s", "| `pvt_v2_b0", "| `swin_t.ms_in1k`")):
            name = line.split("`")[1]
            assert line == "| " + " | ".join(row(get_pretrained(name))) + " |"
    assert entry_stats(get_pretrained("swin_t.ms_in1k"))[0] == 28_288_354  # torchvision's num_params


@pytest.mark.slow
def test_readme_table_is_the_generated_one():
    text = README.read_text()
    assert markdown_table() in text
