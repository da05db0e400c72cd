"""CvT: Convolutional vision Transformer (Wu et al., 2021).

A three-stage pyramid. Each stage starts with a *convolutional token embedding*: an
overlapping strided convolution (kernel 7 stride 4, then 3/2 and 3/2) followed by LayerNorm,
so the map shrinks and widens from stage to stage (strides 4, 8, 16). Inside the blocks, q, k
and v come from a *convolutional projection*: a depthwise 3x3 convolution with BatchNorm on
the token map, then a linear layer; k and v use stride 2, so attention looks at a quarter of
the tokens. There is no position embedding (the convolutions carry position). Only the last
stage has a class token; it bypasses the convolutions and joins q, k and v as a token.

State-dict keys follow the official code (microsoft/CvT ``cls_cvt.py``: ``stage{i}.patch_embed``,
``stage{i}.blocks.{j}.attn.conv_proj_q.conv/bn``, ``attn.proj_q``, ``stage2.cls_token``,
``norm``, ``head``), so its checkpoints load with no renaming. The official code's details are
kept: the attention scale is ``C ** -0.5`` (the full width, not the head width), the MLP uses
QuickGELU, and stochastic depth rises linearly inside each stage to that stage's rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..layers.attention import attend
from ..layers.conv import ConvBN, map_to_tokens, tokens_to_map
from ..layers.drop import DropPath, drop_path_rates
from ..layers.helpers import check_input, init_linear_trunc_normal, to_ntuple
from ..layers.mlp import Mlp
from ..registry import register_model
from .base import TesseraModel, maybe_checkpoint

__all__ = ["CvT", "ConvAttention", "ConvEmbed", "CvTBlock", "CvTStage"]


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``, the GELU approximation of the official CvT (and CLIP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class ConvEmbed(nn.Module):
    """Convolutional token embedding: an overlapping strided convolution, then LayerNorm.

    Shape: ``(B, C_in, H, W) -> (B, H' * W', C)`` tokens and the grid ``(H', W')``, with
    ``H' = floor((H + 2 * padding - kernel) / stride) + 1``.
    """

    def __init__(self, in_chans: int, embed_dim: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return self.norm(map_to_tokens(x)), grid


class ConvAttention(nn.Module):
    """Multi-head attention with convolutional projections of q, k and v.

    Each of q, k, v is a depthwise ``kernel_size`` convolution with BatchNorm on the token map
    (stride ``stride_q`` for q, ``stride_kv`` for k and v), then a linear layer. Prefix tokens
    (the class token) skip the convolutions and are prepended to q, k and v.

    Args:
        dim: channels C.
        num_heads: heads h.
        qkv_bias: bias on the linear q/k/v projections.
        attn_drop, proj_drop: dropout on the attention weights and after the output projection.
        kernel_size, stride_q, stride_kv: the depthwise projections.
        num_prefix_tokens: tokens in front of the map (1 with a class token, else 0).

    Shape: ``(B, P + H * W, C) -> (B, P + ceil(H / stride_q) * ceil(W / stride_q), C)``;
    k and v have ``P + ceil(H / stride_kv) * ceil(W / stride_kv)`` tokens.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        kernel_size: int = 3,
        stride_q: int = 1,
        stride_kv: int = 2,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.num_prefix_tokens = num_prefix_tokens
        self.scale = dim**-0.5  # the official scale: the full width, not the head width
        self.conv_proj_q = ConvBN(dim, dim, kernel_size, stride_q, groups=dim)
        self.conv_proj_k = ConvBN(dim, dim, kernel_size, stride_kv, groups=dim)
        self.conv_proj_v = ConvBN(dim, dim, kernel_size, stride_kv, groups=dim)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        #: use scaled_dot_product_attention (True) or the written-out reference (False)

    def _project(self, conv: ConvBN, linear: nn.Linear, prefix: torch.Tensor, grid_map: torch.Tensor) -> torch.Tensor:
        """``(B, P, C)`` prefix and ``(B, C, H, W)`` map -> ``(B, h, P + N', C / h)``."""
        x = linear(torch.cat([prefix, map_to_tokens(conv(grid_map))], dim=1))
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        prefix, tokens = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        grid_map = tokens_to_map(tokens, grid)
        q = self._project(self.conv_proj_q, self.proj_q, prefix, grid_map)
        k = self._project(self.conv_proj_k, self.proj_k, prefix, grid_map)
        v = self._project(self.conv_proj_v, self.proj_v, prefix, grid_map)
        dropout_p = self.attn_drop.p if self.training else 0.0
        out = attend(q, k, v, None, self.scale, dropout_p)
        out = out.transpose(1, 2).flatten(2)
        return self.proj_drop(self.proj(out))


class CvTBlock(nn.Module):
    """Pre-norm block: convolutional attention and an MLP, each residual (one stochastic-depth
    module serves both branches, as in the official code).

    Shape: ``(B, P + H * W, C) -> (B, P + H * W, C)`` (with ``stride_q = 1``).
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
        act_layer: type[nn.Module] = QuickGELU,
        **attn_kwargs,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ConvAttention(dim, num_heads, qkv_bias, attn_drop, drop, **attn_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CvTStage(nn.Module):
    """A convolutional token embedding, an optional class token, and CvT blocks.

    Shape: ``(B, C_in, H, W) -> (B, P + H' * W', C)`` tokens (class token first when present)
    and the grid ``(H', W')``.
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        patch_stride: int,
        patch_padding: int,
        with_cls_token: bool,
        drop_rate: float = 0.0,
        drop_path: Sequence[float] = (),
        **block_kwargs,
    ) -> None:
        super().__init__()
        self.patch_embed = ConvEmbed(in_chans, embed_dim, patch_size, patch_stride, patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if with_cls_token else None
        self.num_prefix_tokens = int(with_cls_token)
        self.pos_drop = nn.Dropout(drop_rate)
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            CvTBlock(embed_dim, num_heads, drop=drop_rate, drop_path=drop_path[j],
                     num_prefix_tokens=self.num_prefix_tokens, **block_kwargs)
            for j in range(depth)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, grid = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = maybe_checkpoint(blk, x, grid, enabled=self.grad_checkpointing)
        return x, grid


class CvT(TesseraModel):
    """Convolutional vision Transformer.

    Args:
        img_size: the training resolution (for ``default_cfg``; there is no position
            embedding, so any input of at least one patch works).
        in_chans: input channels.
        num_classes: classes of the linear head; 0 for none.
        embed_dims, depths, num_heads: channels, blocks and heads of the three stages.
        patch_sizes, patch_strides, patch_paddings: the convolutional token embeddings.
        mlp_ratio: MLP hidden width over C.
        qkv_bias: bias on the q/k/v linear projections.
        kernel_qkv, stride_q, stride_kv: the depthwise projections of q/k/v.
        cls_token: a class token in the last stage (pooling by the class token; else the
            average of the tokens).
        drop_rate, attn_drop_rate: dropout inside the blocks and on attention weights.
        drop_path_rate: stochastic depth. A tuple gives each stage's rate (rising linearly
            over that stage's blocks, the official rule); a float rises linearly over all
            blocks of the model.
        act_layer: ``"quick_gelu"`` (official) or ``"gelu"``.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives the
    normalised tokens of the last stage ``(B, 1 + H/16 * W/16, C)`` (class token first).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims: Sequence[int] = (64, 192, 384),
        depths: Sequence[int] = (1, 2, 10),
        num_heads: Sequence[int] = (1, 3, 6),
        patch_sizes: Sequence[int] = (7, 3, 3),
        patch_strides: Sequence[int] = (4, 2, 2),
        patch_paddings: Sequence[int] = (2, 1, 1),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        kernel_qkv: int = 3,
        stride_q: int = 1,
        stride_kv: int = 2,
        cls_token: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float | Sequence[float] = (0.0, 0.0, 0.1),
        act_layer: str = "quick_gelu",
    ) -> None:
        super().__init__()
        n = len(embed_dims)
        for name, value in (("depths", depths), ("num_heads", num_heads), ("patch_sizes", patch_sizes),
                            ("patch_strides", patch_strides), ("patch_paddings", patch_paddings)):
            if len(value) != n:
                raise ValueError(f"{name} {tuple(value)} has {len(value)} entries; embed_dims has {n}")
        if act_layer not in ACTIVATIONS:
            raise ValueError(f"unknown act_layer {act_layer!r}; expected one of {sorted(ACTIVATIONS)}")
        if stride_q != 1:
            raise ValueError("stride_q must be 1: the blocks are residual, so q keeps every token")
        img = to_ntuple(img_size, 2, "img_size")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = embed_dims[-1]
        self.use_cls_token = cls_token
        self.num_stages = n
        self.min_input_size = (patch_strides[0], patch_strides[0])
        self.num_prefix_tokens = int(cls_token)

        if isinstance(drop_path_rate, (int, float)):
            rates = drop_path_rates(drop_path_rate, sum(depths))
            dpr = [rates[sum(depths[:i]) : sum(depths[: i + 1])] for i in range(n)]
        else:
            if len(drop_path_rate) != n:
                raise ValueError(f"drop_path_rate {tuple(drop_path_rate)} needs one rate per stage ({n})")
            dpr = [drop_path_rates(r, d) for r, d in zip(drop_path_rate, depths)]

        self.feature_info: list[dict] = []
        stride = 1
        chans = in_chans
        for i in range(n):
            stage = CvTStage(
                chans, embed_dims[i], depths[i], num_heads[i], patch_sizes[i], patch_strides[i], patch_paddings[i],
                with_cls_token=cls_token and i == n - 1, drop_rate=drop_rate, drop_path=dpr[i],
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, attn_drop=attn_drop_rate, act_layer=ACTIVATIONS[act_layer],
                kernel_size=kernel_qkv, stride_q=stride_q, stride_kv=stride_kv,
            )
            setattr(self, f"stage{i}", stage)  # the official names: stage0, stage1, stage2
            stride *= patch_strides[i]
            chans = embed_dims[i]
            self.feature_info.append(dict(num_chs=chans, reduction=stride, module=f"stage{i}"))
        #: the maps of ``forward_intermediates`` are the stages' raw outputs, not normalised
        self.intermediates_normalized = False

        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_linear_trunc_normal)
        for stage in self.stages:
            if stage.cls_token is not None:
                nn.init.trunc_normal_(stage.cls_token, std=0.02)
        self.default_cfg["input_size"] = (in_chans, *img)
        self.default_cfg["crop_pct"] = 0.875

    @property
    def stages(self) -> list[CvTStage]:
        return [getattr(self, f"stage{i}") for i in range(self.num_stages)]

    def no_weight_decay(self) -> set[str]:
        return {f"stage{i}.cls_token" for i, s in enumerate(self.stages) if s.cls_token is not None}

    def _check(self, x: torch.Tensor) -> None:
        check_input(x, rank=4, channels=self.in_chans, layout=f"(B, {self.in_chans}, H, W)",
                    min_size=self.min_input_size)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each stage's output tokens as a map, without the class token and not normalised:
        ``[(B, C_i, H_i, W_i)]`` at strides 4, 8, 16."""
        self._check(x)
        outs = []
        for stage in self.stages:
            tokens, grid = stage(x)
            x = tokens_to_map(tokens[:, stage.num_prefix_tokens :], grid)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised tokens of the last stage: ``(B, P + N, C)``, the class token first
        when there is one."""
        self._check(x)
        stages = self.stages
        for stage in stages[:-1]:
            tokens, grid = stage(x)
            x = tokens_to_map(tokens, grid)  # no class token before the last stage
        tokens, _ = stages[-1](x)
        return self.norm(tokens)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The class token (or the mean of the tokens without one), then the linear head:
        ``(B, P + N, C) -> (B, num_classes)`` (``(B, C)`` with ``pre_logits``)."""
        x = x[:, 0] if self.use_cls_token else x.mean(dim=1)
        return x if pre_logits else self.head(x)


# ---------------------------------------------------------------------------------------
# Registered variants (the official ImageNet-1K configurations, 224x224)
# ---------------------------------------------------------------------------------------


@register_model
def cvt_13(**kwargs) -> CvT:
    """CvT-13: dims 64/192/384, heads 1/3/6, depths 1-2-10 (20.0M parameters)."""
    return CvT(**{"depths": (1, 2, 10), **kwargs})


@register_model
def cvt_21(**kwargs) -> CvT:
    """CvT-21: dims 64/192/384, heads 1/3/6, depths 1-4-16 (31.6M parameters)."""
    return CvT(**{"depths": (1, 4, 16), **kwargs})
