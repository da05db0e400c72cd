"""PVT v2 (Wang et al., 2022): the pyramid of PVT v1 with three changes.

* Overlapping patch embedding: a convolution of kernel ``2S - 1`` at stride ``S`` (7 at
  stride 4 for the stem, 3 at stride 2 between stages), so neighbouring patches share
  pixels and local continuity is kept.
* Convolutional feed-forward: a 3x3 depthwise convolution between the two linear layers of
  the MLP, which mixes neighbouring tokens and replaces the position embeddings (the model
  has none and takes any input size).
* Linear spatial-reduction attention (``linear=True``, the ``_li`` variant): keys and values
  come from the map average-pooled to a fixed 7x7, so attention costs ``O(H W)``.

Each stage ends with its own LayerNorm, so every stage's map is normalised. Parameter names
and constructor keywords are timm's (``patch_embed``, ``stages.{i}.downsample`` at the
start of stage ``i > 0``, ``stages.{i}.blocks.{j}``, ``stages.{i}.norm``, ``head``): timm
state dicts load with no renaming; the official release layout is converted by
:mod:`tessera.weights.formats.pvt_v2`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..layers.drop import drop_path_rates
from ..layers.helpers import check_image, to_ntuple
from ..layers.mlp import Mlp
from ..registry import register_model
from . import pvt
from .base import TesseraModel, maybe_checkpoint

__all__ = ["PyramidVisionTransformerV2", "OverlapPatchEmbed", "ConvMlp"]


class OverlapPatchEmbed(nn.Module):
    """Overlapping patches: a convolution of kernel ``2 * stride - 1`` (padded by half the
    kernel) at ``stride``, then LayerNorm. Patch ``i`` covers the pixels
    ``[i * stride - (stride - 1), i * stride + stride - 1]``, so adjacent patches share
    ``stride - 1`` pixels (a non-overlapping embedding would share none).

    Shape: ``(B, C_in, H, W) -> (B, ceil(H / stride), ceil(W / stride), C)``, channels last.
    """

    def __init__(self, in_chans: int, embed_dim: int, stride: int) -> None:
        super().__init__()
        kernel = 2 * stride - 1
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).movedim(1, -1))


class ConvMlp(Mlp):
    """The feed-forward of PVT v2: ``fc1 -> [ReLU] -> 3x3 depthwise conv on the map -> GELU
    -> fc2`` (the ReLU only in the linear-attention variant, as the reference).

    Shape: ``x`` ``(B, H * W, C)`` in raster order of the map ``grid = (H, W)`` ->
    ``(B, H * W, C)``.
    """

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0, extra_relu: bool = False) -> None:
        super().__init__(in_features, hidden_features, drop=drop)
        self.relu = nn.ReLU() if extra_relu else nn.Identity()
        self.dwconv = nn.Conv2d(hidden_features, hidden_features, 3, padding=1, groups=hidden_features)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:  # type: ignore[override]
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.relu(x.transpose(1, 2).reshape(b, c, *grid))
        x = self.dwconv(x).flatten(2).transpose(1, 2)
        x = self.drop1(self.act(x))
        return self.drop2(self.fc2(x))


class Block(pvt.Block):
    """PVT v1's block with the convolutional feed-forward (which needs the map's grid).

    Shape: ``x`` ``(B, H * W, C)``, ``grid = (H, W)`` -> ``(B, H * W, C)``.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, linear: bool, qkv_bias: bool,
                 drop: float, attn_drop: float, drop_path: float, norm_eps: float) -> None:
        super().__init__(dim, num_heads, mlp_ratio, sr_ratio, linear, qkv_bias, None, drop, attn_drop, drop_path, norm_eps)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), drop=drop, extra_relu=linear)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x), grid))


class PvtV2Stage(nn.Module):
    """Downsample (overlapping 3x3 patches at stride 2; none in the first stage, where the
    stem embeds), blocks, LayerNorm.

    Shape: ``(B, H, W, C_in) -> (B, H', W', C)`` channels last, normalised (``H' = ceil(H / 2)``
    when the stage downsamples).
    """

    def __init__(self, dim: int, dim_out: int, depth: int, downsample: bool, num_heads: int, sr_ratio: int,
                 linear: bool, mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float,
                 drop_path: Sequence[float], norm_eps: float) -> None:
        super().__init__()
        self.downsample = OverlapPatchEmbed(dim, dim_out, stride=2) if downsample else None
        self.blocks = nn.ModuleList(
            Block(dim_out, num_heads, mlp_ratio, sr_ratio, linear, qkv_bias, drop, attn_drop, drop_path[j], norm_eps)
            for j in range(depth)
        )
        self.norm = nn.LayerNorm(dim_out, eps=norm_eps)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x.movedim(-1, 1))
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        for blk in self.blocks:
            x = maybe_checkpoint(blk, x, (h, w), enabled=self.grad_checkpointing)
        return self.norm(x).view(b, h, w, c)


def _init_weights(m: nn.Module) -> None:
    # the reference initialisation: truncated-normal linears, He-normal (fan-out) convolutions
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class PyramidVisionTransformerV2(TesseraModel):
    """PVT v2 with timm's constructor keywords.

    Args:
        img_size: the resolution of ``default_cfg`` only (the model has no position
            embedding and takes any size of at least ``min_size``); default 224.
        in_chans: input channels.
        num_classes: classes of the linear head; 0 for none.
        global_pool: ``'avg'`` (mean of the final map) or ``''`` (``forward_head`` with
            ``pre_logits`` then returns the map itself).
        depths, embed_dims, num_heads, sr_ratios, mlp_ratios: per stage (``num_heads``,
            ``sr_ratios``, ``mlp_ratios`` may be one value for all).
        qkv_bias: bias on the query and key/value projections.
        linear: linear spatial-reduction attention (keys/values pooled to 7x7).
        drop_rate: dropout after attention projections and inside MLPs.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        norm_eps: epsilon of the blocks' and stages' LayerNorms (timm's class default 1e-5;
            the registered variants use 1e-6 as the released models).

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives the last
    stage's normalised map ``(B, C, ceil(H / 32), ceil(W / 32))``.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] | None = None,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        depths: Sequence[int] = (3, 4, 6, 3),
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        num_heads: int | Sequence[int] = (1, 2, 4, 8),
        sr_ratios: int | Sequence[int] = (8, 4, 2, 1),
        mlp_ratios: float | Sequence[float] = (8.0, 8.0, 4.0, 4.0),
        qkv_bias: bool = True,
        linear: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_stages = n = len(depths)
        embed_dims = to_ntuple(embed_dims, n, "embed_dims")
        num_heads, sr_ratios = to_ntuple(num_heads, n, "num_heads"), to_ntuple(sr_ratios, n, "sr_ratios")
        mlp_ratios = tuple(mlp_ratios) if isinstance(mlp_ratios, Sequence) else (mlp_ratios,) * n
        if len(mlp_ratios) != n:
            raise ValueError(f"mlp_ratios must have {n} entries, got {mlp_ratios}")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = embed_dims[-1]
        self.min_size = pvt.min_input_size(4, sr_ratios, linear)

        self.patch_embed = OverlapPatchEmbed(in_chans, embed_dims[0], stride=4)
        dpr = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList(
            PvtV2Stage(
                embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], i > 0, num_heads[i], sr_ratios[i], linear,
                mlp_ratios[i], qkv_bias, drop_rate, attn_drop_rate, dpr[sum(depths[:i]) : sum(depths[: i + 1])], norm_eps,
            )
            for i in range(n)
        )
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

        #: the pyramid's stages for ``features_only``: channels, stride and module of each
        self.feature_info = [
            {"num_chs": embed_dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}"} for i in range(n)
        ]
        #: every stage ends with its own LayerNorm
        self.intermediates_normalized = True
        img = to_ntuple(img_size, 2, "img_size") if img_size is not None else (224, 224)
        self.default_cfg.update(input_size=(in_chans, *img), crop_pct=0.9)

    # -- the forward pass ----------------------------------------------------------------

    def _check(self, x: torch.Tensor) -> None:
        check_image(x, self.in_chans, self.min_size, "the patch embedding and spatial reduction of PVT v2")

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's normalised map: ``[(B, C_i, H / s_i, W / s_i)]`` for strides 4, 8,
        16, 32."""
        self._check(x)
        x = self.patch_embed(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x.movedim(-1, 1))
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's normalised map, channels first: ``(B, C, H / 32, W / 32)``."""
        self._check(x)
        x = self.patch_embed(x)
        for stage in self.stages:
            x = stage(x)
        return x.movedim(-1, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling and the linear head: ``(B, C, H, W) -> (B, num_classes)``
        (``(B, C)`` with ``pre_logits``)."""
        if self.global_pool == "avg":
            x = x.mean(dim=(-2, -1))
        return x if pre_logits else self.head(x)


# ---------------------------------------------------------------------------------------
# Registered variants (1000 classes; LayerNorm eps 1e-6 and drop path 0.1 as released)
# ---------------------------------------------------------------------------------------

_B2 = dict(depths=(3, 4, 6, 3), embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8))


def _variant(**kwargs) -> dict:
    return {"norm_eps": 1e-6, "drop_path_rate": 0.1, **kwargs}


@register_model
def pvt_v2_b0(**kwargs) -> PyramidVisionTransformerV2:
    """PVT v2-B0: depths 2-2-2-2, widths 32-64-160-256 (3.7M)."""
    b0 = dict(depths=(2, 2, 2, 2), embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8))
    return PyramidVisionTransformerV2(**_variant(**{**b0, **kwargs}))


@register_model
def pvt_v2_b2(**kwargs) -> PyramidVisionTransformerV2:
    """PVT v2-B2: depths 3-4-6-3, widths 64-128-320-512 (25.4M)."""
    return PyramidVisionTransformerV2(**_variant(**{**_B2, **kwargs}))


@register_model
def pvt_v2_b2_li(**kwargs) -> PyramidVisionTransformerV2:
    """PVT v2-B2-Li: B2 with linear spatial-reduction attention (keys/values pooled to 7x7)."""
    return PyramidVisionTransformerV2(**_variant(**{**_B2, "linear": True, **kwargs}))
