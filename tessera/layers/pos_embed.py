"""Absolute position embeddings on a grid, and their resizing to another grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_pos_embed(
    pos_embed: torch.Tensor,
    old_grid: Sequence[int],
    new_grid: Sequence[int],
    num_prefix_tokens: int = 0,
    antialias: bool = False,
) -> torch.Tensor:
    """Interpolate a ``(1, prefix + prod(old_grid), C)`` embedding to ``new_grid``.

    2D grids use bicubic interpolation (as timm and the official fine-tuning code), 3D grids
    trilinear; prefix tokens (class, distillation) are kept as they are. ``antialias`` (2D
    only) is timm's ``resample_abs_pos_embed``: an antialiased bicubic kernel, which differs
    from the plain one even when upsampling.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    if old_grid == new_grid:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    c = grid.shape[-1]
    if grid.shape[1] != int(torch.tensor(old_grid).prod()):
        raise ValueError(
            f"position embedding has {grid.shape[1]} grid tokens, which does not match grid {old_grid}"
        )
    mode = {1: "linear", 2: "bicubic", 3: "trilinear"}[len(old_grid)]
    grid = grid.reshape(1, *old_grid, c).movedim(-1, 1).float()
    grid = F.interpolate(grid, size=new_grid, mode=mode, align_corners=False, antialias=antialias and mode == "bicubic")
    grid = grid.movedim(1, -1).reshape(1, -1, c).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def fit_checkpoint_pos_embed(
    pos_embed: torch.Tensor,
    grid: Sequence[int],
    num_prefix_tokens: int = 0,
    antialias: bool = False,
) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """A checkpoint's 2D embedding ``(1, prefix + n, C)`` resized to ``grid``.

    Checkpoints do not record their grid; like timm, take it to be square (every released
    ViT-family checkpoint is). Returns ``(resized, old_grid)``, or ``None`` when the token
    count is not ``prefix`` plus a square (the caller then reports the shape mismatch).
    """
    n = pos_embed.shape[1] - num_prefix_tokens
    side = math.isqrt(max(n, 0))
    if n <= 0 or side * side != n:
        return None
    old = (side, side)
    return resize_pos_embed(pos_embed, old, grid, num_prefix_tokens, antialias), old
