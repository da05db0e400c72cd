"""Patch embedding for images and videos: a strided convolution over non-overlapping patches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed(nn.Module):
    """Cut ``(B, C_in, *S)`` into patches of ``patch_size`` and project them to ``embed_dim``.

    The input is zero-padded at the end of each axis up to a multiple of the patch (as the
    official Video Swin does), so any size works; ``remainder="crop"`` drops the pixels
    that do not fill a patch instead (what a bare strided convolution does: torchvision,
    timm).

    Args:
        patch_size: one entry per spatial axis (2 for images, 3 for videos).
        in_chans: input channels.
        embed_dim: output channels C.
        norm: LayerNorm over C after the projection.
        remainder: ``pad`` or ``crop``.

    Shape: ``(B, C_in, *S) -> (B, *grid, C)`` with ``grid = ceil(S / patch_size)``
    (``floor`` with ``crop``), channels last.
    """

    def __init__(self, patch_size: Sequence[int], in_chans: int = 3, embed_dim: int = 96, norm: bool = True,
                 remainder: str = "pad") -> None:
        super().__init__()
        if remainder not in ("pad", "crop"):
            raise ValueError(f"remainder must be 'pad' or 'crop', got {remainder!r}")
        self.patch_size = tuple(patch_size)
        self.remainder = remainder
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[len(self.patch_size)]
        self.proj = conv(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.remainder == "pad":
            pads: list[int] = []
            for size, p in reversed(list(zip(x.shape[2:], self.patch_size))):
                pads += [0, (p - size % p) % p]
            if any(pads):
                x = F.pad(x, pads)
        x = self.proj(x).movedim(1, -1)
        if self.norm is not None:
            x = self.norm(x)
        return x
