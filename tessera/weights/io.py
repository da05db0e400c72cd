"""Reading checkpoint files safely: never unpickling anything but plain tensors and containers."""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0].split(". ")[0] if text else ""


def _unpickler_problem(message: str) -> tuple[str | None, str]:
    """``(global, detail)`` from torch's weights-only error: the global it refused (a class
    or function the pickle wanted to call), or None, and the unpickler's own words."""
    detail = message.split("WeightsUnpickler error:", 1)[-1]
    found = re.search(r"GLOBAL (\S+)", detail)
    return (found.group(1) if found else None), _first_line(detail)


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """Read a safetensors file with safetensors, a PyTorch file with
    ``torch.load(weights_only=True)``, which refuses pickles that would run code: anything
    but tensors and plain containers is refused before it is created.

    Raises :class:`CheckpointError` naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    with open(path, "rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # safetensors: 8-byte length, JSON header
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from None
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # zip (torch.save) or pickle
        raise CheckpointError(f"{path}: not a PyTorch or safetensors checkpoint (it starts with {head[:8]!r})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on the pickle protocol
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused, detail = _unpickler_problem(str(e))
        if refused is not None:
            raise CheckpointError(
                f"{path}: refused to load: the file holds pickled objects other than tensors ({refused}), "
                "which could run code; convert it where you trust it, or use a .safetensors file"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (corrupted, or a pickle the safe loader cannot read: {detail})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        msg = _first_line(str(e)) or type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {msg}") from None


#: the file that describes a weights directory (tessera's ``save_pretrained``, Hugging Face)
CONFIG_NAME = "config.json"


def read_directory_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``config.json`` of a weights directory, or None when ``path`` is not a directory
    or has none. Raises :class:`CheckpointError` when the file is not a JSON object."""
    file = Path(path) / CONFIG_NAME
    if not Path(path).is_dir() or not file.is_file():
        return None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: expected a JSON object, found {type(config).__name__}")
    return config
