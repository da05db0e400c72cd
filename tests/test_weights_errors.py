"""Bad files give one clear error naming the file and the problem; a pickle that would run
code is refused without running it."""

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import tessera
from tessera.errors import CheckpointError
from tessera.models import SwinTransformer

SMALL = dict(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=3)


def load_error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        tessera.load_checkpoint(SwinTransformer(**SMALL), path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    return message


class _OpensAFile:
    """Unpickling this creates ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class _RunsAShellCommand:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("payload", [_OpensAFile, _RunsAShellCommand])
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, payload, writer):
    planted = tmp_path / "planted"
    ckpt = {"extra": payload(str(planted)), "model": {"patch_embed.proj.weight": torch.zeros(16, 3, 4, 4)}}
    path = tmp_path / "evil.pth"
    if writer == "torch.save":
        torch.save(ckpt, path)
    else:  # a plain pickle (protocol 2, as torch's legacy files)
        with open(path, "wb") as f:
            pickle.dump(ckpt, f, protocol=2)
    assert not planted.exists()
    message = load_error(path)
    assert "refused to load" in message and ("open" in message or "system" in message)
    assert not planted.exists()


def test_numpy_arrays_are_refused_too(tmp_path):
    import numpy as np

    torch.save({"a": np.zeros(3)}, tmp_path / "np.pth")
    assert "refused to load" in load_error(tmp_path / "np.pth")


def test_truncated_files(tmp_path):
    sd = SwinTransformer(**SMALL).state_dict()
    torch.save(sd, tmp_path / "full.pth")
    save_file(sd, tmp_path / "full.safetensors")
    for name in ("full.pth", "full.safetensors"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / ("cut" + os.path.splitext(name)[1])
        cut.write_bytes(data[: len(data) // 2])
        assert "truncated or corrupted" in load_error(cut)


@pytest.mark.parametrize(
    "content,expected",
    [(b"", "the file is empty"), (b"name,value\n1,2\n", "not a PyTorch or safetensors checkpoint"),
     (b"\x80\x02garbage", "not a readable checkpoint"), (os.urandom(256), "")],
)
def test_malformed_files(tmp_path, content, expected):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    assert expected in load_error(path)


def test_missing_file_and_directory_without_weights(tmp_path):
    assert "no such file" in load_error(tmp_path / "nope.pth")
    assert "a directory without any of model.safetensors" in load_error(tmp_path)


@pytest.mark.parametrize(
    "content,expected",
    [([torch.zeros(2)], "expected a dict of tensors, found list"),
     ({"epoch": 3, "arch": "swin"}, "found no weights in the checkpoint (top-level keys: epoch, arch)"),
     ({}, "found no weights")],
)
def test_files_without_a_state_dict(tmp_path, content, expected):
    torch.save(content, tmp_path / "odd.pth")
    assert expected in load_error(tmp_path / "odd.pth")


def test_mismatched_checkpoint_lists_the_keys_and_shapes(tmp_path):
    torch.save(SwinTransformer(**{**SMALL, "embed_dim": 32}).state_dict(), tmp_path / "wide.pth")
    message = load_error(tmp_path / "wide.pth")
    assert "does not fit the model" in message
    assert "patch_embed.proj.weight: checkpoint (32, 3, 4, 4) vs model (16, 3, 4, 4)" in message
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    assert "none of its 1 tensors match the model" in load_error(tmp_path / "other.pth")
