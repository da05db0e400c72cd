"""The command line: a thin layer over the API, one clear line per bad input."""

import subprocess
import sys

import pytest

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
