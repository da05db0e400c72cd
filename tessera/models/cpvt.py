"""CPVT: Conditional Positional Encodings for Vision Transformers (Chu et al., ICLR 2023).

CPVT drops the absolute position embedding of ViT/DeiT. Instead, a *positional encoding
generator* (PEG) after the first block reshapes the patch tokens to their 2D grid and adds a
3x3 depthwise convolution of them: ``x + dwconv(x)``. The convolution's zero padding tells
the tokens near the border where they are, and because it is computed from the tokens
themselves the encoding exists for any input size -- no interpolation, no fixed grid.

CPVT-Ti and CPVT-S are DeiT-Ti and DeiT-S with one PEG after block 0 (the paper's default
position); the paper reports 5.7M and 22M parameters. ``global_pool="avg"`` with
``class_token=False`` is the paper's CPVT-GAP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import register_model
from .base import maybe_checkpoint
from .vit import VisionTransformer, vit_size

__all__ = ["CPVT", "PEG"]


class PEG(nn.Module):
    """Positional encoding generator: ``x + dwconv(x)`` on the patch tokens laid out on
    their grid, with a depthwise ``kernel_size`` convolution and zero padding; prefix tokens
    pass unchanged.

    Shape: ``(B, prefix + H * W, C) -> (B, prefix + H * W, C)`` for a grid ``(H, W)``.
    """

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
        prefix, tokens = x[:, :num_prefix_tokens], x[:, num_prefix_tokens:]
        b, _, c = tokens.shape
        feat = tokens.transpose(1, 2).reshape(b, c, *grid)
        tokens = (self.proj(feat) + feat).flatten(2).transpose(1, 2)
        return torch.cat([prefix, tokens], dim=1)


class CPVT(VisionTransformer):
    """A ViT with positional encoding generators instead of a position embedding.

    Args:
        peg_positions: after which blocks a PEG is applied (the paper: ``(0,)``; its
            strongest variant uses ``(0, 1, 2, 3, 4)``).
        peg_kernel: the PEG's convolution size (odd).
        (the rest as :class:`~tessera.models.vit.VisionTransformer`, without ``pos_embed``)

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)`` for any ``H, W`` of at least one
    patch; ``forward_features`` gives ``(B, prefix + (H / p) * (W / p), C)``.
    """

    def __init__(self, peg_positions: tuple[int, ...] = (0,), peg_kernel: int = 3, **kwargs: Any) -> None:
        if kwargs.pop("pos_embed", "none") != "none":
            raise ValueError("CPVT has no absolute position embedding: its PEGs generate the encoding")
        super().__init__(pos_embed="none", **kwargs)
        depth = len(self.blocks)
        if not peg_positions or any(not 0 <= i < depth for i in peg_positions) or peg_kernel % 2 == 0:
            raise ValueError(
                f"peg_positions {tuple(peg_positions)} must be block indices below {depth} and peg_kernel odd"
            )
        self.peg_positions = tuple(int(i) for i in peg_positions)
        self.pegs = nn.ModuleList(PEG(self.embed_dim, peg_kernel) for _ in self.peg_positions)

    def no_weight_decay(self) -> set[str]:
        # the official code (Twins' PosCNN) keeps the generator's convolution out of weight decay
        return super().no_weight_decay() | {f"pegs.{n}" for n, _ in self.pegs.named_parameters()}

    def _forward_blocks(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        for i, blk in enumerate(self.blocks):
            x = maybe_checkpoint(blk, x, enabled=self.grad_checkpointing)
            if i in self.peg_positions:
                x = self.pegs[self.peg_positions.index(i)](x, grid, self.num_prefix_tokens)
        return x


# ---------------------------------------------------------------------------------------
# Registered variants: DeiT-Ti/S with one PEG after the first block
# ---------------------------------------------------------------------------------------


@register_model
def cpvt_ti(**kwargs) -> CPVT:
    """CPVT-Ti: DeiT-Ti (C192, 12 blocks, 3 heads) with a PEG after block 0."""
    return CPVT(**vit_size("t", **kwargs))


@register_model
def cpvt_s(**kwargs) -> CPVT:
    """CPVT-S: DeiT-S (C384, 12 blocks, 6 heads) with a PEG after block 0."""
    return CPVT(**vit_size("s", **kwargs))
