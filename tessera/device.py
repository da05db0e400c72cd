"""The device a user names on the command line or in a recipe, checked before any work."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` (the GPU of this process when there is one, else the CPU), ``cpu``, ``cuda`` or
    ``cuda:N``; a :class:`ConfigError` for anything else or a GPU this machine lacks."""
    if spec == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"device {spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r}: no CUDA device is available (use cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
