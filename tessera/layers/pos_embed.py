"""Absolute position embeddings on a grid, and their resizing to another grid."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def resize_pos_embed(
    pos_embed: torch.Tensor,
    old_grid: Sequence[int],
    new_grid: Sequence[int],
    num_prefix_tokens: int = 0,
) -> torch.Tensor:
    """Interpolate a ``(1, prefix + prod(old_grid), C)`` embedding to ``new_grid``.

    2D grids use bicubic interpolation (as timm and the official fine-tuning code), 3D grids
    trilinear; prefix tokens (class, distillation) are kept as they are.
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
    grid = F.interpolate(grid, size=new_grid, mode=mode, align_corners=False)
    grid = grid.movedim(1, -1).reshape(1, -1, c).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
