"""DeepViT (Zhou et al., 2021): re-attention against the attention collapse of deep ViTs.

In deep ViTs the attention maps of the top blocks become nearly the same from block to block.
Re-attention regenerates them: the softmax maps of the ``h`` heads are mixed by a learned
``h x h`` matrix (a 1x1 convolution over the heads, ``reatten_matrix``), normalised by a
BatchNorm over the heads (``var_norm``), and only then multiply the values.

The registered DeepViT-S and DeepViT-L follow the authors' code (``deepvit_S`` and
``deepvit_L`` of zhoudaquan/DeepViT_ICCV21, built on timm), whose names this module keeps:

* DeepViT-S: C396, 16 blocks, 12 heads, MLP ratio 3, re-attention in the last 5 blocks,
  re-attention maps scaled by ``head_dim ** -0.5``;
* DeepViT-L: C420, 32 blocks, 12 heads, MLP ratio 3, re-attention in the last 12 blocks;
* both: the 3-layer convolutional patch embedding (7x7 stride-2 conv, 3x3 conv, then 8x8
  patches), and the residual-branch adjustment ``scale_adjustment=0.5`` of that code (each
  branch sees ``norm(x * s)`` and adds its output divided by ``s``).

The paper reports 27M parameters for DeepViT-S and 55M for DeepViT-L.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

from ..layers.attention import Attention
from ..layers.block import Block, layer_scale
from ..layers.patch_embed import PatchEmbed
from ..registry import register_model
from .vit import VisionTransformer

__all__ = ["DeepViT", "ReAttention"]


class ReAttention(Attention):
    """Self-attention whose softmax maps are re-mixed across heads before they meet the values.

    Args:
        transform_scale: multiply the re-generated maps by ``head_dim ** -0.5``.
        (the rest as :class:`~tessera.layers.attention.Attention`)

    Shape: ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        transform_scale: bool = False,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.reatten_matrix = nn.Conv2d(num_heads, num_heads, kernel_size=1)  # Θ, with a bias per head
        self.var_norm = nn.BatchNorm2d(num_heads)
        self.reatten_scale = self.scale if transform_scale else 1.0

    def attention_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The re-generated maps ``BN(Θ^T softmax(q k^T / sqrt(d)))``: ``(B, h, N, N)``."""
        b, n, _ = x.shape
        q, k, _ = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self._reattend(q, k)

    def _reattend(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        return self.var_norm(self.reatten_matrix(attn)) * self.reatten_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = (self._reattend(q, k) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class DeepViTBlock(Block):
    """A pre-norm block with the residual-branch adjustment of the DeepViT code:
    ``x + f(norm(x * s)) / s`` for both branches (``s = 1`` is the plain block).

    Shape: ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int, scale_adjustment: float = 1.0, **kwargs: Any) -> None:
        super().__init__(dim, num_heads, **kwargs)
        self.scale_adjustment = scale_adjustment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_adjustment
        x = x + self.drop_path(layer_scale(self.attn(self.norm1(x * s)), self.gamma_1)) / s
        return x + self.drop_path(layer_scale(self.mlp(self.norm2(x * s)), self.gamma_2)) / s


class ConvPatchEmbed(PatchEmbed):
    """The convolutional patch embedding of DeepViT-S/L (after T2T-ViT): a 7x7 stride-2
    conv and a 3x3 conv to 64 channels (each with BatchNorm and ReLU), then patches of half
    the patch size on the half-resolution map.

    Shape: ``(B, C_in, H, W) -> (B, ceil(ceil(H / 2) / (p / 2)), ..., C)`` channels last.
    """

    def __init__(self, patch_size: Sequence[int], in_chans: int = 3, embed_dim: int = 768, stem_dim: int = 64):
        super().__init__(tuple(p // 2 for p in patch_size), stem_dim, embed_dim, norm=False)
        self.conv1 = nn.Conv2d(in_chans, stem_dim, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_dim)
        self.conv2 = nn.Conv2d(stem_dim, stem_dim, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_dim)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return super().forward(x)


class DeepViT(VisionTransformer):
    """DeepViT: a ViT whose last blocks use re-attention.

    Args:
        reattention_blocks: how many of the last blocks use re-attention (``None``: all).
        transform_scale: scale the re-generated maps by ``head_dim ** -0.5``.
        scale_adjustment: the residual-branch adjustment ``s`` of the DeepViT code
            (1.0: plain pre-norm blocks).
        conv_stem: the 3-layer convolutional patch embedding instead of a single
            patch projection.
        (the rest as :class:`~tessera.models.vit.VisionTransformer`)

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives the
    normalised ``(B, 1 + N, C)``.
    """

    def __init__(
        self,
        reattention_blocks: int | None = None,
        transform_scale: bool = False,
        scale_adjustment: float = 1.0,
        conv_stem: bool = False,
        **kwargs: Any,
    ) -> None:
        # read by _make_patch_embed and _make_block, which the base constructor calls
        self.reattention_blocks = reattention_blocks
        self.transform_scale = transform_scale
        self.scale_adjustment = scale_adjustment
        self.conv_stem = conv_stem
        super().__init__(**kwargs)
        self.default_cfg.update(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.9)

    def _make_patch_embed(self, in_chans: int, embed_dim: int) -> nn.Module:
        if self.conv_stem:
            return ConvPatchEmbed(self.patch_size, in_chans, embed_dim)
        return super()._make_patch_embed(in_chans, embed_dim)

    def _make_block(self, index: int, depth: int, **kwargs) -> nn.Module:
        if self.reattention_blocks is None or index >= depth - self.reattention_blocks:
            kwargs["attn_layer"] = partial(ReAttention, transform_scale=self.transform_scale)
        return DeepViTBlock(scale_adjustment=self.scale_adjustment, **kwargs)


# ---------------------------------------------------------------------------------------
# Registered variants: DeepViT-S and DeepViT-L of the paper (Zhou et al. 2021, Table 5)
# ---------------------------------------------------------------------------------------
# The widths, depths, heads, MLP ratio and re-attention layout are the authors' deepvit_S and
# deepvit_L. Their code also replaces the 16x16 patch projection by a convolutional stem
# (``conv_stem=True`` builds it: +1.3M parameters for S, +1.45M for L); the paper's counts
# (27M, 55M) fit the plain patch embedding (25.9M, 57.4M) and not the stem (27.3M, 58.9M).

_COMMON = dict(patch_size=16, num_heads=12, mlp_ratio=3.0, qkv_bias=True, conv_stem=False, scale_adjustment=0.5)


@register_model
def deepvit_s(**kwargs) -> DeepViT:
    """DeepViT-S: C396, 16 blocks (re-attention in the last 5), 12 heads, MLP ratio 3."""
    return DeepViT(**{**_COMMON, "embed_dim": 396, "depth": 16, "reattention_blocks": 5, "transform_scale": True, **kwargs})


@register_model
def deepvit_l(**kwargs) -> DeepViT:
    """DeepViT-L: C420, 32 blocks (re-attention in the last 12), 12 heads, MLP ratio 3."""
    return DeepViT(**{**_COMMON, "embed_dim": 420, "depth": 32, "reattention_blocks": 12, **kwargs})
