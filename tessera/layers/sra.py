"""Spatial-reduction attention (PVT v1 and v2): every token queries a smaller key/value map.

Global attention over the ``H * W`` tokens of a high-resolution stage costs ``(H W)^2``.
PVT keeps a query per token but computes keys and values from the map reduced by
``sr_ratio`` on each side (a strided convolution, then LayerNorm), so the cost becomes
``(H W)^2 / sr^2``. PVT v2's linear variant instead pools the map to a fixed ``7 x 7``
(adaptive average pooling, a 1x1 convolution, LayerNorm and GELU): the cost is then
linear in ``H W``, at any input size.

Parameter names follow the reference code (``q``, ``kv``, ``proj``, ``sr``, ``norm``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .attention import Attention, attend


class SpatialReductionAttention(Attention):
    """Multi-head attention with spatially reduced keys and values.

    Args:
        dim: channels C.
        num_heads: heads h; ``C`` must be divisible by ``h``.
        sr_ratio: side of the reducing convolution (kernel = stride); 1 attends to every
            token (no ``sr``/``norm`` then).
        linear: PVT v2-li: pool keys/values to ``pool_size`` whatever the input size
            (``sr_ratio`` is then unused).
        pool_size: the pooled side of the linear variant (7).
        qkv_bias: bias on ``q`` and ``kv``.
        qk_scale: score scale; default ``(C / h) ** -0.5``.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.

    Shape: ``x`` ``(B, N, C)`` with ``N = H * W`` tokens of the map ``grid = (H, W)`` in
    raster order (prefix tokens such as a class token are allowed when nothing is reduced)
    -> ``(B, N, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        linear: bool = False,
        pool_size: int = 7,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, qk_scale, attn_drop, proj_drop)
        # queries come from every token, keys and values from the reduced map: the fused
        # projection is split in two (the reference's ``q`` and ``kv``)
        del self.qkv
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.sr_ratio = sr_ratio
        self.linear = linear
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if linear else None
        self.sr: nn.Module | None = None
        self.norm: nn.Module | None = None
        self.act = nn.GELU() if linear else None
        if linear:
            self.sr = nn.Conv2d(dim, dim, kernel_size=1)
            self.norm = nn.LayerNorm(dim)
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def reduce(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """The tokens keys and values are computed from: ``(B, H * W, C) -> (B, M, C)`` with
        ``M = floor(H / sr) * floor(W / sr)`` (``49`` for the linear variant), or ``x``
        itself when nothing is reduced."""
        if self.sr is None:
            return x
        b, n, c = x.shape
        h, w = grid
        if n != h * w:
            raise ValueError(f"spatial reduction needs the {h}x{w} map alone, got {n} tokens")
        x = x.transpose(1, 2).reshape(b, c, h, w)
        if self.pool is not None:
            x = self.pool(x)
        x = self.norm(self.sr(x).flatten(2).transpose(1, 2))
        return self.act(x) if self.act is not None else x

    def forward(self, x: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:  # type: ignore[override]
        b, n, c = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q(x).view(b, n, h, d).transpose(1, 2)
        k, v = self.kv(self.reduce(x, grid)).view(b, -1, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        x = attend(q, k, v, None, self.scale, self.dropout_p())
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}, linear={self.linear}"
