"""Convolutions on token sequences: a convolution followed by BatchNorm, and the two
reshapes between tokens ``(B, N, C)`` and channels-first maps ``(B, C, H, W)``.

The hybrid families (CvT, CeiT, ...) keep their tokens as sequences and turn them into maps
only for a convolution; these helpers make that round trip in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def tokens_to_map(x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """``(B, H * W, C) -> (B, C, H, W)`` for ``grid = (H, W)`` (tokens in raster order)."""
    b, n, c = x.shape
    h, w = grid
    if n != h * w:
        raise ValueError(f"{n} tokens do not fill a {h}x{w} grid")
    return x.transpose(1, 2).reshape(b, c, h, w)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W) -> (B, H * W, C)`` in raster order."""
    return x.flatten(2).transpose(1, 2)


class ConvBN(nn.Module):
    """``Conv2d`` then ``BatchNorm2d`` (the conv has no bias by default: the norm has one).

    Args:
        in_chans, out_chans: channels.
        kernel_size, stride: of the convolution.
        padding: default ``kernel_size // 2`` (the output keeps ``ceil(H / stride)`` rows).
        groups: ``in_chans`` for a depthwise convolution.
        bias: a bias on the convolution as well.

    Shape: ``(B, in_chans, H, W) -> (B, out_chans, H', W')``.
    """

    def __init__(
        self,
        in_chans: int,
        out_chans: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))
