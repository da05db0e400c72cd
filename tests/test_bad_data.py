"""Bad files in a data set, images or videos, are named once and skipped; the run goes on
and says how many it skipped, and too many stop it with a message. A decodable image under
the wrong ending is a good image."""

import io
import json
import os
import signal

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from tessera.cli import main
from tessera.data import ImageFolder
from tessera.data.loader import StepSampler, build_loader
from tessera.data.moving_digits import write_moving_digits

from digit_folders import TINY, VIDEO_TINY, write_digit_folder, write_no_frames


def plant_bad_files(root):
    """One file of each kind of trouble; returns ``{path: what the report says}`` for the
    files that are skipped, and the paths of the others."""
    a_jpeg = next((root / "1").glob("*.jpg")).read_bytes()
    a_png = next((root / "7").glob("*.png"))
    (root / "0" / "empty.png").write_bytes(b"")
    (root / "1" / "truncated.jpg").write_bytes(a_jpeg[: len(a_jpeg) // 2])
    (root / "7" / "truncated.png").write_bytes(a_png.read_bytes()[:200])
    (root / "7" / "words.jpg").write_text("a text file with an image's ending\n")
    (root / "0" / "gone.png").symlink_to(root / "0" / "deleted.png")  # a link to a file that is not there
    skipped = {
        root / "0" / "empty.png": "the file is empty",
        root / "1" / "truncated.jpg": "runcated",
        root / "7" / "truncated.png": "image file is truncated",
        root / "7" / "words.jpg": "cannot identify image file",
        root / "0" / "gone.png": "No such file or directory",
    }
    # a PNG named .jpg, and a file that is no image by its ending: neither is a bad sample
    (root / "0" / "really_a_png.jpg").write_bytes(a_png.read_bytes())
    (root / "1" / "notes.txt").write_text("labels checked by hand\n")
    return skipped, root / "0" / "really_a_png.jpg", root / "1" / "notes.txt"


@pytest.mark.slow
def test_a_data_set_with_every_kind_of_bad_file_trains_and_names_each(tmp_path, capsys, caplog):
    train = write_digit_folder(tmp_path / "train")
    skipped, png_as_jpg, notes = plant_bad_files(train)
    val = write_digit_folder(tmp_path / "val", per_class=4, split="val")
    (val / "0" / "empty.jpg").write_bytes(b"")
    out = tmp_path / "run"
    code = main(["train", "--config", "demo", f"data.root={train}", f"data.val_root={val}", *TINY,
                 "data.max_bad_fraction=0.2", "--output", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "done: 2 epochs" in stdout
    log = caplog.text
    for path, reason in skipped.items():  # seen in both epochs, named once, with the reason
        lines = [line for line in log.splitlines() if str(path) in line]
        assert len(lines) == 1 and "skipped an unreadable train sample" in lines[0] and reason in lines[0], path
    assert log.count(str(val / "0" / "empty.jpg")) == 1
    assert f"ignored 1 files that are not images (by their ending): {notes}" in log
    assert str(png_as_jpg) not in log
    assert "skipped 6 unreadable samples in all" in stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_samples"] for r in rows] == [6, 6]
    # the PNG under a JPEG name is read as the image it is
    ds = ImageFolder(train)
    x, y = ds[[p for p, _ in ds.samples].index(str(png_as_jpg))]
    assert x.shape == (3, 32, 32) and ds.classes[y] == "0"
    with Image.open(png_as_jpg) as img:
        assert img.format == "PNG"


def plant_bad_videos(root):
    """Beside the moving digits' ``train`` list: a video without frames, a few bytes of
    garbage named .mp4, a frames folder without frames, and a line naming a file that is not
    there; in the ``val`` class folders, a frames folder without frames and a text file.
    Returns the ``{path: what the report says}`` of the videos that are skipped."""
    write_no_frames(root / "no_frames.avi")
    (root / "header.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00\x01garbage")
    (root / "frames_lost").mkdir()
    (root / "val" / "west" / "frames_lost").mkdir()
    (root / "val" / "notes.txt").write_text("not a class\n")
    (root / "val" / "west" / "notes.txt").write_text("not a video\n")
    with open(root / "train.txt", "a") as f:
        f.write("no_frames.avi 0\nheader.mp4 1\nframes_lost 2\ngone.mp4 3\n")
    return {
        root / "no_frames.avi": "no video frames",
        root / "header.mp4": "Invalid data found",
        root / "frames_lost": "a folder without frame images",
        root / "gone.mp4": "no such file or directory",
        root / "val" / "west" / "frames_lost": "a folder without frame images",
    }


@pytest.mark.slow
def test_a_video_set_with_every_kind_of_bad_video_trains_and_names_each(tmp_path, capsys, caplog):
    root = tmp_path / "md"
    write_moving_digits(root, ["train", "val"], per_class=2)  # 16 videos in 8 classes each
    skipped = plant_bad_videos(root)
    out = tmp_path / "run"
    # 20 training samples in 2 steps of 10: each epoch reads every one of them
    args = ["train", "--config", "video_demo", f"data.root={root / 'train.txt'}", f"data.val_root={root / 'val'}",
            f"data.class_names={root / 'classes.txt'}", *VIDEO_TINY, "data.batch_size=10", "schedule.epochs=2",
            "--output", str(out)]
    assert main([*args, "data.max_bad_fraction=0.2"]) == 0
    stdout = capsys.readouterr().out
    assert "done: 2 epochs" in stdout and "skipped 5 unreadable samples in all" in stdout
    log = caplog.text
    for path, reason in skipped.items():  # read in both epochs, named once, with the reason
        lines = [line for line in log.splitlines() if str(path) in line]
        split = "val" if "/val/" in str(path) else "train"
        assert len(lines) == 1 and f"skipped an unreadable {split} sample" in lines[0] and reason in lines[0], lines
    assert f"ignored 1 files that are not videos (by their ending): {root / 'val' / 'west' / 'notes.txt'}" in log
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_samples"] for r in rows] == [5, 5]

    # more bad samples than allowed: the run stops in its first epoch, saying why
    caplog.clear()
    assert main([*args, "data.max_bad_fraction=0.1", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "of the 20 train samples could not be read (more than 10.0%, data.max_bad_fraction)" in err[0]
    assert not (out / "state.pt").exists()


class _WorkerPids(Dataset):
    """Each sample is the id of the process that made it."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int):
        return torch.tensor(os.getpid()), index


def test_data_workers_outlive_a_ctrl_c_sent_to_the_process_group():
    # a terminal's Ctrl-C reaches the workers too; the step being finished still needs them
    sampler = StepSampler(12, batch_size=2, shuffle=False)
    loader = build_loader(_WorkerPids(), sampler, 2, num_workers=1)
    it = iter(loader)
    pids, _, _ = next(it)
    worker = int(pids[0])
    assert worker != os.getpid()
    os.kill(worker, signal.SIGINT)
    rest = [y for _, y, _ in it]
    assert torch.cat(rest).tolist() == list(range(2, 12))


def test_evaluation_names_bad_files_and_counts_them(tmp_path, capsys):
    from tessera import create_model
    from tessera.train.checkpoint import save_weights

    val = write_digit_folder(tmp_path / "val", per_class=2, split="val")
    (val / "1" / "cut.png").write_bytes(io.BytesIO(b"\x89PNG\r\n\x1a\n").getvalue())
    model = create_model("swin_t", img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), num_classes=3)
    info = {"model": "swin_t", "model_args": model.model_args, "classes": ["0", "1", "7"],
            "data": {"img_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "kind": "image"}}
    save_weights(tmp_path / "w.safetensors", model.state_dict(), info)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "w.safetensors"), "--data", str(val), "--json",
                 "--workers", "0"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["num_samples"] == 6 and res["skipped_samples"] == 1
