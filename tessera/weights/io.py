"""Reading checkpoint files safely: never unpickling anything but plain tensors and containers."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def read_checkpoint_file(path: str | os.PathLike) -> Any:
    """Read a ``.safetensors`` file with safetensors, anything else with
    ``torch.load(weights_only=True)`` (which refuses pickles that would run code).

    Raises :class:`CheckpointError` naming the file and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "Weights only load failed" in str(e):
            raise CheckpointError(
                f"{path}: refused to load: the file holds pickled objects other than tensors, which could "
                f"run code ({first}). Convert it where you trust it, or use a .safetensors file."
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupted pickle): {first}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupted?): {msg}") from None
