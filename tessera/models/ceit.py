"""CeiT: Convolution-enhanced image Transformer (Yuan et al., 2021).

Three changes to a DeiT-style ViT:

* **Image-to-tokens (I2T)**: patches are cut from low-level features, not from pixels: a 7x7
  stride-2 convolution with BatchNorm and a 3x3 stride-2 max-pool (stride 4 together), then
  4x4 patches of that map, so tokens still cover 16x16 pixels.
* **Locally-enhanced feed-forward (LeFF)** instead of the MLP: the patch tokens are expanded
  by a linear layer, put back on their grid, mixed with their neighbours by a depthwise 3x3
  convolution, flattened and projected back (each step with BatchNorm and GELU). The class
  token bypasses it.
* **Layer-wise class-token attention (LCA)**: the class tokens that the L blocks output are
  stacked (with a learned per-layer embedding) and one more transformer layer lets the last
  of them attend over all of them; its output is the representation the head classifies.

The I2T stem has 64 channels and no activation, as the reference implementation; with it
the model sizes are the paper's (CeiT-T 6.4M, CeiT-S 24.2M parameters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.attention import Attention
from ..layers.conv import ConvBN, map_to_tokens, tokens_to_map
from ..layers.drop import DropPath, drop_path_rates
from ..layers.helpers import check_input, init_linear_trunc_normal, to_ntuple
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resize_pos_embed
from ..registry import register_model
from .base import TesseraModel, maybe_checkpoint

__all__ = ["CeiT", "ImageToTokens", "LeFF", "CeiTBlock", "LayerClassAttention"]


def _i2t_grid(size: Sequence[int], patch_size: int) -> tuple[int, int]:
    """The token grid of an input of spatial ``size``: stride-2 conv, stride-2 pool (both
    padded, so ``ceil`` each), then patches (padded at the end)."""
    def ceil_div(a: int, b: int) -> int:
        return -(-a // b)

    h, w = (ceil_div(ceil_div(ceil_div(s, 2), 2), patch_size) for s in size)
    return h, w


class ImageToTokens(nn.Module):
    """I2T: conv 7x7 stride 2 + BatchNorm + max-pool 3x3 stride 2, then non-overlapping
    ``patch_size`` patches projected to ``embed_dim``.

    Shape: ``(B, C_in, H, W) -> (B, H' * W', C)`` and the grid ``(H', W')`` with
    ``H' = ceil(ceil(ceil(H / 2) / 2) / patch_size)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, stem_chans: int = 64, patch_size: int = 4) -> None:
        super().__init__()
        self.stem = ConvBN(in_chans, stem_chans, kernel_size=7, stride=2)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.patch_embed = PatchEmbed((patch_size, patch_size), stem_chans, embed_dim, norm=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.patch_embed(self.pool(self.stem(x)))  # (B, H', W', C)
        return x.flatten(1, 2), (x.shape[1], x.shape[2])


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: ``Linear -> BN -> GELU``, back to the grid, depthwise
    ``kernel_size`` conv ``-> BN -> GELU``, flatten, ``Linear -> BN -> GELU`` (the paper's
    equations), on the patch tokens only; the class token is passed through unchanged.

    Shape: ``(B, 1 + H * W, C) -> (B, 1 + H * W, C)`` for ``grid = (H, W)``.
    """

    def __init__(self, dim: int, hidden_dim: int, kernel_size: int = 3, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.dwconv = ConvBN(hidden_dim, hidden_dim, kernel_size, groups=hidden_dim, bias=True)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.bn2 = nn.BatchNorm1d(dim)
        self.act = nn.GELU()
        self.drop = nn.Dropout(drop)

    @staticmethod
    def _token_bn(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d normalises dim 1 of (B, C, N): channels
        return bn(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        cls_token, tokens = x[:, :1], x[:, 1:]
        tokens = self.act(self._token_bn(self.bn1, self.fc1(tokens)))
        tokens = self.act(self.dwconv(tokens_to_map(tokens, grid)))
        tokens = self.drop(map_to_tokens(tokens))
        tokens = self.drop(self.act(self._token_bn(self.bn2, self.fc2(tokens))))
        return torch.cat([cls_token, tokens], dim=1)


class CeiTBlock(nn.Module):
    """Pre-norm block: multi-head self-attention and LeFF, each residual.

    Shape: ``(B, 1 + H * W, C) -> (B, 1 + H * W, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        leff_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.leff = LeFF(dim, int(dim * mlp_ratio), leff_kernel, drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.leff(self.norm2(x), grid))


class LayerClassAttention(nn.Module):
    """LCA: one pre-norm transformer layer over the class tokens of all L blocks, where only
    the last of them is a query.

    Attention rows are independent, so the row of the last token of a full self-attention over
    the L tokens is exactly single-query attention; L is the depth (12), so computing the
    other rows costs nothing worth a separate attention.

    Shape: ``(B, L, C) -> (B, 1, C)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        x = cls_tokens[:, -1:] + self.attn(self.norm1(cls_tokens))[:, -1:]
        return x + self.mlp(self.norm2(x))


class CeiT(TesseraModel):
    """Convolution-enhanced image Transformer.

    Args:
        img_size: the size the position embedding is made for (resized bicubically for other
            input sizes).
        in_chans: input channels.
        num_classes: classes of the linear head; 0 for none.
        embed_dim, depth, num_heads: width C, blocks L and heads.
        mlp_ratio: LeFF (and LCA MLP) hidden width over C.
        qkv_bias: bias on the qkv projection.
        stem_chans: channels of the I2T convolution.
        patch_size: patch side on the I2T map (4: 16 pixels).
        leff_kernel: the depthwise kernel of LeFF.
        drop_rate, attn_drop_rate: dropout inside the blocks and on attention weights.
        drop_path_rate: stochastic depth, rising linearly over the blocks (none in LCA).

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``. ``forward_features`` gives
    ``(B, 1 + N, C)``: the normalised LCA output first (what the head classifies), then the
    last block's patch tokens through the same norm.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        stem_chans: int = 64,
        patch_size: int = 4,
        leff_kernel: int = 3,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        img = to_ntuple(img_size, 2, "img_size")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = embed_dim
        self.num_prefix_tokens = 1
        self.patch_size = patch_size
        self.i2t = ImageToTokens(in_chans, embed_dim, stem_chans, patch_size)
        self.patch_grid = _i2t_grid(img, patch_size)
        num_patches = self.patch_grid[0] * self.patch_grid[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            CeiTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, dpr[i], leff_kernel)
            for i in range(depth)
        )
        #: learned embedding of the layer each class token comes from
        self.pos_layer_embed = nn.Parameter(torch.zeros(1, depth, embed_dim))
        self.lca = LayerClassAttention(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.grad_checkpointing = False

        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_linear_trunc_normal)
        self.default_cfg["input_size"] = (in_chans, *img)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "pos_layer_embed"}

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        # one token is a patch of the stride-4 I2T map: smaller images have nothing to embed
        side = 4 * self.patch_size
        check_input(x, rank=4, channels=self.in_chans, layout=f"(B, {self.in_chans}, H, W)", min_size=(side, side))
        x, grid = self.i2t(x)
        pos = resize_pos_embed(self.pos_embed, self.patch_grid, grid, num_prefix_tokens=1)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos
        return self.pos_drop(x), grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, 1 + N, C)``: the normalised LCA output, then the
        normalised patch tokens of the last block."""
        x, grid = self._embed(x)
        cls_tokens = []
        for blk in self.blocks:
            x = maybe_checkpoint(blk, x, grid, enabled=self.grad_checkpointing)
            cls_tokens.append(x[:, 0])
        cls = self.lca(torch.stack(cls_tokens, dim=1) + self.pos_layer_embed)  # (B, 1, C)
        return self.norm(torch.cat([cls, x[:, 1:]], dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The LCA token, then the linear head: ``(B, 1 + N, C) -> (B, num_classes)``
        (``(B, C)`` with ``pre_logits``)."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)


# ---------------------------------------------------------------------------------------
# Registered variants (224x224, 1000 classes)
# ---------------------------------------------------------------------------------------


@register_model
def ceit_t(**kwargs) -> CeiT:
    """CeiT-T: C192, 12 blocks, 3 heads (6.4M parameters)."""
    return CeiT(**{"embed_dim": 192, "depth": 12, "num_heads": 3, **kwargs})


@register_model
def ceit_s(**kwargs) -> CeiT:
    """CeiT-S: C384, 12 blocks, 6 heads (24.2M parameters)."""
    return CeiT(**{"embed_dim": 384, "depth": 12, "num_heads": 6, **kwargs})
