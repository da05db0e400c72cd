"""Downloading published weights, against a server on 127.0.0.1 that serves small stand-ins
under the real URL paths (through TESSERA_WEIGHTS_MIRROR) and a stand-in hub (through
HF_ENDPOINT): the cache, resuming, hashes, offline use, one download for two processes."""

import dataclasses
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tessera
from tessera.weights import zoo
from tessera.weights.hub import DownloadError, download_path, download_url, hub_download_path
import weights_server

#: the stand-in Swin-T: the registered swin_t made small (its own arguments, same structure)
TINY_SWIN = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2))
TINY_PVT_V2 = dict(depths=(1, 1, 1, 1), embed_dims=(8, 8, 16, 16), num_heads=(1, 1, 2, 2))
server = weights_server.server  # the fixture


def official_file(model: torch.nn.Module) -> bytes:
    """A checkpoint as the official Swin release stores it: ``{'model': state_dict}``."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict()}, buffer)
    return buffer.getvalue()


def tiny_swin_t() -> torch.nn.Module:
    return tessera.create_model("swin_t", **TINY_SWIN)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items() if "relative_position_index" not in k)


def test_download_then_cache_hit_without_a_request(server):
    entry = tessera.get_pretrained("swin_t.ms_in1k")
    reference = tiny_swin_t()
    path = server.add_url(entry.sources[0].url, official_file(reference))
    model = tessera.create_model("swin_t.ms_in1k", pretrained=True, **TINY_SWIN)
    assert same_weights(model, reference) and server.gets(path) == 1
    raw = download_path(entry.sources[0].url)
    converted = zoo.converted_path(entry)
    assert raw.is_file() and converted.is_file() and not raw.with_name(raw.name + ".part").exists()
    assert set(load_file(converted)) >= {"head.weight", "patch_embed.proj.weight"}
    raw.unlink()  # later loads read the converted safetensors only: no pickle, no network
    again = tessera.create_model("swin_t", pretrained="ms_in1k", **TINY_SWIN)
    assert same_weights(again, reference)
    assert sum(server.requests.values()) == 1  # no second request of any kind


def test_resume_after_the_server_cuts_the_file(server):
    url = tessera.get_pretrained("swin_t.ms_in22k").sources[0].url
    data = os.urandom(300_000)
    path = server.add_url(url, data)
    server.cut[path] = 1  # the first response stops halfway, then the connection drops
    assert download_url(url).read_bytes() == data
    assert server.gets(path) == 2 and server.ranges == [(path, f"bytes={len(data) // 2}-")]


def test_a_download_left_by_a_killed_process_resumes(server):
    url = tessera.get_pretrained("swin_s.ms_in1k").sources[0].url
    data = os.urandom(200_000)
    path = server.add_url(url, data)
    part = download_path(url).with_name(download_path(url).name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:123_456])
    assert download_url(url).read_bytes() == data
    assert server.ranges == [(path, "bytes=123456-")] and not part.exists()


def test_torchvision_file_is_checked_against_its_hash(server, golden, monkeypatch):
    """torchvision's layout under its real URL; the stand-in's own digest in place of the
    published one (a file of 8 given hex digits cannot be made), then the published one."""
    case = torch.load(golden / "peer_cases.pt", weights_only=True)["torchvision_swin2d"]
    data = (golden / "torchvision_swin2d.pth").read_bytes()
    entry = tessera.get_pretrained("swin_t.tv_in1k")
    url = entry.sources[0].url
    path = server.add_url(url, data)
    source = dataclasses.replace(entry.sources[0], sha256=hashlib.sha256(data).hexdigest()[:8])
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in case["config"].items()}
    args = {k: config[k] for k in ("embed_dim", "depths", "num_heads", "window_size", "num_classes") if k in config}
    monkeypatch.setitem(zoo._ENTRIES, entry.name, dataclasses.replace(entry, sources=(source,), args=args))
    model = tessera.create_model("swin_t.tv_in1k", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(case["x"]), case["logits"], atol=1e-4, rtol=1e-4)
    assert server.gets(path) == 1


def test_hash_mismatch_is_rejected_and_nothing_is_left(server):
    entry = tessera.get_pretrained("swin_t.tv_in1k")  # the published digest: 704ceda3...
    server.add_url(entry.sources[0].url, b"\x80 not the published file" * 1000)
    with pytest.raises(DownloadError, match=r"SHA-256 starts with [0-9a-f]{8}, expected 704ceda3; .*deleted"):
        tessera.create_model("swin_t.tv_in1k", pretrained=True)
    home = Path(os.environ["TESSERA_HOME"])
    assert not [p for p in home.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_offline_says_which_url_and_where_to_put_the_file(server, monkeypatch, capsys):
    from tessera.cli import main

    entry = tessera.get_pretrained("swin_t.ms_in1k")
    url = entry.sources[0].url
    monkeypatch.setenv("TESSERA_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        tessera.create_model("swin_t.ms_in1k", pretrained=True, **TINY_SWIN)
    message = str(info.value)
    manual = download_path(url)
    assert "\n" not in message and url in message and f"put it at {manual}" in message
    assert sum(server.requests.values()) == 0
    # the command line says the same in one line
    assert main(["predict", "--model", "swin_t.ms_in1k", "x.jpg"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and url in err and str(manual) in err
    # the file put there by hand is used, still offline
    assert not manual.parent.exists()  # nothing written while offline
    reference = tiny_swin_t()
    manual.parent.mkdir(parents=True)
    manual.write_bytes(official_file(reference))
    assert same_weights(tessera.create_model("swin_t.ms_in1k", pretrained=True, **TINY_SWIN), reference)


def test_unreachable_server_names_the_url_and_the_mirror(server, monkeypatch):
    port = server.httpd.server_address[1]
    server.close()  # nothing listens there any more
    monkeypatch.setenv("TESSERA_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
    url = tessera.get_pretrained("video_swin_t.k400_1k").sources[0].url
    with pytest.raises(DownloadError, match=f"cannot download {url} \\(through the mirror http://127.0.0.1:{port}/"
                                            f"github.com/.*download it yourself and put it at"):
        download_url(url)


def test_hub_weights_through_the_endpoint(server):
    reference = tessera.create_model("pvt_v2_b0", **TINY_PVT_V2)
    from safetensors.torch import save

    path = server.add_hub("timm/pvt_v2_b0.in1k", "model.safetensors",
                          save({k: v.contiguous() for k, v in reference.state_dict().items()}))
    model = tessera.create_model("pvt_v2_b0.in1k", pretrained=True, **TINY_PVT_V2)
    assert same_weights(model, reference) and server.gets(path) == 1
    assert list((Path(os.environ["HF_HOME"]) / "hub").glob("models--timm--pvt_v2_b0.in1k/blobs/*"))
    tessera.create_model("pvt_v2_b0.in1k", pretrained=True, **TINY_PVT_V2)
    assert server.gets(path) == 1


def test_hub_repository_without_safetensors_gives_its_pytorch_model_bin(server, monkeypatch):
    """microsoft/cvt-13 in transformers' layout, as pytorch_model.bin only; the stand-in is
    the tiny transformers CvT of tests/data, whose logits transformers recorded."""
    import json

    from tessera.weights.formats.hf_cvt import cvt_args

    data = Path(__file__).parent / "data"
    case = torch.load(data / "hf_cases.pt", weights_only=True)["hf_cvt_tiny"]
    buffer = io.BytesIO()
    torch.save(load_file(data / "hf_cvt_tiny" / "model.safetensors"), buffer)
    path = server.add_hub("microsoft/cvt-13", "pytorch_model.bin", buffer.getvalue())
    entry = tessera.get_pretrained("cvt_13.ms_in1k")
    args = {**cvt_args(json.loads((data / "hf_cvt_tiny" / "config.json").read_text())), "num_classes": 5}
    monkeypatch.setitem(zoo._ENTRIES, entry.name, dataclasses.replace(entry, args=args))
    model = tessera.create_model("cvt_13.ms_in1k", pretrained=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(case["x"]), case["logits"], atol=1e-4, rtol=1e-4)
    assert server.gets(path) == 1 and server.requests[("HEAD", "/microsoft/cvt-13/resolve/main/model.safetensors")]


def test_a_hub_file_put_by_hand_is_used(server, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = tessera.create_model("pvt_v2_b0", **TINY_PVT_V2)
    from safetensors.torch import save_file

    manual = hub_download_path("timm/pvt_v2_b0.in1k", "model.safetensors")
    manual.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, manual)
    assert same_weights(tessera.create_model("pvt_v2_b0.in1k", pretrained=True, **TINY_PVT_V2), reference)
    assert sum(server.requests.values()) == 0


@pytest.mark.slow
def test_two_processes_download_once(server, tmp_path):
    url = tessera.get_pretrained("swin_b.ms_in1k").sources[0].url
    data = os.urandom(400_000)
    path = server.add_url(url, data)
    server.delay = 0.5  # eight chunks, 4 s: the second process starts while the first downloads
    code = ("import logging; logging.basicConfig(level=logging.INFO)\n"
            f"from tessera.weights.hub import download_url; print(download_url({url!r}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=os.environ.copy()) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o.strip() for o, _ in outs} == {str(download_path(url))}
    assert sum("waiting for another process" in err for _, err in outs) == 1  # the lock made one wait
    assert server.gets(path) == 1 and download_path(url).read_bytes() == data


def test_a_file_put_by_hand_is_checked_against_the_published_hash(server, monkeypatch):
    monkeypatch.setenv("TESSERA_OFFLINE", "1")
    url = tessera.get_pretrained("swin_b.tv_in1k").sources[0].url
    manual = download_path(url)
    manual.parent.mkdir(parents=True)
    manual.write_bytes(b"\x80 something else")
    with pytest.raises(DownloadError, match="expected 68c6b09e; .*deleted"):
        tessera.create_model("swin_b.tv_in1k", pretrained=True, **TINY_SWIN)
    assert not manual.exists()
