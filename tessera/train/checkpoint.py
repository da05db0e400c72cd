"""What a run leaves on disk, written so that a crash never destroys the last good copy.

* ``last.safetensors`` / ``best.safetensors``: the model weights, with the run information
  (model name and arguments, class names, input size and normalisation) in the file's
  metadata, so that one file is enough to evaluate or predict.
* ``state.pt``: everything needed to continue the run exactly (weights, optimiser, scaler,
  EMA, step, random states, history), as plain tensors, numbers, strings, lists and dicts,
  readable with ``torch.load(weights_only=True)``.

Every file goes to a temporary file in the same directory, is flushed to disk and then
renamed over the old one (``os.replace`` is atomic), so the previous file stays complete
until the new one is.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import CheckpointError

#: the metadata key of a weights file that holds the run information (JSON)
RUN_INFO_KEY = "tessera_run"
STATE_FORMAT = "tessera-train-state-1"


# ---------------------------------------------------------------------------------------
# Weights with run information
# ---------------------------------------------------------------------------------------


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
    """Write ``state_dict`` as safetensors with ``info`` (JSON) in the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={RUN_INFO_KEY: json.dumps(dict(info))})


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A weights file, or a run directory (its ``best.safetensors``, else ``last.safetensors``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: a directory without best.safetensors or last.safetensors (not a run directory)")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    return path


def read_run_info(path: str | os.PathLike) -> dict[str, Any]:
    """The run information stored in a weights file written by ``tessera train``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: expected a .safetensors file written by tessera train, or a run directory")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from None
    if RUN_INFO_KEY not in meta:
        raise CheckpointError(f"{path}: holds no run information (model, classes); it was not written by tessera train")
    try:
        info = json.loads(meta[RUN_INFO_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its run information is not valid JSON: {e}") from None
    for key in ("model", "model_args", "classes", "data"):
        if key not in info:
            raise CheckpointError(f"{path}: its run information lacks {key!r}")
    return info


def load_trained_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a ``tessera train`` checkpoint (a weights file or a run
    directory) and load its weights. Returns ``(model in eval mode, run information)``."""
    from ..registry import create_model
    from ..weights import load_checkpoint

    file = resolve_checkpoint(path)
    info = read_run_info(file)
    model = create_model(info["model"], **info["model_args"])
    load_checkpoint(model, file, strict=True, verbose=False)
    info["checkpoint"] = str(file)
    return model.to(device).eval(), info


# ---------------------------------------------------------------------------------------
# The training state
# ---------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every random generator the loop draws from, as plain tensors and numbers."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write a training state (plain containers of tensors and numbers) atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": STATE_FORMAT, **state}, tmp)


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training state safely (``weights_only``: nothing but tensors and containers)."""
    from ..weights.io import read_checkpoint_file

    state = read_checkpoint_file(path)
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not a tessera training state")
    return state
