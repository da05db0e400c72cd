"""Swin Transformer (Liu et al., 2021) and Video Swin Transformer (Liu et al., 2022).

The image and the video model are two configurations of the same classes: blocks, stages
and patch merging work on a channels-last grid ``(B, *grid, C)`` of 2 or 3 axes, and all
window logic lives in :mod:`tessera.layers.windows`. State-dict keys follow the official
code (``patch_embed``, ``layers.{i}.blocks.{j}``, ``layers.{i}.downsample`` at the end of
stage ``i``, ``norm``, ``head``), so official checkpoints load with no renaming.

Numerics follow the official implementations in eval mode: the same shift, mask (-100),
bias index and merge order. Where they differ from each other, each model keeps its own
official behaviour:

* window clamping: the image model clamps at construction (a stage whose map at
  ``img_size`` is no larger than the window gets a window of the map's size and no shift),
  the video model per axis at run time. Both also clamp per axis at run time, so any input
  size works; with the official sizes this changes nothing.
* padding: the video model pads its grid at the end to a multiple of the window after
  ``norm1`` (pad tokens are zeros, not masked); the image model does the same for sizes
  that the official code rejects.
* the bias of a window clamped at run time on a spatial axis: the video model slices the
  index as the official code does (see :func:`tessera.layers.windows.clamped_bias_index`).

At sizes the official image code refuses, the image model follows its ``size_rule``
(``official``, ``torchvision`` or ``timm``; :class:`tessera.layers.windows.SizeRule`): each
stage's window, shift and padding, at construction and at run time, as that code has them.
The feature pyramid (``features_only=True``) is the official detection and segmentation
backbone, whose rule is ``always_partition``: every stage keeps its window and shift and
pads its map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .. import backends
from ..layers.attention import WindowAttention
from ..layers.drop import DropPath, drop_path_rates
from ..layers.helpers import autocast_enabled, check_input, init_linear_trunc_normal, to_ntuple
from ..layers.mlp import Mlp
from ..layers.patch_embed import PatchEmbed
from ..layers.pos_embed import resize_pos_embed
from ..layers.windows import WindowPlan, get_plan
from ..layers.windows import size_rule as get_size_rule
from ..registry import register_model
from .base import TesseraModel

__all__ = ["SwinTransformer", "VideoSwinTransformer", "SwinBlock", "SwinStage", "PatchMerging"]


class SwinBlock(nn.Module):
    """One Swin block: (shifted) window attention and an MLP, each pre-normed and residual.

    ``shift_size`` is all zeros for regular blocks and half the window for shifted ones.

    Shape: ``(B, *grid, C) -> (B, *grid, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        bias_index_mode: str = "exact",
    ) -> None:
        super().__init__()
        self.shift_size = tuple(shift_size)
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale, attn_drop, drop, bias_index_mode)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def is_shifted(self, plan: WindowPlan) -> bool:
        return any(self.shift_size) and plan.shifted

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        """The official block: pad, roll (in the size rule's order: ``plan.partition``),
        partition, attend, reverse, roll back, crop; the residual add; the MLP and its
        residual add."""
        shifted = self.is_shifted(plan)
        shortcut = x
        windows = plan.partition(self.norm1(x), shifted)
        windows = self.attn(windows, plan.window, plan.mask if shifted else None)
        x = shortcut + self.drop_path(plan.reverse(windows, shifted))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def merge_neighbours(x: torch.Tensor) -> torch.Tensor:
    """Concatenate each 2x2 group of neighbours on the last two grid axes, in the official
    order ``[(0,0), (1,0), (0,1), (1,1)]`` (row offset first); odd sizes are zero-padded at
    the end. Shape: ``(B, *lead, H, W, C) -> (B, *lead, ceil(H/2), ceil(W/2), 4C)``."""
    h, w = x.shape[-3], x.shape[-2]
    if h % 2 or w % 2:
        x = nn.functional.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    *lead, h, w, c = x.shape
    x = x.reshape(*lead, h // 2, 2, w // 2, 2, c)
    n = x.dim()
    # (..., H/2, dh, W/2, dw, C) -> (..., H/2, W/2, dw, dh, C): channel block k = dh + 2 * dw
    return x.permute(*range(n - 5), n - 5, n - 3, n - 2, n - 4, n - 1).reshape(*lead, h // 2, w // 2, 4 * c)


class PatchMerging(nn.Module):
    """Merge 2x2 neighbouring tokens on the last two grid axes (space, never time).

    The four neighbours are concatenated in the official order ``[(0,0), (1,0), (0,1),
    (1,1)]`` (row offset first), normalised, then projected from 4C to 2C without bias.
    Odd sizes are zero-padded at the end.

    Shape: ``(B, *lead, H, W, C) -> (B, *lead, ceil(H/2), ceil(W/2), 2C)``.
    """

    def __init__(self, dim: int, norm_layer: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = merge_neighbours(x)
        # .to: the stream keeps its dtype (fp32 under autocast, see _SwinBase._embed)
        x_norm = backends.layer_norm_for_matmul(x, self.norm)
        return backends.linear(x_norm, self.reduction.weight, None).to(x.dtype)


class SwinStage(nn.Module):
    """A stage of Swin blocks, alternating regular and shifted windows, with the patch
    merging at its end (official layout: ``layers.{i}.downsample``). ``window_size`` and
    ``shift_size`` are the stage's own (after the model's size rule clamped them at
    construction); ``size_rule`` sizes the windows on each input's grid.

    ``block_layer`` and ``downsample_layer`` are the block and merging classes (Swin V2
    passes its own); ``block_kwargs`` go to every block as they are (``qk_scale`` and
    ``bias_index_mode`` for :class:`SwinBlock`).

    Shape: ``(B, *grid, C) -> (B, *grid', C')`` (grid halved in space and C doubled when
    there is a downsample).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: Sequence[int],
        shift_size: Sequence[int],
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        norm_layer: type[nn.Module] = nn.LayerNorm,
        downsample: bool = False,
        block_layer: Callable[..., nn.Module] = SwinBlock,
        downsample_layer: Callable[..., nn.Module] = PatchMerging,
        size_rule: str = "official",
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.window_size = tuple(window_size)
        self.shift_size = tuple(shift_size)
        self.size_rule = size_rule
        zero = (0,) * len(self.window_size)
        drop_path = list(drop_path) or [0.0] * depth
        self.blocks = nn.ModuleList(
            block_layer(
                dim=dim, num_heads=num_heads, window_size=window_size, shift_size=zero if i % 2 == 0 else shift_size,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop, drop_path=drop_path[i],
                norm_layer=norm_layer, **block_kwargs,
            )
            for i in range(depth)
        )
        self.downsample = downsample_layer(dim, norm_layer) if downsample else None
        self.grad_checkpointing = False

    def plan(self, grid: Sequence[int], device: torch.device) -> WindowPlan:
        return get_plan(grid, self.window_size, self.shift_size, device, self.size_rule)

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks without the downsample: ``(B, *grid, C) -> (B, *grid, C)``."""
        return backends.swin_blocks(self, x, self.plan(tuple(x.shape[1:-1]), x.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return self.downsample(x) if self.downsample is not None else x


class _SwinBase(TesseraModel):
    """The body shared by the image and the video model (see the module docstring), and by
    Swin V2 (:mod:`tessera.models.swin_v2`): ``block_layer`` and ``downsample_layer`` are
    the stages' block and merging classes, ``block_args`` the blocks' own arguments (one
    mapping for every stage, or one per stage)."""

    def __init__(
        self,
        *,
        ndim: int,
        img_size: Sequence[int] | None,
        patch_size: Sequence[int],
        in_chans: int,
        num_classes: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: Sequence[int],
        mlp_ratio: float,
        qkv_bias: bool,
        drop_rate: float,
        attn_drop_rate: float,
        drop_path_rate: float,
        ape: bool,
        patch_norm: bool,
        use_checkpoint: bool,
        head_drop_rate: float,
        clamp_at_construction: bool,
        size_rule: str = "official",
        norm_layer: type[nn.Module] = nn.LayerNorm,
        block_layer: Callable[..., nn.Module] = SwinBlock,
        downsample_layer: Callable[..., nn.Module] = PatchMerging,
        block_args: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.ndim = ndim
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_size = tuple(patch_size)
        self.window_size = tuple(window_size)
        self.img_size = tuple(img_size) if img_size is not None else None
        self.ape = ape
        rule = get_size_rule(size_rule)
        self.size_rule = rule.name
        # each stage's map at img_size, as patch embedding and merging really make it
        stage_grids = (rule.stage_grids(self.img_size, self.patch_size, len(depths))
                       if self.img_size is not None else [None] * len(depths))

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim, norm=patch_norm,
                                      remainder=rule.patch_remainder)
        if ape:
            if self.img_size is None:
                raise ValueError("ape=True needs img_size to know the grid of the position embedding")
            self.patch_grid = stage_grids[0]
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, int(torch.tensor(self.patch_grid).prod()), embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = drop_path_rates(drop_path_rate, sum(depths))  # linear over all blocks
        block_args = {} if block_args is None else block_args
        stage_args = [block_args] * len(depths) if isinstance(block_args, Mapping) else list(block_args)
        if len(stage_args) != len(depths):
            raise ValueError(f"block arguments for {len(stage_args)} stages, but {len(depths)} stages")
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            # the window the stage's bias table is made for, and its shift: the image model
            # fits them to the stage's map at img_size, as its size rule says
            window, shift = rule.stage_window(stage_grids[i] if clamp_at_construction else None, self.window_size)
            self.layers.append(
                SwinStage(
                    dim=int(embed_dim * 2**i),
                    depth=depth,
                    num_heads=num_heads[i],
                    window_size=window,
                    shift_size=shift,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    norm_layer=norm_layer,
                    downsample=i < self.num_layers - 1,
                    block_layer=block_layer,
                    downsample_layer=downsample_layer,
                    **stage_args[i],
                    size_rule=rule.name,
                )
            )
        # one entry per stage output of forward_intermediates (see tessera.models.features)
        self.feature_info = [
            dict(num_chs=int(embed_dim * 2**i), reduction=self.patch_size[-1] * 2**i, module=f"layers.{i}")
            for i in range(self.num_layers)
        ]
        if ndim == 3:
            for info in self.feature_info:
                info["temporal_reduction"] = self.patch_size[0]
        self.norm = norm_layer(self.num_features)
        self.head_drop = nn.Dropout(head_drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_linear_trunc_normal)
        self.set_grad_checkpointing(use_checkpoint)

    # -- input checks ------------------------------------------------------------------------

    def _check(self, x: torch.Tensor) -> None:
        axes = "(B, C, H, W)" if self.ndim == 2 else "(B, C, T, H, W)"
        layout = axes.replace("C", str(self.in_chans), 1)
        # a clip shorter than the temporal patch is padded (as the official code does); an
        # image smaller than one patch has nothing to embed
        check_input(x, rank=self.ndim + 2, channels=self.in_chans, layout=layout, min_size=self.patch_size[-2:])

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report) -> dict[str, torch.Tensor]:
        """Image weights loaded into a video model are inflated first (the official
        ``inflate_weights``); then tables and embeddings are resized as for every model."""
        from ..errors import CheckpointError
        from ..weights.adapt import inflate_image_to_video

        if any(".cpb_mlp." in k for k in state_dict):
            raise CheckpointError("a Swin V2 checkpoint (cpb_mlp) cannot be loaded into Swin V1; "
                                  "use a swinv2_* model")
        return super().adapt_checkpoint(inflate_image_to_video(self, state_dict, report), report)

    def no_weight_decay(self) -> set[str]:
        names = {n for n, _ in self.named_parameters() if "relative_position_bias_table" in n}
        if self.ape:
            names.add("absolute_pos_embed")
        return names

    # -- the forward pass ----------------------------------------------------------------------

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x = self.patch_embed(x)  # (B, *grid, C)
        if autocast_enabled(x.device):
            # The residual stream stays in fp32 under autocast; only the matrix products and
            # the attention run in half precision. (Under CUDA autocast LayerNorm runs in fp32
            # and makes the stream fp32 by itself; CPU autocast would leave it in bf16, where
            # the rounding of every residual add costs about a third of the agreement with fp32.)
            x = x.float()
        if self.ape:
            grid = tuple(x.shape[1:-1])
            pos = resize_pos_embed(self.absolute_pos_embed, self.patch_grid, grid)
            x = x + pos.view(1, *grid, -1)
        return self.pos_drop(x)

    def forward_intermediates(self, x: torch.Tensor, channels_last: bool = False) -> list[torch.Tensor]:
        """Each stage's output before its downsample, not normalised: ``[(B, C_i, *grid_i)]``
        (``(B, *grid_i, C_i)`` with ``channels_last``). Strides 4, 8, 16, 32 for images."""
        x = self._embed(x)
        outs = []
        for layer in self.layers:
            x = layer.forward_blocks(x)
            outs.append(x if channels_last else x.movedim(-1, 1))
            if layer.downsample is not None:
                x = layer.downsample(x)
        return outs

    def prune_intermediate_layers(self, indices: Sequence[int]) -> None:
        """Keep only what :meth:`forward_intermediates` needs for the stages ``indices``: the
        stages after the last one, its downsample, the final norm and the head are removed
        (for feature pyramids; ``forward`` is no longer the classifier's)."""
        last = max(indices)
        self.layers = self.layers[: last + 1]
        self.layers[-1].downsample = None
        self.feature_info = self.feature_info[: last + 1]
        self.norm = nn.Identity()
        self.reset_classifier(0)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final normalised feature map, channels first: ``(B, C, H, W)`` for images,
        ``(B, C, T, H, W)`` for videos."""
        x = self._embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).movedim(-1, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pooling, dropout and the linear head: ``(B, C, *grid) -> (B, classes)``
        (``(B, C)`` with ``pre_logits``)."""
        x = self.head_drop(x.mean(dim=tuple(range(2, x.dim()))))
        if pre_logits:
            return x
        if autocast_enabled(x.device) and isinstance(self.head, nn.Linear):
            # the classifier in the parameters' precision: a thousandth of the work, and the
            # logits are what precision is judged by
            with torch.autocast(x.device.type, enabled=False):
                return self.head(x.to(self.head.weight.dtype))
        return self.head(x)


class SwinTransformer(_SwinBase):
    """Swin Transformer for images.

    Args (the official names):
        img_size: the training resolution. It fixes, as the official code, which stages have
            a window no smaller than their map (window clamped, no shift); each stage's map
            is what patch merging makes of it (odd sides rounded up). Other input sizes
            work too (the grid is padded to the window).
        patch_size: patch side (4).
        in_chans: input channels.
        num_classes: classes of the linear head; 0 for none.
        embed_dim: channels C of the first stage; stage i has ``C * 2**i``.
        depths, num_heads: blocks and heads per stage.
        window_size: window side (7 at 224, 12 at 384).
        mlp_ratio: MLP hidden width over C.
        qkv_bias: bias on the qkv projection.
        qk_scale: attention scale (default ``head_dim ** -0.5``).
        drop_rate: dropout after the embedding and inside blocks.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        ape: learned absolute position embedding (resized bicubically for other sizes).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing from the start.
        head_drop_rate: dropout before the head.
        size_rule: how windows fit maps that are not a multiple of the window (sizes the
            official code refuses): ``official`` (the default: the official rule, extended),
            ``torchvision`` or ``timm``, to reproduce weights fine-tuned at such sizes in
            those libraries. See :class:`tessera.layers.windows.SizeRule`; with maps that
            are multiples of the window (224, 384) all three are the same function.
            ``always_partition`` is the official detection and segmentation backbones':
            every stage keeps its window and shift whatever its map, which is padded (the
            default of ``features_only=True``; timm's and Hugging Face's
            ``always_partition``). It differs from the others even at 224: stage 4 of
            Swin-T at 224 keeps its shift on its 7x7 map.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives
    ``(B, C * 8, ceil(H / 32), ceil(W / 32))`` for four stages (``floor(H / 4)`` patches
    instead of ``ceil`` with the ``torchvision`` and ``timm`` rules).
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int | Sequence[int] = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        head_drop_rate: float = 0.0,
        size_rule: str = "official",
    ) -> None:
        img = to_ntuple(img_size, 2, "img_size")
        super().__init__(
            ndim=2, img_size=img, patch_size=to_ntuple(patch_size, 2, "patch_size"), in_chans=in_chans,
            num_classes=num_classes, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads),
            window_size=to_ntuple(window_size, 2, "window_size"), mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, ape=ape, patch_norm=patch_norm, use_checkpoint=use_checkpoint,
            head_drop_rate=head_drop_rate, clamp_at_construction=True,
            block_args=dict(qk_scale=qk_scale, bias_index_mode="exact"), size_rule=size_rule,
        )
        self.default_cfg["input_size"] = (in_chans, *img)
        if img[0] >= 384:
            self.default_cfg["crop_pct"] = 1.0  # the official 384 models are evaluated uncropped


class VideoSwinTransformer(_SwinBase):
    """Video Swin Transformer (the official ``SwinTransformer3D`` with an I3D head).

    Args: as :class:`SwinTransformer`, with 3-tuples ``(T, H, W)`` for ``patch_size`` and
    ``window_size``; windows are clamped per axis at run time as in the official code.
    ``img_size`` (a clip size ``(T, H, W)``) is needed only with ``ape=True``.
    ``head_drop_rate`` is the I3D head's dropout (0.5).

    Shape: ``(B, in_chans, T, H, W) -> (B, num_classes)``; ``forward_features`` gives
    ``(B, C * 8, ceil(T / pT), ceil(H / 32), ceil(W / 32))`` for four stages.
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] = (2, 4, 4),
        in_chans: int = 3,
        num_classes: int = 400,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = (8, 7, 7),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.2,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        head_drop_rate: float = 0.5,
        img_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            ndim=3, img_size=to_ntuple(img_size, 3, "img_size") if img_size is not None else None,
            patch_size=to_ntuple(patch_size, 3, "patch_size"), in_chans=in_chans, num_classes=num_classes,
            embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads),
            window_size=to_ntuple(window_size, 3, "window_size"), mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate, ape=ape, patch_norm=patch_norm, use_checkpoint=use_checkpoint,
            head_drop_rate=head_drop_rate, clamp_at_construction=False,
            block_args=dict(qk_scale=qk_scale, bias_index_mode="official"),
        )
        self.default_cfg.update(input_size=(in_chans, 32, 224, 224), crop_pct=1.0, interpolation="bilinear")


# ---------------------------------------------------------------------------------------
# Registered variants (default classes: 1000 for images, 400 for video)
# ---------------------------------------------------------------------------------------

_SIZES = {
    "t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "l": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
# drop path of the official ImageNet-1K (image) and Kinetics-400 (video) recipes
_IMAGE_DROP_PATH = {"t": 0.2, "s": 0.3, "b": 0.5, "l": 0.2}
_VIDEO_DROP_PATH = {"t": 0.1, "s": 0.1, "b": 0.3, "l": 0.3}


def _pyramid_is_official_backbone(fn):
    """``create_model(name, features_only=True)`` builds the official detection and
    segmentation backbone: every stage keeps its window and shift and pads its map
    (``size_rule="always_partition"``). Swin V2's pyramid follows the same rule."""
    fn.features_defaults = {"size_rule": "always_partition"}
    return fn


def _image(size: str, img: int = 224, window: int = 7, **kwargs) -> dict:
    return {**_SIZES[size], "img_size": img, "window_size": window, "drop_path_rate": _IMAGE_DROP_PATH[size], **kwargs}


def _video(size: str, window=(8, 7, 7), **kwargs) -> dict:
    return {**_SIZES[size], "window_size": window, "drop_path_rate": _VIDEO_DROP_PATH[size], **kwargs}


@register_model
@_pyramid_is_official_backbone
def swin_t(**kwargs) -> SwinTransformer:
    """Swin-T: C96, depths 2-2-6-2, window 7, 224."""
    return SwinTransformer(**{**_image("t"), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swin_s(**kwargs) -> SwinTransformer:
    """Swin-S: C96, depths 2-2-18-2, window 7, 224."""
    return SwinTransformer(**{**_image("s"), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swin_b(**kwargs) -> SwinTransformer:
    """Swin-B: C128, depths 2-2-18-2, window 7, 224."""
    return SwinTransformer(**{**_image("b"), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swin_b_384(**kwargs) -> SwinTransformer:
    """Swin-B at 384 with window 12."""
    return SwinTransformer(**{**_image("b", img=384, window=12), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swin_l(**kwargs) -> SwinTransformer:
    """Swin-L: C192, depths 2-2-18-2, window 7, 224."""
    return SwinTransformer(**{**_image("l"), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swin_l_384(**kwargs) -> SwinTransformer:
    """Swin-L at 384 with window 12."""
    return SwinTransformer(**{**_image("l", img=384, window=12), **kwargs})


@register_model
def video_swin_t(**kwargs) -> VideoSwinTransformer:
    """Video Swin-T: as Swin-T, patch (2,4,4), window (8,7,7), 400 classes."""
    return VideoSwinTransformer(**{**_video("t"), **kwargs})


@register_model
def video_swin_s(**kwargs) -> VideoSwinTransformer:
    """Video Swin-S: as Swin-S, patch (2,4,4), window (8,7,7), 400 classes."""
    return VideoSwinTransformer(**{**_video("s"), **kwargs})


@register_model
def video_swin_b(**kwargs) -> VideoSwinTransformer:
    """Video Swin-B: as Swin-B, patch (2,4,4), window (8,7,7), 400 classes."""
    return VideoSwinTransformer(**{**_video("b"), **kwargs})


@register_model
def video_swin_l(**kwargs) -> VideoSwinTransformer:
    """Video Swin-L: as Swin-L, patch (2,4,4), window (8,7,7), 400 classes."""
    return VideoSwinTransformer(**{**_video("l"), **kwargs})


@register_model
def video_swin_b_ssv2(**kwargs) -> VideoSwinTransformer:
    """Video Swin-B for Something-Something v2: window (16,7,7), 174 classes."""
    return VideoSwinTransformer(**{**_video("b", window=(16, 7, 7), num_classes=174, drop_path_rate=0.4), **kwargs})
