"""Shuffle Transformer (Huang et al., 2021).

A Swin-like four-stage pyramid of window-attention blocks that connects windows without
shifting them:

* **spatial shuffle**: every second block attends inside *shuffled* windows, each made of
  tokens spread over the whole map at a stride of ``map / window``
  (:func:`tessera.layers.windows.shuffle_partition`, the regular partition of the
  transposed grid). Alternating regular and shuffled blocks carries information across
  windows, as a channel shuffle does between the groups of a grouped convolution.
* **neighbour-window connection**: between attention and MLP, a depthwise convolution of
  the window's size adds the neighbouring windows' tokens (a residual branch of its own).
* BatchNorm instead of LayerNorm (before attention, the convolution and the MLP), a ReLU6
  MLP, a convolutional stem (two 3x3 stride-2 convolutions), and patch merging by a 2x2
  stride-2 convolution; relative position biases inside every window (the offsets of a
  shuffled window are window coordinates, a stride apart on the map).

Blocks work on channels-first maps ``(B, C, H, W)`` (BatchNorm and the convolutions want
them); attention moves to the window core's channels-last layout and back. Maps that are
not a multiple of the window are padded at the end with tokens that no query attends to;
a map no larger than the window is one window. The model has no final norm (as the
official code): stage outputs are not normalised. Official checkpoints are converted by
:mod:`tessera.weights.formats.shuffle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
from torch import nn

from ..layers.attention import WindowAttention
from ..layers.drop import DropPath, drop_path_rates
from ..layers.helpers import check_image, to_ntuple
from ..layers.mlp import Mlp
from ..layers.windows import (
    MASK_VALUE,
    WindowPlan,
    get_plan,
    pad_grid,
    shuffle_partition,
    shuffle_reverse,
    window_partition,
    window_reverse,
)
from ..registry import register_model
from .base import TesseraModel, maybe_checkpoint

__all__ = ["ShuffleTransformer", "ShuffleBlock"]


@lru_cache(maxsize=64)
def padding_mask(grid: tuple[int, ...], plan: WindowPlan, shuffled: bool) -> torch.Tensor:
    """``(nW, N, N)`` additive mask that hides the pad tokens of a padded grid as keys
    (``-100``), in regular or shuffled window order. Every window keeps a real token (its
    first), so no query is left without keys."""
    valid = pad_grid(torch.ones(1, *grid, 1), plan.padded)
    partition = shuffle_partition if shuffled else window_partition
    keys = partition(valid, plan.window).squeeze(-1)  # (nW, N): 1 for real tokens
    n = plan.tokens_per_window
    mask = torch.zeros(keys.shape).masked_fill_(keys == 0, MASK_VALUE)
    return mask[:, None, :].expand(-1, n, -1).contiguous().to(plan.device)


class ShuffleBlock(nn.Module):
    """One block: (shuffled) window attention, neighbour-window convolution, MLP; each
    after a BatchNorm and on a residual branch (stochastic depth on attention and MLP, as
    the official code).

    Args:
        dim: channels C.
        num_heads: attention heads.
        window_size: window side; also the kernel of the neighbour-window convolution.
        shuffle: attend in shuffled windows (tokens a stride apart) instead of regular ones.
        mlp_ratio: MLP hidden width over C.
        qkv_bias: bias on the qkv projection (the official model has none).
        qk_scale: attention scale (default ``head_dim ** -0.5``).
        drop: dropout after the attention projection and inside the MLP.
        attn_drop: dropout on attention weights.
        drop_path: stochastic depth.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shuffle: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = (window_size, window_size)
        self.shuffle = shuffle
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.local = nn.Conv2d(dim, dim, window_size, padding="same", groups=dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.ReLU6, drop=drop)
        self.norm3 = nn.BatchNorm2d(dim)

    def plan(self, grid: Sequence[int], device: torch.device) -> WindowPlan:
        """The (clamped) window and padded grid of a map (no shift: windows never move)."""
        return get_plan(tuple(grid), self.window_size, (0, 0), device)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Window attention on a map: ``(B, C, H, W) -> (B, C, H, W)``."""
        x = x.movedim(1, -1)  # (B, H, W, C), the window core's layout
        b, h, w, c = x.shape
        plan = self.plan((h, w), x.device)
        partition, reverse = (shuffle_partition, shuffle_reverse) if self.shuffle else (window_partition, window_reverse)
        windows = partition(pad_grid(x, plan.padded), plan.window)  # (B * nW, N, C)
        mask = padding_mask((h, w), plan, self.shuffle) if plan.needs_pad else None
        windows = self.attn(windows, plan.window, mask)
        x = reverse(windows, plan.window, plan.padded)[:, :h, :w]
        return x.movedim(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attention(self.norm1(x)))
        x = x + self.local(self.norm2(x))  # neighbour-window connection
        return x + self.drop_path(self.mlp(self.norm3(x).movedim(1, -1)).movedim(-1, 1))


class PatchMerging(nn.Module):
    """BatchNorm, then a 2x2 convolution at stride 2 without bias (an odd last row or
    column is dropped, as the official code).

    Shape: ``(B, C, H, W) -> (B, C_out, H // 2, W // 2)``.
    """

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.reduction = nn.Conv2d(dim, dim_out, kernel_size=2, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduction(self.norm(x))


class ConvStem(nn.Module):
    """Two 3x3 stride-2 convolutions (BatchNorm, ReLU6), then a 1x1 convolution.

    Shape: ``(B, C_in, H, W) -> (B, C, ceil(H / 4), ceil(W / 4))``.
    """

    def __init__(self, in_chans: int, hidden_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_chans, hidden_dim, 3, 2, 1), nn.BatchNorm2d(hidden_dim), nn.ReLU6())
        self.conv2 = nn.Sequential(nn.Conv2d(hidden_dim, embed_dim, 3, 2, 1), nn.BatchNorm2d(embed_dim), nn.ReLU6())
        self.conv3 = nn.Conv2d(embed_dim, embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.conv2(self.conv1(x)))


class ShuffleStage(nn.Module):
    """Patch merging (all stages but the first), then blocks alternating regular
    (even index) and shuffled (odd index) windows.

    Shape: ``(B, C_in, H, W) -> (B, C, H', W')`` (``H' = H // 2`` when merging).
    """

    def __init__(self, dim: int, dim_out: int, depth: int, downsample: bool, num_heads: int, window_size: int,
                 shuffle: bool, mlp_ratio: float, qkv_bias: bool, qk_scale: float | None, drop: float,
                 attn_drop: float, drop_path: float) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim, dim_out) if downsample else None
        self.blocks = nn.ModuleList(
            ShuffleBlock(dim_out, num_heads, window_size, shuffle and j % 2 == 1, mlp_ratio, qkv_bias, qk_scale,
                         drop, attn_drop, drop_path)
            for j in range(depth)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        for blk in self.blocks:
            x = maybe_checkpoint(blk, x, enabled=self.grad_checkpointing)
        return x


def _init_weights(m: nn.Module) -> None:
    # official: truncated normal for linear and convolution weights, zero biases
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


class ShuffleTransformer(TesseraModel):
    """Shuffle Transformer.

    Args (defaults are Shuffle-T):
        img_size: the training resolution (``default_cfg`` only; any size of at least
            ``min_size`` works).
        in_chans: input channels.
        num_classes: classes of the linear head; 0 for none.
        token_dim: hidden channels of the stem.
        embed_dims: channels per stage (the official ``32 * num_heads``); the stem
            outputs ``embed_dims[0]``.
        depths: blocks per stage (even in the official models: regular/shuffled pairs).
        num_heads: heads per stage.
        window_size: window side (7).
        shuffle: use shuffled windows in every second block (False: regular windows only,
            the ablation without the spatial shuffle).
        mlp_ratio: MLP hidden width over C.
        qkv_bias: bias on the qkv projections (none in the official model).
        qk_scale: attention scale (default ``head_dim ** -0.5``).
        drop_rate: dropout inside blocks.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth; the official code gives stage ``i`` of ``n`` the
            constant rate ``drop_path_rate * i / (n - 1)``.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives the last
    stage's map ``(B, C, H / 32, W / 32)`` (no final norm in this architecture).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        token_dim: int = 32,
        embed_dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        shuffle: bool = True,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.num_stages = n = len(depths)
        embed_dims, num_heads = to_ntuple(embed_dims, n, "embed_dims"), to_ntuple(num_heads, n, "num_heads")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = embed_dims[-1]
        # the stem's map (ceil(S / 4)) must survive n - 1 merges by flooring halves
        self.min_size = 4 * 2 ** (n - 1) - 3

        self.patch_embed = ConvStem(in_chans, token_dim, embed_dims[0])
        dpr = drop_path_rates(drop_path_rate, n)  # one rate per stage, as official
        self.stages = nn.ModuleList(
            ShuffleStage(
                embed_dims[max(i - 1, 0)], embed_dims[i], depths[i], i > 0, num_heads[i], window_size, shuffle,
                mlp_ratio, qkv_bias, qk_scale, drop_rate, attn_drop_rate, dpr[i],
            )
            for i in range(n)
        )
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)  # the bias tables keep WindowAttention's truncated normal

        #: the pyramid's stages for ``features_only``: channels, stride and module of each
        self.feature_info = [
            {"num_chs": embed_dims[i], "reduction": 4 * 2**i, "module": f"stages.{i}"} for i in range(n)
        ]
        #: stage outputs are residual sums; the architecture has no norm after them
        self.intermediates_normalized = False
        self.default_cfg["input_size"] = (in_chans, *to_ntuple(img_size, 2, "img_size"))

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}

    # -- the forward pass ----------------------------------------------------------------

    def _check(self, x: torch.Tensor) -> None:
        check_image(x, self.in_chans, self.min_size, f"the {self.num_stages}-stage Shuffle Transformer")

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output map, not normalised: ``[(B, C_i, H / s_i, W / s_i)]`` for
        strides 4, 8, 16, 32."""
        self._check(x)
        x = self.patch_embed(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map, channels first: ``(B, C, H / 32, W / 32)``."""
        return self.forward_intermediates(x)[-1]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling and the linear head: ``(B, C, H, W) -> (B, num_classes)``
        (``(B, C)`` with ``pre_logits``)."""
        x = x.mean(dim=(-2, -1))
        return x if pre_logits else self.head(x)


# ---------------------------------------------------------------------------------------
# Registered variants (1000 classes, 224, window 7; drop path of the official recipe).
# Parameters exactly as the official code (mulinmeng/Shuffle-Transformer, whose training
# logs print "number of params"): Shuffle-T 28,532,482, Shuffle-S 50,076,178; its README
# rounds them to 28M and 50M.
# ---------------------------------------------------------------------------------------


@register_model
def shuffle_t(**kwargs) -> ShuffleTransformer:
    """Shuffle-T: widths 96-192-384-768, depths 2-2-6-2."""
    return ShuffleTransformer(**{"depths": (2, 2, 6, 2), "drop_path_rate": 0.1, **kwargs})


@register_model
def shuffle_s(**kwargs) -> ShuffleTransformer:
    """Shuffle-S: widths 96-192-384-768, depths 2-2-18-2."""
    return ShuffleTransformer(**{"depths": (2, 2, 18, 2), "drop_path_rate": 0.3, **kwargs})
