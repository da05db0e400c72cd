"""CaiT: Class-Attention in Image Transformers (Touvron et al., 2021).

Two changes make deep ViTs train well:

* LayerScale: every residual branch is multiplied by a learned per-channel vector
  (``gamma_1``, ``gamma_2``) that starts small (``init_values``, 1e-5 for the 24-block models),
  so each block starts close to the identity;
* class attention: the patch tokens go through the self-attention blocks alone (with
  *talking heads*: learned mixes of the heads before and after the softmax); the class
  token is inserted only for the last ``depth_token_only`` layers, where it alone is a query
  and the patch tokens are not updated.

Names are timm's and the official ones (``blocks``, ``attn.proj_l``, ``attn.proj_w``,
``gamma_1``, ``blocks_token_only.{i}.attn.q/k/v``, ``cls_token``; the position embedding
covers the patch tokens only), so their checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.attention import Attention
from ..layers.block import Block, ClassAttentionBlock
from ..layers.helpers import init_linear_trunc_normal
from ..registry import register_model
from .vit import VisionTransformer

__all__ = ["CaiT", "TalkingHeadAttention"]


class TalkingHeadAttention(Attention):
    """Self-attention whose heads are mixed by learned ``heads x heads`` linear maps on the
    scores before the softmax (``proj_l``) and on the weights after it (``proj_w``).

    Shape: ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.proj_l = nn.Linear(num_heads, num_heads)
        self.proj_w = nn.Linear(num_heads, num_heads)

    @staticmethod
    def _mix_heads(attn: torch.Tensor, mix: nn.Linear) -> torch.Tensor:
        # (B, h, N, N): the heads are the channels of the linear map
        return mix(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self._mix_heads(attn, self.proj_l).softmax(dim=-1)
        attn = self.attn_drop(self._mix_heads(attn, self.proj_w))
        x = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class CaiT(VisionTransformer):
    """CaiT (timm's keyword names).

    Args:
        embed_dim, num_heads, qkv_bias: as :class:`~tessera.models.vit.VisionTransformer`, for
            the class-attention layers too.
        init_values: initial LayerScale value of every branch.
        depth_token_only: class-attention layers at the end.
        mlp_ratio_token_only: MLP width of the class-attention layers over C.
        (the rest as :class:`~tessera.models.vit.VisionTransformer`; stochastic depth is the
        same ``drop_path_rate`` in every self-attention block, as in CaiT)

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives the
    normalised ``(B, 1 + N, C)``: the class token, then the patch tokens as the last
    self-attention block left them.
    """

    def __init__(
        self,
        embed_dim: int = 768,
        num_heads: int = 12,
        qkv_bias: bool = True,
        init_values: float = 1e-4,
        depth_token_only: int = 2,
        mlp_ratio_token_only: float = 4.0,
        **kwargs: Any,
    ) -> None:
        fixed = {"class_token", "no_embed_class", "fc_norm", "pos_embed"} & set(kwargs)
        if fixed:
            raise ValueError(f"CaiT fixes {', '.join(sorted(fixed))}: its class token joins late, after the norm")
        # a class token (pooled as in ViT) that the position embedding does not cover; the
        # final norm comes before pooling for 'avg' too
        super().__init__(
            embed_dim=embed_dim, num_heads=num_heads, qkv_bias=qkv_bias, init_values=init_values,
            class_token=True, no_embed_class=True, fc_norm=False, **kwargs,
        )
        self.blocks_token_only = nn.ModuleList(
            ClassAttentionBlock(
                embed_dim, num_heads, mlp_ratio=mlp_ratio_token_only, qkv_bias=qkv_bias, init_values=init_values
            )
            for _ in range(depth_token_only)
        )
        self.blocks_token_only.apply(init_linear_trunc_normal)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.default_cfg["crop_pct"] = 1.0

    def _make_block(self, index: int, depth: int, **kwargs) -> nn.Module:
        return Block(attn_layer=TalkingHeadAttention, **kwargs)

    def _drop_path_rates(self, depth: int, rate: float) -> list[float]:
        return [rate] * depth

    def _prefix_tokens(self) -> list[torch.Tensor]:
        return []  # the class token joins only in the class-attention layers

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, 1 + N, C)``."""
        x, grid = self._embed(x)  # patch tokens with their position embedding
        x = self._forward_blocks(x, grid)
        # a copy (repeat), not a view of the parameter: a view made under no_grad claims to
        # need a gradient without having a graph, which breaks module hooks (FlopCounterMode)
        cls = self.cls_token.repeat(x.shape[0], 1, 1)
        for blk in self.blocks_token_only:
            cls = blk(x, cls)
        return self.norm(torch.cat([cls, x], dim=1))


# ---------------------------------------------------------------------------------------
# Registered variants: timm's cait_xxs24_224 and cait_s24_224
# ---------------------------------------------------------------------------------------


@register_model
def cait_xxs24(**kwargs) -> CaiT:
    """CaiT-XXS24 at 224: C192, 24 self-attention + 2 class-attention layers, 4 heads."""
    return CaiT(**{"patch_size": 16, "embed_dim": 192, "depth": 24, "num_heads": 4, "init_values": 1e-5, **kwargs})


@register_model
def cait_s24(**kwargs) -> CaiT:
    """CaiT-S24 at 224: C384, 24 self-attention + 2 class-attention layers, 8 heads."""
    return CaiT(**{"patch_size": 16, "embed_dim": 384, "depth": 24, "num_heads": 8, "init_values": 1e-5, **kwargs})
