"""Small helpers shared by every model family."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..errors import InputShapeError


def to_ntuple(value: int | Iterable[int], n: int, name: str = "value") -> tuple[int, ...]:
    """``7 -> (7, 7)``; a sequence must already have ``n`` entries."""
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        out = tuple(int(v) for v in value)
        if len(out) != n:
            raise ValueError(f"{name} must have {n} entries, got {out}")
        return out
    return (int(value),) * n


def prod(values: Sequence[int]) -> int:
    return math.prod(values)


def init_linear_trunc_normal(module: nn.Module, std: float = 0.02) -> None:
    """The initialisation of the official Swin/ViT code: truncated normal weights, zero
    biases for linear layers, unit/zero LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def check_input(
    x: torch.Tensor,
    *,
    rank: int,
    channels: int,
    layout: str,
    min_size: Sequence[int] | None = None,
) -> None:
    """Raise an :class:`~tessera.errors.InputShapeError` (a ``ValueError``) naming the
    expected and received shape before any computation happens.

    ``layout`` describes the expected shape for the message, e.g. ``"(B, 3, H, W)"``.
    """
    if not isinstance(x, torch.Tensor):
        raise InputShapeError(f"expected a tensor of shape {layout}, got {type(x).__name__}")
    shape = tuple(x.shape)
    if x.dim() != rank:
        raise InputShapeError(f"expected input of shape {layout} ({rank} dimensions), got shape {shape}")
    if x.shape[1] != channels:
        raise InputShapeError(f"expected {channels} input channels, shape {layout}, got shape {shape}")
    if not x.is_floating_point():
        raise InputShapeError(f"expected a floating-point input of shape {layout}, got {x.dtype} of shape {shape}")
    if min_size is not None:  # the last len(min_size) axes
        spatial = shape[x.dim() - len(min_size) :]
        if any(s < m for s, m in zip(spatial, min_size)):
            raise InputShapeError(
                f"input of shape {shape} is smaller than one patch {tuple(min_size)} along its last "
                f"{len(min_size)} dimensions (expected {layout})"
            )


def check_image(x: torch.Tensor, channels: int, min_side: int, needs: str) -> None:
    """:func:`check_input` for an image batch ``(B, channels, H, W)`` whose model needs
    ``H`` and ``W`` of at least ``min_side`` (``needs`` says what needs them, for the
    message)."""
    check_input(x, rank=4, channels=channels, layout=f"(B, {channels}, H, W)")
    if min(x.shape[-2:]) < min_side:
        raise InputShapeError(f"input of shape {tuple(x.shape)} is too small: {needs} needs H and W of at least "
                              f"{min_side}")


def autocast_enabled(device: torch.device) -> bool:
    """``torch.is_autocast_enabled`` for ``device``'s type, ``False`` on devices that have no
    autocast (``meta``, used to build large models without memory)."""
    try:
        return torch.is_autocast_enabled(device.type)
    except RuntimeError:
        return False
