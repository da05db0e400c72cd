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
from tessera.train import load_trained_model
from tessera.train.checkpoint import load_state

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


# ---------------------------------------------------------------------------------------
# every entry point that reads a checkpoint or a training state refuses the planted pickle
# ---------------------------------------------------------------------------------------


def plant(path, planted) -> None:
    """A checkpoint of plausible weights whose pickle would create ``planted`` when loaded."""
    weights = SwinTransformer(**SMALL).state_dict()
    torch.save({"model": weights, "epoch": 3, "extra": _OpensAFile(str(planted))}, path)


def run_dir_with_planted_state(tmp_path, planted):
    """A run directory whose state.pt is the planted pickle (its recipe is real)."""
    import json

    from tessera.train import load_recipe

    run = tmp_path / "run"
    run.mkdir()
    recipe = load_recipe("demo", ["data.root=digits:train", "data.val_root=null", "model.args.embed_dim=16",
                                  "model.args.depths=[2,2]", "model.args.num_heads=[1,2]"])
    (run / "run.json").write_text(json.dumps({"recipe": recipe.to_dict()}))
    plant(run / "state.pt", planted)
    return run


def weights_dir_with_planted_file(tmp_path, planted, name="pytorch_model.bin"):
    """A weights directory (config.json as save_pretrained writes it) whose weights are the
    planted pickle."""
    directory = tessera.save_pretrained(SwinTransformer(**SMALL), tmp_path / "weights")
    (directory / "model.safetensors").unlink()
    plant(directory / name, planted)
    return directory


def run_dir_with_planted_weights(tmp_path, planted):
    """A run directory whose best.safetensors is the planted pickle under the safetensors name."""
    run = tmp_path / "trained"
    run.mkdir()
    plant(run / "best.safetensors", planted)
    return run


#: the Python entry points: ``(tmp_path, planted pickle file, the file it would create) -> load``
API_ENTRY_POINTS = {
    "load_checkpoint": lambda t, evil, p: tessera.load_checkpoint(SwinTransformer(**SMALL), evil),
    "create_model(pretrained=)": lambda t, evil, p: tessera.create_model("swin_t", pretrained=evil, **SMALL),
    "from_pretrained": lambda t, evil, p: tessera.from_pretrained(weights_dir_with_planted_file(t, p)),
    "load_state": lambda t, evil, p: load_state(evil),
    "load_trained_model": lambda t, evil, p: load_trained_model(run_dir_with_planted_weights(t, p)),
}

#: the commands: the same arguments -> a command line
CLI_ENTRY_POINTS = {
    "train --resume": lambda t, evil, p: ["train", "--resume", str(run_dir_with_planted_state(t, p))],
    "train model.pretrained=": lambda t, evil, p: [
        "train", "--config", "demo", "data.root=digits:train", "data.val_root=null", "model.args.embed_dim=16",
        "model.args.depths=[2,2]", "model.args.num_heads=[1,2]", f"model.pretrained={evil}", "--output",
        str(t / "out")],
    "evaluate --checkpoint": lambda t, evil, p: [
        "evaluate", "--checkpoint", str(run_dir_with_planted_weights(t, p)), "--data", "digits"],
    "predict --checkpoint": lambda t, evil, p: [
        "predict", "--checkpoint", str(run_dir_with_planted_weights(t, p)), str(evil)],
    "convert": lambda t, evil, p: ["convert", str(evil), str(t / "out")],
    "convert DIR": lambda t, evil, p: ["convert", str(weights_dir_with_planted_file(t, p, "model.pth")), str(t / "o")],
    "inflate": lambda t, evil, p: ["inflate", str(evil), str(t / "out"), "--model", "video_swin_t"],
    "export --checkpoint": lambda t, evil, p: [
        "export", "swin_t", "--checkpoint", str(evil), "--output", str(t / "m.onnx"), "--img-size", "64"],
    "export DIR": lambda t, evil, p: [
        "export", str(weights_dir_with_planted_file(t, p)), "--output", str(t / "m.onnx")],
}


@pytest.mark.parametrize("entry", sorted(API_ENTRY_POINTS) + sorted(CLI_ENTRY_POINTS))
def test_no_entry_point_runs_a_planted_pickle(tmp_path, capsys, entry):
    from tessera.cli import main

    planted, evil = tmp_path / "planted", tmp_path / "evil.pth"
    plant(evil, planted)
    if entry in CLI_ENTRY_POINTS:  # one line, exit status 2
        assert main(CLI_ENTRY_POINTS[entry](tmp_path, evil, planted)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "Traceback" not in err[0], err
        message = err[0]
    else:
        with pytest.raises(CheckpointError) as info:
            API_ENTRY_POINTS[entry](tmp_path, evil, planted)
        message = str(info.value)
    assert not planted.exists()
    assert "refused to load" in message or "not a readable safetensors file" in message, message


def test_no_code_path_unpickles_or_loads_unsafely():
    """Read every module: ``torch.load`` only with ``weights_only=True``, and no other
    deserialiser that can run code (pickle, dill, joblib, marshal, shelve, yaml.load,
    numpy with allow_pickle, torch.jit/hub)."""
    import ast
    from pathlib import Path

    root = Path(tessera.__file__).parent
    forbidden_modules = {"dill", "joblib", "cloudpickle", "marshal", "shelve", "_pickle"}
    problems, torch_loads = [], 0
    for file in sorted(root.rglob("*.py")):
        tree = ast.parse(file.read_text(), str(file))
        where = lambda node: f"{file.relative_to(root.parent)}:{node.lineno}"  # noqa: E731
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                problems += [f"{where(node)}: imports {n}" for n in names if n.split(".")[0] in forbidden_modules]
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pickle":
                if node.attr != "UnpicklingError":  # the error type of the safe loader is fine
                    problems.append(f"{where(node)}: pickle.{node.attr}")
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "torch.load" or name.endswith(".torch.load"):
                torch_loads += 1
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where(node)}: torch.load without weights_only=True")
            elif name in ("load", "loads") or name.endswith(("pickle.load", "pickle.loads", "Unpickler")):
                problems.append(f"{where(node)}: {name}(...) of unknown origin")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "torch.jit.load", "torch.hub.load",
                          "eval", "exec"):
                problems.append(f"{where(node)}: {name}")
            elif name in ("np.load", "numpy.load"):
                flag = keywords.get("allow_pickle")
                if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{where(node)}: {name} with allow_pickle")
            elif name == "torch.export.load" and file.name != "export.py":
                # torch.export files are pickles: only export.py reads one, the file it has just written
                problems.append(f"{where(node)}: torch.export.load")
    assert torch_loads >= 1  # the scan sees the one safe reader
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/dir.safetensors"])
def test_a_shard_index_cannot_name_files_outside_its_directory(tmp_path, shard):
    import json

    (tmp_path / "w").mkdir()
    save_file({"w": torch.zeros(1)}, tmp_path / "outside.safetensors")
    (tmp_path / "w" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    assert f"shard {shard!r} is not a file name in" in load_error(tmp_path / "w")
