"""Small helpers shared by every model family."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn


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
    """Raise a ``ValueError`` naming the expected and received shape before any
    computation happens.

    ``layout`` describes the expected shape for the message, e.g. ``"(B, 3, H, W)"``.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a tensor of shape {layout}, got {type(x).__name__}")
    if x.dim() != rank:
        raise ValueError(
            f"expected input of shape {layout} ({rank} dimensions), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(
            f"expected {channels} input channels, shape {layout}, got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point input of shape {layout}, got dtype {x.dtype}"
        )
    if min_size is not None:  # the last len(min_size) axes
        spatial = tuple(x.shape[x.dim() - len(min_size) :])
        if any(s < m for s, m in zip(spatial, min_size)):
            raise ValueError(
                f"input of shape {tuple(x.shape)} is smaller than one patch "
                f"{tuple(min_size)} along its last {len(min_size)} dimensions"
            )


def check_image(x: torch.Tensor, channels: int, min_side: int, needs: str) -> None:
    """:func:`check_input` for an image batch ``(B, channels, H, W)`` whose model needs
    ``H`` and ``W`` of at least ``min_side`` (``needs`` says what needs them, for the
    message)."""
    check_input(x, rank=4, channels=channels, layout=f"(B, {channels}, H, W)")
    if min(x.shape[-2:]) < min_side:
        raise ValueError(f"input of shape {tuple(x.shape)} is too small: {needs} needs H and W of at least {min_side}")
