"""A run killed at any moment loses nothing: ``tessera train`` in a real process, killed with
SIGKILL mid-epoch, right after a checkpoint and in the middle of checkpoint writes, then
resumed with ``--resume`` to its end, finishes with the same weights, bit for bit, as a run
that was never interrupted. Ctrl-C and SIGTERM stop it cleanly after the current step.

To kill at an exact point, the killed processes run the same command through a runner that
reports each finished step and each checkpoint file on stderr (``written NAME``: the
temporary file is complete and not yet renamed over NAME; ``renamed NAME``: done), and
halts at the point the test names, until the test kills it. Nothing else changes.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tessera.train.checkpoint import load_state, read_run_info

from digit_folders import TINY, write_digit_folder

ROOT = Path(__file__).resolve().parents[1]

RUNNER = r"""
import contextlib, os, sys, time
import tessera.train.checkpoint as checkpoint
from tessera.train.engine import Trainer

halts = os.environ.get("HALT_AT", "").split(",")

def say(text, trainer=None):
    print(f"@ {text}", file=sys.stderr, flush=True)
    if halts and text == halts[0]:
        halts.pop(0)
        end = time.monotonic() + 600  # until the test kills this process, or a step is asked to stop
        while time.monotonic() < end and not (trainer is not None and trainer.stop_requested):
            time.sleep(0.02)

atomic_path = checkpoint.atomic_path

@contextlib.contextmanager
def announced(path):
    with atomic_path(path) as tmp:
        yield tmp
        say(f"written {path.name}")
    say(f"renamed {path.name}")

checkpoint.atomic_path = announced
train_step = Trainer.train_step

def counted(self, batches):
    loss = train_step(self, batches)
    say(f"step {self.global_step + 1}", self)
    return loss

Trainer.train_step = counted
from tessera.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("digits")
    return write_digit_folder(base / "train"), write_digit_folder(base / "val", per_class=4, split="val")


def train_args(data, *extra: str) -> list[str]:
    """48 images in steps of 8: 6 steps per epoch, 2 epochs; the state is also saved every 2
    steps; EMA, crops and drop path draw random numbers all along."""
    train, val = data
    return ["train", "--config", "demo", f"data.root={train}", f"data.val_root={val}", *TINY,
            "model.args.drop_path_rate=0.1", "train.ema_decay=0.9", "train.save_every_steps=2", "train.threads=1",
            "train.deterministic=true", *extra]


def environment(**extra: str) -> dict[str, str]:
    # the reference backend: runs that train side by side measure their choices each on its
    # own, and may choose differently (the same function, not the same bits)
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TESSERA_BACKEND": "reference", **extra}


def tessera(*args: str, **kwargs) -> subprocess.Popen:
    """``python -m tessera ARGS``, exactly as a user runs it."""
    return subprocess.Popen([sys.executable, "-m", "tessera", *args], env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc: subprocess.Popen, status: int = 0) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err
    return out


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run, started at once and running alongside the interrupted ones."""
    out = tmp_path_factory.mktemp("reference")
    proc = tessera(*train_args(data, "--output", str(out)))
    yield lambda: (finish(proc), out)[1]
    proc.kill()
    proc.communicate()


def halted(args: list[str], halt_at: str, **kwargs) -> subprocess.Popen:
    """The command run by the runner, which halts at each of the ``halt_at`` points in turn
    (comma-separated); returns once the first is reached."""
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, *args], env=environment(HALT_AT=halt_at),
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kwargs)
    wait_for(proc, halt_at.split(",")[0])
    return proc


def wait_for(proc: subprocess.Popen, point: str, timeout: float = 120) -> None:
    """Read the runner's reports up to ``@ point``; a run that does not get there in time
    is killed."""
    seen, watchdog = [], threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        for line in proc.stderr:
            seen.append(line.rstrip())
            if line.strip() == f"@ {point}":
                return
    finally:
        watchdog.cancel()
    proc.wait()
    raise AssertionError(f"the run ended (status {proc.returncode}) before '{point}':\n" + "\n".join(seen[-20:]))


def temporaries(run: Path) -> list[str]:
    """What interrupted writes left: ``.NAME.PID.TOKEN.tmp`` as ``.NAME``."""
    return sorted(p.name.rsplit(".", 3)[0] for p in run.glob(".*.tmp"))


def state_step(run: Path) -> int | None:
    return load_state(run / "state.pt")["global_step"] if (run / "state.pt").exists() else None


def assert_same_run(ref: Path, run: Path) -> None:
    """The same weights, EMA and optimiser state bit for bit, and the same record but for
    the speed."""
    a, b = load_state(ref / "state.pt"), load_state(run / "state.pt")
    assert a["global_step"] == b["global_step"] == 12
    for part in ("model", "ema"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    for i, slot in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][i][k]) for k, v in slot.items())
    for name in ("last.safetensors", "best.safetensors"):
        wa, wb = load_file(ref / name), load_file(run / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    rows = [[{k: v for k, v in json.loads(line).items() if k != "images_per_s"}
             for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (ref, run)]
    assert rows[0] == rows[1] and len(rows[0]) == 2


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_weights(data, reference, tmp_path):
    run = tmp_path / "killed"
    first, resume = train_args(data, "--output", str(run)), ["train", "--resume", str(run)]
    # (command, where it is killed, the step of state.pt afterwards, temporaries the kill left)
    kills = [
        (first, "step 1", None, []),  # before any checkpoint: --resume starts it again
        (resume, "renamed state.pt", 2, []),  # right after the first checkpoint
        (resume, "written state.pt", 2, [".state.pt"]),  # writing the next one: the old one stays
        (resume, "step 5", 4, []),  # mid-epoch, between checkpoints
        # at the end of the epoch, last.safetensors and best.safetensors are written, the
        # state is being written: the weights are newer than the state that is resumed
        (resume, "written state.pt", 4, [".state.pt"]),
    ]
    for args, point, step, left in kills:
        proc = halted(args, point)
        proc.kill()  # SIGKILL: no handler, no clean-up
        assert proc.wait() == -signal.SIGKILL
        proc.communicate()
        assert state_step(run) == step, point
        assert temporaries(run) == left, point
    assert read_run_info(run / "last.safetensors")["epoch"] == 1 and read_run_info(run / "best.safetensors")

    assert "done: 2 epochs, 12 steps" in finish(tessera(*resume))
    assert temporaries(run) == []
    assert_same_run(reference(), run)


@pytest.mark.slow
def test_sigint_and_sigterm_stop_after_the_step_with_a_checkpoint(data, reference, tmp_path):
    run = tmp_path / "stopped"
    resume = ["train", "--resume", str(run)]
    # Ctrl-C in a terminal: SIGINT to the whole process group, in the middle of step 3
    proc = halted(train_args(data, "--output", str(run)), "step 3", start_new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"stopped after step 3, checkpoint saved in {run}; continue with: tessera train --resume {run}" in out
    assert "SIGINT: finishing this step, then saving a checkpoint; send it again to stop at once" in err
    assert state_step(run) == 3

    # SIGTERM, as a scheduler sends it
    proc = halted(resume, "step 5")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143 and state_step(run) == 5
    assert "stopped after step 5" in proc.communicate()[0]

    # a second signal, more than a moment after the first, stops at once: here in the
    # middle of the checkpoint that the first one asked for, which is then not written
    proc = halted(resume, "step 7,written state.pt")
    proc.send_signal(signal.SIGINT)
    wait_for(proc, "written state.pt")
    time.sleep(1.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == -signal.SIGINT
    proc.communicate()
    assert state_step(run) == 6 and temporaries(run) == [".state.pt"]  # the end of epoch 1

    assert "done: 2 epochs, 12 steps" in finish(tessera(*resume))
    assert_same_run(reference(), run)
