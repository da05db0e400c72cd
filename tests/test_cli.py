"""The command line: a thin layer over the API, one clear line per bad input."""

import subprocess
import sys

import pytest
import torch

import tessera
from tessera.cli import main


def test_summary_prints_counts_and_stage_shapes(capsys):
    assert main(["summary", "swin_t"]) == 0
    out = capsys.readouterr().out
    assert "28,288,354" in out and "4.491" in out
    assert "(1, 96, 56, 56)" in out and "(1, 768, 7, 7)" in out


def test_list_filters(capsys):
    assert main(["list", "video_*"]) == 0
    names = capsys.readouterr().out.split()
    assert "video_swin_t" in names and "swin_t" not in names


def test_unknown_model_is_one_line_with_suggestions(capsys):
    assert main(["summary", "swin_tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown model 'swin_tiny'" in err and "swin_t" in err


@pytest.mark.slow
def test_console_entry_point_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "tessera", "list", "swin_t"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "swin_t"


# -- summary: every model, eval mode, meta device -----------------------------------------


@pytest.mark.parametrize("name", tessera.list_models())
def test_summary_of_every_registered_model(name, capsys):
    """Every registered model keeps summary's promise, in eval mode (LeViT's BatchNorm on a
    batch of one), on the meta device (the largest answer at once)."""
    assert main(["summary", name, "--num-classes", "7"]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.strip().splitlines())
    with torch.device("meta"):
        segmentation = getattr(tessera.create_model(name), "task", None) == "segmentation"
    # a segmentation model's logits are per pixel, at the input's size
    expected = f"(1, 7, {rows['input'].strip('()').split(', ', 2)[2]})" if segmentation else "(1, 7)"
    assert rows["logits"] == expected and int(rows["parameters"].replace(",", "")) > 1e6
    assert float(rows["GMACs"]) > 0


def _small_models():
    return [
        tessera.create_model("swin_t", embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), img_size=(72, 56)),
        tessera.create_model("video_swin_t", embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 4, 4)),
        tessera.create_model("levit_128s", img_size=64),
        tessera.create_model("vit_t_16", img_size=48, depth=2),
    ]


def test_flops_counted_on_the_meta_device_equal_the_real_count():
    shapes = [(1, 3, 72, 56), (1, 3, 6, 40, 40), (1, 3, 64, 64), (1, 3, 48, 48)]
    torch.manual_seed(0)
    real = [tessera.model_stats(m, s) for m, s in zip(_small_models(), shapes)]
    with torch.device("meta"):
        meta_models = _small_models()
    meta = [tessera.model_stats(m, s) for m, s in zip(meta_models, shapes)]
    assert meta == real and all(r["macs"] > 0 for r in real)


def test_summary_falls_back_to_the_cpu_then_says_what_failed_in_one_line(monkeypatch, capsys):
    from tessera import registry
    from tessera.models.base import TesseraModel

    class NeedsValues(TesseraModel):
        """A model whose forward reads a value (impossible on the meta device)."""

        def __init__(self, num_classes: int = 2, fail: bool = False) -> None:
            super().__init__()
            self.num_classes, self.fail = num_classes, fail
            self.head = torch.nn.Linear(3, num_classes)
            self.default_cfg["input_size"] = (3, 8, 8)

        def forward_features(self, x):
            if self.fail or x.mean().item() > 1e9:
                raise RuntimeError("no kernel for this\nsecond line")
            return x.mean((2, 3))

        def forward_head(self, x, pre_logits=False):
            return x if pre_logits else self.head(x)

    def needs_values(**kw):
        return NeedsValues(**kw)

    def always_fails(**kw):
        return NeedsValues(fail=True, **kw)

    monkeypatch.setitem(registry._MODELS, "needs_values", needs_values)
    monkeypatch.setitem(registry._MODELS, "always_fails", always_fails)
    assert main(["summary", "needs_values"]) == 0
    assert "logits      (1, 2)" in capsys.readouterr().out
    assert main(["summary", "always_fails"]) == 2
    err = capsys.readouterr().err
    assert err == "tessera summary: error: always_fails cannot run its summary input: no kernel for this\n"


# -- start-up: no PyTorch until a command needs it ----------------------------------------


def test_help_and_import_do_not_load_torch():
    code = ("import sys, tessera, tessera.cli; tessera.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
    # the package's API is there all the same, loaded on first use
    code = ("import tessera; from tessera import create_model, list_models; "
            "print(tessera.create_model is create_model, tessera.errors.ConfigError.__name__, "
            "'swin_t' in list_models(), tessera.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["True", "ConfigError", "True", tessera.__version__], out.stderr


# -- list -----------------------------------------------------------------------------------


def test_list_without_a_match_says_so_and_suggests(capsys):
    assert main(["list", "swim*"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tessera list: no registered model matches 'swim*'; close names: swin_")
    assert main(["list", "vit_h*"]) == 1 and "vit_b_16" in capsys.readouterr().err
    assert main(["list", "zzzz"]) == 1 and "`tessera list` shows them all" in capsys.readouterr().err
