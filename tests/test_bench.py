"""The benchmark's bookkeeping (never its speed: timings are not tested)."""

import json

import pytest
import torch
from torch import nn

import tessera
from tessera.bench import benchmark, top1_agreement
from tessera.cli import main


class FlipsUnderAutocast(nn.Module):
    """Logits whose argmax is class 0 in fp32 and class 1 under autocast."""

    def forward(self, x):
        logits = torch.zeros(x.shape[0], 3)
        logits[:, 1 if torch.is_autocast_enabled("cpu") else 0] = 1.0
        return logits + 0 * x.sum()


class OnReference(nn.Module):
    """A model run on the reference implementations of every op."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        with tessera.backends.use("reference"):
            return self.model(x)


def test_agreement_counts_samples_whose_top1_changes():
    shape = (4, 3, 8, 8)
    assert top1_agreement(FlipsUnderAutocast(), shape, 10, torch.bfloat16, torch.device("cpu")) == 0.0
    assert top1_agreement(FlipsUnderAutocast(), shape, 10, torch.float32, torch.device("cpu")) == 1.0


def test_result_is_consistent_and_the_peer_gets_the_same_weights():
    torch.manual_seed(0)
    model = tessera.create_model("swin_t", img_size=64, embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4)
    peer = tessera.create_model("swin_t", img_size=64, embed_dim=24, depths=(1, 1), num_heads=(1, 2), window_size=4)
    peer.load_state_dict(model.state_dict())
    r = benchmark(model, "small", (2, 3, 64, 64), peer=("reference", OnReference(peer)), warmup=1, iters=1, rounds=3,
                  agreement_samples=6)
    assert r.ours.samples_per_s == pytest.approx(2 / r.ours.ms_per_batch * 1e3)
    assert r.ours.ms_per_batch in r.ours.rounds_ms and len(r.ours.rounds_ms) == 3
    assert r.ratio == pytest.approx(r.ours.samples_per_s / r.peer.samples_per_s)
    assert r.peer_max_abs_diff < 1e-5  # the same function
    assert set(r.agreement) == {"tessera", "reference"} and all(v == 1.0 for v in r.agreement.values())
    assert r.gmacs_per_sample == pytest.approx(tessera.model_stats(model, (1, 3, 64, 64))["macs"] / 1e9)
    assert 0 < r.fraction_of_matmul and r.matmul_tflops == max(r.matmul_rates.values())


def test_command_prints_json(capsys):
    code = main(["benchmark", "swin_t", "--img-size", "32", "--batch-size", "1", "--warmup", "0", "--iters", "1",
                 "--rounds", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "swin_t" and out["input_shape"] == [1, 3, 32, 32] and out["mode"] == "inference"
    assert out["ours"]["samples_per_s"] > 0 and out["ratio"] is None


def test_a_missing_peer_library_is_a_clear_error(capsys):
    try:
        import timm  # noqa: F401
    except ImportError:
        assert main(["benchmark", "swin_t", "--img-size", "32", "--batch-size", "1", "--compare", "timm"]) != 0
        assert "timm" in capsys.readouterr().err
    else:  # where timm is installed, the comparison runs and reports the difference of outputs
        assert main(["benchmark", "swin_t", "--img-size", "32", "--batch-size", "1", "--compare", "timm",
                     "--warmup", "0", "--iters", "1", "--rounds", "1"]) == 0
        assert "max |diff|" in capsys.readouterr().out


def test_benchmark_needs_no_training_dependencies():
    # a peer environment gets tessera with --no-deps: timing a model must not import the data
    # and training stack (kornia, PyAV)
    import subprocess
    import sys

    code = ("import sys; sys.modules['kornia'] = sys.modules['av'] = None\n"
            "from tessera.cli import main\n"
            "sys.exit(main(['benchmark', 'swin_t', '--img-size', '32', '--batch-size', '1', '--warmup', '0',"
            " '--iters', '1', '--rounds', '1', '--json']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["model"] == "swin_t"


def test_the_model_in_fp32_is_a_peer_of_its_own_autocast(capsys):
    """``--compare fp32`` times the same model in fp32, interleaved with the --dtype run: the
    ratio says whether bf16 pays on this machine."""
    args = ["benchmark", "swin_t", "--img-size", "32", "--batch-size", "1", "--warmup", "0", "--iters", "1",
            "--rounds", "1", "--compare", "fp32", "--json"]
    assert main([*args, "--dtype", "bf16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dtype"] == "bf16" and out["peer"]["name"] == "tessera fp32"
    assert out["ratio"] == out["ours"]["samples_per_s"] / out["peer"]["samples_per_s"]
    assert main(args) == 2  # fp32 against itself says nothing
    assert "--compare fp32" in capsys.readouterr().err
