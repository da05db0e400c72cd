"""Pyramid Vision Transformer (Wang et al., 2021): PVT v1.

A ViT made into a four-stage pyramid (strides 4, 8, 16, 32) for dense prediction. Each
stage embeds patches of the previous map (4x4 pixels, then 2x2 tokens), adds its own
learned absolute position embedding and runs pre-norm transformer blocks whose attention
takes keys and values from the map reduced ``sr_ratio`` times on each side
(:class:`~tessera.layers.sra.SpatialReductionAttention`): with ratios 8, 4, 2, 1 every
stage attends over at most ``(H/32) * (W/32)`` key tokens per query. A class token joins
in the last stage only; its final normalised state is what the head classifies.

Key names are those of the official code (stages numbered from 1: ``patch_embed{i}``,
``pos_embed{i}``, ``block{i}.{j}``; then ``norm``, ``cls_token``, ``head``), so its
checkpoints load with no renaming. Position embeddings are resized bicubically for other
input sizes (the official code resizes bilinearly; both are the identity at the training
size), at run time and when a checkpoint made at another size is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..layers.drop import DropPath, drop_path_rates
from ..layers.helpers import check_image, init_linear_trunc_normal, to_ntuple
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resize_pos_embed
from ..layers.sra import SpatialReductionAttention
from ..registry import register_model
from ..weights.load import LoadReport
from .base import TesseraModel, maybe_checkpoint

__all__ = ["PyramidVisionTransformer", "Block", "min_input_size"]


class Block(nn.Module):
    """Pre-norm transformer block with spatial-reduction attention (shared with PVT v2).

    Args:
        dim, num_heads, sr_ratio, linear, qkv_bias, qk_scale: the attention (see
            :class:`~tessera.layers.sra.SpatialReductionAttention`).
        mlp_ratio: MLP hidden width over ``dim``.
        drop: dropout after the attention projection and inside the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth of both residual branches.
        norm_eps: epsilon of the two LayerNorms.

    Shape: ``x`` ``(B, N, C)``, the tokens of the map ``grid = (H, W)`` in raster order
    (a class token first in PVT v1's last stage) -> ``(B, N, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        linear: bool = False,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = SpatialReductionAttention(
            dim, num_heads, sr_ratio, linear, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def min_input_size(first_stride: int, sr_ratios: Sequence[int], linear: bool = False) -> int:
    """The smallest image side every stage's spatial reduction can take: stage ``i`` has a
    map of ``ceil(S / (first_stride * 2**i))`` tokens per side and needs at least
    ``sr_ratio`` of them (the linear variant pools to a fixed size and needs one). Never
    less than one patch of the first stage: a smaller image has nothing to embed."""
    if linear:
        return first_stride
    return max(first_stride, *(first_stride * 2**i * (sr - 1) + 1 for i, sr in enumerate(sr_ratios)))


class PyramidVisionTransformer(TesseraModel):
    """PVT v1.

    Args (the official names; defaults are PVT-Small):
        img_size: the training resolution; it sets the grid of each stage's position
            embedding. Other input sizes work (the embeddings are resized bicubically).
        patch_size: the first stage's patch side (4); later stages merge 2x2 tokens.
        in_chans: input channels.
        num_classes: classes of the linear head on the class token; 0 for none.
        embed_dims, num_heads, mlp_ratios, depths, sr_ratios: per stage (the last stage,
            which holds the class token, must not reduce: ``sr_ratios[-1] == 1``).
        qkv_bias: bias on the query and key/value projections.
        qk_scale: attention scale (default ``head_dim ** -0.5``).
        drop_rate: dropout after the position embeddings and inside blocks.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        norm_eps: epsilon of the blocks' and the final LayerNorm (1e-6 in every official
            variant).
        embed_norm_eps: epsilon of the LayerNorms of the patch embeddings and of the
            spatial reductions (1e-5 in the official code; Hugging Face's port uses
            ``norm_eps`` for every LayerNorm, which its weights are loaded with).

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives the
    normalised tokens of the last stage ``(B, 1 + ceil(H/32) * ceil(W/32), C)``, class
    token first (the head reads it).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        depths: Sequence[int] = (3, 4, 6, 3),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        norm_eps: float = 1e-6,
        embed_norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_stages = n = len(depths)
        embed_dims, num_heads = to_ntuple(embed_dims, n, "embed_dims"), to_ntuple(num_heads, n, "num_heads")
        sr_ratios = to_ntuple(sr_ratios, n, "sr_ratios")
        mlp_ratios = tuple(float(r) for r in mlp_ratios)
        if len(mlp_ratios) != n:
            raise ValueError(f"mlp_ratios must have {n} entries, got {mlp_ratios}")
        if sr_ratios[-1] != 1:
            raise ValueError(f"the last stage holds the class token and cannot reduce keys: sr_ratios[-1] = {sr_ratios[-1]}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = embed_dims[-1]
        self.img_size = to_ntuple(img_size, 2, "img_size")
        self.min_size = min_input_size(patch_size, sr_ratios)

        # stage i: patches of `patch_size` pixels, then of 2x2 tokens; the grid of its
        # position embedding is the map at img_size (rounded up, as the patch embedding pads)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.pos_grids: list[tuple[int, int]] = []
        grid = self.img_size
        for i in range(n):
            patch = patch_size if i == 0 else 2
            grid = tuple(-(-g // patch) for g in grid)
            self.pos_grids.append(grid)
            prefix = 1 if i == n - 1 else 0
            setattr(self, f"patch_embed{i + 1}", PatchEmbed((patch, patch), in_chans if i == 0 else embed_dims[i - 1], embed_dims[i]))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, prefix + grid[0] * grid[1], embed_dims[i])))
            blocks = [
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], sr_ratios[i], False, qkv_bias, qk_scale, drop_rate,
                      attn_drop_rate, dpr[sum(depths[:i]) + j], norm_eps)
                for j in range(depths[i])
            ]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
        for module in self.modules():  # the embeddings' and reductions' norms (built with the default)
            if isinstance(module, (PatchEmbed, SpatialReductionAttention)) and module.norm is not None:
                module.norm.eps = embed_norm_eps
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm = nn.LayerNorm(embed_dims[-1], eps=norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        for i in range(n):
            nn.init.trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_linear_trunc_normal)

        reductions = [patch_size * 2**i for i in range(n)]
        #: the pyramid's stages for ``features_only``: channels, stride and module of each
        self.feature_info = [
            {"num_chs": embed_dims[i], "reduction": reductions[i], "module": f"block{i + 1}"} for i in range(n)
        ]
        #: the maps of :meth:`forward_intermediates` are taken before any final norm
        self.intermediates_normalized = False
        self.default_cfg.update(input_size=(in_chans, *self.img_size), crop_pct=0.9)

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
        """Position embeddings of a checkpoint made at another (square) input size are resized
        to this model's grids (the last stage's class token kept as it is)."""
        for i, grid in enumerate(self.pos_grids):
            key = f"pos_embed{i + 1}"
            own, theirs = getattr(self, key), state_dict.get(key)
            if theirs is None or theirs.shape == own.shape or theirs.dim() != 3 or theirs.shape[-1] != own.shape[-1]:
                continue
            prefix = 1 if i == self.num_stages - 1 else 0
            side = math.isqrt(theirs.shape[1] - prefix)
            if side * side != theirs.shape[1] - prefix:
                continue  # not a square grid: left to the shape check, which names it
            state_dict[key] = resize_pos_embed(theirs, (side, side), grid, num_prefix_tokens=prefix)
            report.notes.append(f"resized {key} from {side}x{side} to {grid[0]}x{grid[1]}")
        return state_dict

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}  # as the official recipe

    # -- the forward pass ----------------------------------------------------------------

    def _check(self, x: torch.Tensor) -> None:
        check_image(x, self.in_chans, self.min_size, "the patch embedding and spatial reduction of PVT")

    def _stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stage ``i``: ``(B, C_in, H, W)`` image or map -> its tokens ``(B, [1 +] h * w, C)``
        (class token first in the last stage) and the map's ``(h, w)``."""
        x = getattr(self, f"patch_embed{i + 1}")(x)  # (B, h, w, C)
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        prefix = 1 if i == self.num_stages - 1 else 0
        if prefix:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
        pos = resize_pos_embed(getattr(self, f"pos_embed{i + 1}"), self.pos_grids[i], (h, w), num_prefix_tokens=prefix)
        x = self.pos_drop(x + pos)
        for blk in getattr(self, f"block{i + 1}"):
            x = maybe_checkpoint(blk, x, (h, w), enabled=self.grad_checkpointing)
        return x, (h, w)

    @staticmethod
    def _to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The map's tokens (the last ``h * w``, after any class token) as ``(B, C, h, w)``."""
        b, _, c = tokens.shape
        return tokens[:, -grid[0] * grid[1] :].transpose(1, 2).reshape(b, c, *grid)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's map, not normalised: ``[(B, C_i, H / s_i, W / s_i)]`` for strides
        4, 8, 16, 32 (the last without its class token)."""
        self._check(x)
        outs = []
        for i in range(self.num_stages):
            tokens, grid = self._stage(i, x)
            x = self._to_map(tokens, grid)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's normalised tokens, class token first: ``(B, 1 + h * w, C)``."""
        self._check(x)
        tokens, grid = self._stage(0, x)
        for i in range(1, self.num_stages):
            tokens, grid = self._stage(i, self._to_map(tokens, grid))
        return self.norm(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The class token through the linear head: ``(B, N, C) -> (B, num_classes)``
        (``(B, C)`` with ``pre_logits``)."""
        x = x[:, 0]
        return x if pre_logits else self.head(x)




# ---------------------------------------------------------------------------------------
# Registered variants (1000 classes, 224; drop path of the official ImageNet recipe)
# ---------------------------------------------------------------------------------------


@register_model
def pvt_tiny(**kwargs) -> PyramidVisionTransformer:
    """PVT-Tiny: depths 2-2-2-2, widths 64-128-320-512 (13.2M)."""
    return PyramidVisionTransformer(**{"depths": (2, 2, 2, 2), "drop_path_rate": 0.1, **kwargs})


@register_model
def pvt_small(**kwargs) -> PyramidVisionTransformer:
    """PVT-Small: depths 3-4-6-3, widths 64-128-320-512 (24.5M)."""
    return PyramidVisionTransformer(**{"depths": (3, 4, 6, 3), "drop_path_rate": 0.1, **kwargs})


@register_model
def pvt_medium(**kwargs) -> PyramidVisionTransformer:
    """PVT-Medium: depths 3-4-18-3, widths 64-128-320-512 (44.2M)."""
    return PyramidVisionTransformer(**{"depths": (3, 4, 18, 3), "drop_path_rate": 0.3, **kwargs})


@register_model
def pvt_large(**kwargs) -> PyramidVisionTransformer:
    """PVT-Large: depths 3-8-27-3, widths 64-128-320-512 (61.4M)."""
    return PyramidVisionTransformer(**{"depths": (3, 8, 27, 3), "drop_path_rate": 0.3, **kwargs})
