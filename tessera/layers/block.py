"""The pieces every plain (non-pyramid) vision transformer is made of: the pre-norm block with
optional LayerScale, class attention, and the handling of prefix tokens (class, distillation).

Token sequences are ``(B, N, C)`` with the prefix tokens first, as in timm.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .attention import Attention, attend
from .drop import DropPath
from .mlp import Mlp

#: The norm of the ViT family (timm, DeiT, CaiT): LayerNorm with eps 1e-6.
LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


def prepend_tokens(x: torch.Tensor, *tokens: torch.Tensor) -> torch.Tensor:
    """Put learned ``(1, 1, C)`` tokens in front of every sequence: ``(B, N, C) -> (B, k + N, C)``."""
    if not tokens:
        return x
    b = x.shape[0]
    return torch.cat([t.expand(b, -1, -1) for t in tokens] + [x], dim=1)


def pool_tokens(x: torch.Tensor, pool: str, num_prefix_tokens: int) -> torch.Tensor:
    """``(B, N, C) -> (B, C)``: the first (class) token for ``"token"``, the mean of the
    tokens after the prefix for ``"avg"``."""
    if pool == "token":
        return x[:, 0]
    if pool == "avg":
        return x[:, num_prefix_tokens:].mean(dim=1)
    raise ValueError(f"unknown global_pool {pool!r}; expected 'token' or 'avg'")


def layer_scale(x: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
    """LayerScale: ``x * gamma`` per channel, or ``x`` when there is no ``gamma``."""
    return x if gamma is None else x * gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Args:
        dim: channels C.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width over C.
        qkv_bias: bias on the ``qkv`` projection.
        proj_drop: dropout after the attention projection and inside the MLP.
        attn_drop: dropout on the attention weights.
        drop_path: stochastic depth of both residual branches.
        init_values: LayerScale (CaiT): each branch is multiplied by a learned per-channel
            vector ``gamma_1`` / ``gamma_2`` starting at this value; ``None`` for none.
        attn_layer: the attention class, called as ``attn_layer(dim, num_heads,
            qkv_bias=..., attn_drop=..., proj_drop=...)``.
        act_layer, norm_layer: the MLP activation and the norm.

    Shape: ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        init_values: float | None = None,
        attn_layer: Callable[..., nn.Module] = Attention,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = LayerNorm6,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.gamma_1 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values is not None else None
        self.gamma_2 = nn.Parameter(torch.full((dim,), float(init_values))) if init_values is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(layer_scale(self.attn(self.norm1(x)), self.gamma_1))
        return x + self.drop_path(layer_scale(self.mlp(self.norm2(x)), self.gamma_2))


class ClassAttention(nn.Module):
    """Attention in which only the first (class) token is a query (CaiT): the class token
    gathers information from every token, and no other token is updated.

    Separate ``q``, ``k``, ``v`` projections and ``proj``, as in CaiT and timm.

    Shape: ``(B, N, C) -> (B, 1, C)``, the new class token.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q(x[:, :1]).view(b, 1, h, d).transpose(1, 2)
        k = self.k(x).view(b, n, h, d).transpose(1, 2)
        v = self.v(x).view(b, n, h, d).transpose(1, 2)
        dropout_p = self.attn_drop.p if self.training else 0.0
        out = attend(q, k, v, None, self.scale, dropout_p)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, 1, c)))


class ClassAttentionBlock(Block):
    """A class-attention layer (CaiT): the class token attends to itself and the patch tokens,
    then goes through the MLP; the patch tokens pass unchanged. Arguments as :class:`Block`
    (the attention is :class:`ClassAttention`; LayerScale from 1e-4 by default).

    Shape: ``x`` ``(B, N, C)`` patch tokens and ``cls`` ``(B, 1, C)`` -> the new ``cls``.
    """

    def __init__(self, dim: int, num_heads: int, init_values: float | None = 1e-4, **kwargs) -> None:
        super().__init__(dim, num_heads, init_values=init_values, attn_layer=ClassAttention, **kwargs)

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        u = torch.cat([cls, x], dim=1)
        cls = cls + self.drop_path(layer_scale(self.attn(self.norm1(u)), self.gamma_1))
        return cls + self.drop_path(layer_scale(self.mlp(self.norm2(cls)), self.gamma_2))
