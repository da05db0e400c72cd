"""Swin Transformer V2 (Liu et al., 2022) on the window core of Swin V1.

V2 keeps V1's stages, windows, shifts, masks and padding (:mod:`tessera.models.swin`,
:mod:`tessera.layers.windows`) and changes what happens inside a block, as the official
``models/swin_transformer_v2.py`` (microsoft/Swin-Transformer) does:

* **res-post-norm**: ``x = x + drop_path(norm1(attn(x)))``, then
  ``x = x + drop_path(norm2(mlp(x)))``; both norms start at zero weight and bias, so every
  block starts as the identity;
* **scaled cosine attention**: ``normalize(q) @ normalize(k)^T * exp(min(logit_scale,
  log 100))`` with one learned ``logit_scale`` per head (initially ``log 10``);
* **q and v biases**: the ``qkv`` projection has no bias; ``q_bias`` and ``v_bias`` are
  added to q and v, k gets none;
* **log-spaced continuous position bias**: a small MLP (``cpb_mlp``: Linear(2, 512), ReLU,
  Linear(512, heads) without bias) maps every relative offset ``(dy, dx)`` of the window to
  one bias per head, ``16 * sigmoid(.)``. The offsets are divided by ``pretrained_window - 1``
  (by ``window - 1`` when the stage has no pretrained window), multiplied by 8 and mapped to
  ``sign(t) * log2(|t| + 1) / log2(8)``, so a model fine-tuned with a larger window sees the
  offsets it was trained on at the same coordinates and extrapolates smoothly beyond them;
* **patch merging**: the 4C -> 2C projection first, then LayerNorm(2C) (V1 normalises 4C).

State-dict keys are the official ones (``layers.{i}.blocks.{j}.attn.logit_scale``,
``q_bias``, ``v_bias``, ``cpb_mlp.{0,2}``, ``layers.{i}.downsample`` at the end of stage i).
The coordinate table and the index are buffers computed from the model's own window and
pretrained window; they are not saved, and never taken from a checkpoint.

Where the official code has no answer, tessera chooses:

* other input sizes: the grid is zero-padded at the end to a multiple of the window before
  the shift (as V1, torchvision and Hugging Face do; the official code rejects such sizes);
* a window clamped at run time (a map no larger than the window along an axis, at a size
  other than ``img_size``) gets the biases the official code builds for a stage with that
  window: the coordinates of the clamped window, normalised by the pretrained window or,
  without one, by the clamped window - 1;
* a window of one token has the single offset 0 and the coordinate 0 (the official code
  divides 0 by 0 there, as timm and Hugging Face do not).

Attention goes through :func:`tessera.backends.window_attention` with ``cosine=True``, whose
reference is the official order; the bias and the per-head scale come from
:meth:`WindowAttentionV2.position_bias` and :meth:`WindowAttentionV2.logit_scale_factor`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import backends
from ..backends.cache import CACHE
from ..errors import CheckpointError
from ..layers.drop import DropPath
from ..layers.helpers import to_ntuple
from ..layers.mlp import Mlp
from ..layers.windows import WindowPlan, relative_position_index
from ..registry import register_model
from .swin import _pyramid_is_official_backbone, _SwinBase, merge_neighbours

__all__ = ["SwinTransformerV2", "SwinV2Block", "WindowAttentionV2", "PatchMergingV2", "log_spaced_coordinates"]

#: the largest logit scale: exp(clamp(logit_scale, max=log 100)) <= 100
LOGIT_SCALE_MAX = math.log(100.0)
#: hidden width of the continuous-position-bias MLP
CPB_HIDDEN = 512


def log_spaced_coordinates(window: Sequence[int], pretrained_window: Sequence[int]) -> torch.Tensor:
    """The continuous position bias's input: ``(1, 2*W_0 - 1, ..., 2*W_n - 1, n)``, one
    coordinate vector per relative offset of ``window``, in the official layout.

    Each offset ``d`` along axis ``i`` becomes ``t = 8 * d / (P_i - 1)`` with ``P`` the
    pretrained window (``window`` itself where it is 0), then ``sign(t) * log2(|t| + 1) / 3``.
    A window of 1 has only ``d = 0``, which stays 0.
    """
    axes = []
    for w, p in zip(window, pretrained_window):
        # made on the CPU as the official code does (the same float32 rounding everywhere)
        offsets = torch.arange(-(w - 1), w, dtype=torch.float32, device="cpu")
        span = (p if p > 0 else w) - 1
        axes.append(offsets / max(span, 1))
    table = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).unsqueeze(0)
    table = table * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    return table.to(torch.get_default_device())


class WindowAttentionV2(nn.Module):
    """Scaled cosine attention inside windows with a continuous position bias.

    Args:
        dim: channels C; ``num_heads`` must divide it.
        window_size: the window, one entry per grid axis.
        num_heads: heads h.
        qkv_bias: learn ``q_bias`` and ``v_bias`` (k never has a bias).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        pretrained_window_size: the window the coordinates are normalised by (0: none, the
            window itself).

    Buffers (not saved): ``relative_coords_table`` (:func:`log_spaced_coordinates`) and
    ``relative_position_index`` ``(N, N)``.

    Shape: windows ``(B * nW, N, C) -> (B * nW, N, C)`` with ``N = prod(window_size)``.
    """

    def __init__(
        self,
        dim: int,
        window_size: Sequence[int],
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        pretrained_window_size: int | Sequence[int] = 0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = tuple(window_size)
        self.pretrained_window_size = to_ntuple(pretrained_window_size, len(self.window_size), "pretrained_window_size")
        self.num_heads = num_heads
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(len(self.window_size), CPB_HIDDEN, bias=True),
            nn.ReLU(),
            nn.Linear(CPB_HIDDEN, num_heads, bias=False),
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.register_parameter("q_bias", None)
            self.register_parameter("v_bias", None)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        table, index = self._geometry(self.window_size)
        self.register_buffer("relative_coords_table", table, persistent=False)
        self.register_buffer("relative_position_index", index, persistent=False)

    def _geometry(self, window: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinate table and index of ``window`` with this module's pretrained window."""
        return log_spaced_coordinates(window, self.pretrained_window_size), relative_position_index(window)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        # official and torchvision checkpoints carry the table and the index; both are
        # recomputed from this module's windows, so they are dropped, never loaded
        for name in ("relative_coords_table", "relative_position_index"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- the terms of the scores ------------------------------------------------------------

    def qkv_bias_vector(self) -> torch.Tensor | None:
        """``[q_bias, 0, v_bias]`` ``(3C,)``, the bias of the ``qkv`` projection; None without."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))

    def logit_scale_factor(self) -> torch.Tensor:
        """``exp(min(logit_scale, log 100))``: ``(h, 1, 1)``, multiplies the cosine scores."""
        return torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()

    def position_bias(self, window: tuple[int, ...] | None = None) -> torch.Tensor:
        """``16 * sigmoid(cpb_mlp(table))[index]``: ``(h, N, N)`` for ``window`` (the module's
        own by default; another one, clamped at run time, gets its own table and index)."""
        table, index = self._table_and_index(tuple(window or self.window_size))
        # the sigmoid goes on the (2W-1)^2 table entries before the gather: the same values
        bias = 16 * torch.sigmoid(self.cpb_mlp(table).view(-1, self.num_heads))
        n = index.shape[0]
        return bias[index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)

    def _table_and_index(self, window: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        if window == self.window_size:
            return self.relative_coords_table, self.relative_position_index
        device = self.relative_position_index.device
        key = ("v2 geometry", window, self.pretrained_window_size, str(device))
        return CACHE.get(key, lambda: tuple(t.to(device) for t in self._geometry(window)))

    def window_bias(self, window: tuple[int, ...], mask: torch.Tensor | None) -> backends.WindowBias:
        """The position bias of the (effective) ``window`` and the shift ``mask``, for
        :func:`tessera.backends.window_attention`."""
        params = tuple(self.cpb_mlp.parameters())
        return backends.WindowBias(
            relative=lambda: self.position_bias(window),
            depends_on=params if mask is None else (*params, mask),
            mask=mask,
            key=(id(self), window, None if mask is None else id(mask)),
        )

    def dropout_p(self) -> float:
        """The dropout on the attention weights in this call (none in eval mode)."""
        return self.attn_drop.p if self.training else 0.0

    #: scaled cosine attention
    cosine = True

    def score_scale(self) -> torch.Tensor:
        """What the cosine scores are multiplied by: :meth:`logit_scale_factor`."""
        return self.logit_scale_factor()

    # -- the attention -----------------------------------------------------------------------

    def forward(
        self, x: torch.Tensor, window: tuple[int, ...] | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x``: ``(B * nW, N, C)`` windows of ``window`` (the module's own by default);
        ``mask``: ``(nW, N, N)`` additive shift mask or None. In the official order."""
        window = tuple(window or self.window_size)
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias_vector())
        x = backends.window_attention(qkv, self.window_bias(window, mask), self.num_heads, self.logit_scale_factor(),
                                      self.dropout_p(), cosine=True)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, window_size={self.window_size}, "
                f"pretrained_window_size={self.pretrained_window_size}, num_heads={self.num_heads}")


class SwinV2Block(nn.Module):
    """One Swin V2 block: (shifted) window attention and an MLP, each post-normed and residual.

    Args: as :class:`tessera.models.swin.SwinBlock`, without ``qk_scale`` (the cosine
    scores have a learned scale), plus ``pretrained_window_size``.

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
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        pretrained_window_size: int | Sequence[int] = 0,
    ) -> None:
        super().__init__()
        self.shift_size = tuple(shift_size)
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttentionV2(dim, window_size, num_heads, qkv_bias, attn_drop, drop, pretrained_window_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    #: the norms come after the attention and the MLP (the backends' fast stages read this)
    post_norm = True

    def is_shifted(self, plan: WindowPlan) -> bool:
        return any(self.shift_size) and plan.shifted

    def forward(self, x: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        """The official block: pad, roll, partition, attend, reverse, roll back, crop; then
        ``x + drop_path(norm1(attention))`` and ``x + drop_path(norm2(mlp(x)))``."""
        shifted = self.is_shifted(plan)
        windows = self.attn(plan.partition(x, shifted), plan.window, plan.mask if shifted else None)
        x = x + self.drop_path(self.norm1(plan.reverse(windows, shifted)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMergingV2(nn.Module):
    """Merge 2x2 neighbours (:func:`tessera.models.swin.merge_neighbours`), project 4C -> 2C
    without bias, then normalise.

    Shape: ``(B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 2C)``.
    """

    def __init__(self, dim: int, norm_layer: type[nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # .to: the stream keeps its dtype (fp32 under autocast, see _SwinBase._embed)
        return self.norm(self.reduction(merge_neighbours(x))).to(x.dtype)


class SwinTransformerV2(_SwinBase):
    """Swin Transformer V2 for images.

    Args (the official names):
        img_size: the training resolution. As in the official code it fixes which stages
            have a window no smaller than their map (window clamped to the map, no shift);
            other input sizes work too (see the module docstring).
        patch_size: patch side (4).
        in_chans: input channels.
        num_classes: classes of the linear head; 0 for none.
        embed_dim: channels C of the first stage; stage i has ``C * 2**i``.
        depths, num_heads: blocks and heads per stage.
        window_size: window side (8 or 16 at 256, 12 at 192, 24 at 384).
        pretrained_window_sizes: per stage, the window the position coordinates are
            normalised by (the window of pre-training, e.g. ``(12, 12, 12, 6)`` for the
            192 -> 256/384 fine-tunes); 0 for none; one int for every stage.
        mlp_ratio: MLP hidden width over C.
        qkv_bias: learn ``q_bias`` and ``v_bias``.
        drop_rate: dropout after the embedding and inside blocks.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth, rising linearly over all blocks to this value.
        ape: learned absolute position embedding.
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: gradient checkpointing from the start.
        head_drop_rate: dropout before the head.
        size_rule: how windows fit maps that are not a multiple of the window, as for
            :class:`tessera.models.SwinTransformer` (``official``, ``torchvision``, ``timm``;
            set when their weights are converted; ``always_partition`` for the dense
            prediction backbone).

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives
    ``(B, C * 8, ceil(H / 32), ceil(W / 32))`` for four stages.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 256,
        patch_size: int | Sequence[int] = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 8,
        pretrained_window_sizes: int | Sequence[int] = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
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
        pretrained = to_ntuple(pretrained_window_sizes, len(depths), "pretrained_window_sizes")
        super().__init__(
            ndim=2, img_size=img, patch_size=to_ntuple(patch_size, 2, "patch_size"), in_chans=in_chans,
            num_classes=num_classes, embed_dim=embed_dim, depths=tuple(depths), num_heads=tuple(num_heads),
            window_size=to_ntuple(window_size, 2, "window_size"), mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rate, ape=ape,
            patch_norm=patch_norm, use_checkpoint=use_checkpoint, head_drop_rate=head_drop_rate,
            clamp_at_construction=True, block_layer=SwinV2Block, downsample_layer=PatchMergingV2,
            block_args=[dict(pretrained_window_size=p) for p in pretrained], size_rule=size_rule,
        )
        self.pretrained_window_sizes = pretrained
        for layer in self.layers:  # res-post-norm starts every block as the identity
            for blk in layer.blocks:
                for norm in (blk.norm1, blk.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)
        self.default_cfg["input_size"] = (in_chans, *img)
        if img[0] >= 384:
            self.default_cfg["crop_pct"] = 1.0  # the official 384 models are evaluated uncropped

    def no_weight_decay(self) -> set[str]:
        """The official keywords: the position-bias MLPs and the logit scales (and the
        absolute position embedding)."""
        names = {n for n, _ in self.named_parameters() if "cpb_mlp" in n or "logit_scale" in n}
        if self.ape:
            names.add("absolute_pos_embed")
        return names

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report) -> dict[str, torch.Tensor]:
        """Coordinate tables and indices in the checkpoint are dropped: the model's own come
        from its windows and pretrained windows, as the official fine-tuning recomputes them;
        the position-bias MLPs load as they are. The report says when the tables differ."""
        from ..weights.adapt import adapt_generic

        if any(k.endswith("relative_position_bias_table") for k in state_dict):
            raise CheckpointError("a Swin V1 checkpoint (relative_position_bias_table) cannot be loaded into "
                                  "Swin V2, whose position bias is an MLP (cpb_mlp)")
        had_tables = any(k.endswith("relative_coords_table") for k in state_dict)
        changed: dict[tuple, int] = {}
        for key in [k for k in state_dict if k.endswith(("relative_coords_table", "relative_position_index"))]:
            theirs = state_dict.pop(key)
            if not key.endswith("relative_coords_table"):
                continue
            owner = key.rsplit(".", 1)[0]
            try:
                attn = self.get_submodule(owner)
            except AttributeError:
                continue  # a stage this model does not have: its weights are reported unused
            ours = attn.relative_coords_table
            if theirs.shape != ours.shape or not torch.equal(theirs.to(ours.device, ours.dtype), ours):
                old = tuple((s + 1) // 2 for s in theirs.shape[1:-1])
                group = (old, attn.window_size, attn.pretrained_window_size)
                changed[group] = changed.get(group, 0) + 1
        for (old, window, pretrained), count in sorted(changed.items()):
            norm = f"pretrained window {_fmt(pretrained)}" if any(pretrained) else "no pretrained window"
            report.notes.append(
                f"continuous position bias: {count} coordinate tables recomputed for window {_fmt(window)} "
                f"({norm}); the checkpoint's were made for window {_fmt(old)}"
                + (" with another normalisation" if old == window else "")
                + "; the cpb MLPs are loaded unchanged")
        if not had_tables:
            stretched = {(tuple(layer.window_size), p) for layer, p in zip(self.layers, self.pretrained_window_sizes)
                         if p and (p,) * 2 != tuple(layer.window_size)}
            if stretched:
                pairs = ", ".join(f"{_fmt(w)} from {p}x{p}" for w, p in sorted(stretched))
                report.notes.append(f"continuous position bias: coordinates of the model's windows normalised by "
                                    f"the pretrained windows ({pairs}); the cpb MLPs are loaded unchanged")
        return adapt_generic(self, state_dict, report)


def _fmt(window: Sequence[int]) -> str:
    return "x".join(map(str, window))


# ---------------------------------------------------------------------------------------
# Registered variants: the official configurations (configs/swinv2/*.yaml)
# ---------------------------------------------------------------------------------------

_SIZES = {
    "t": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    "s": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    "b": dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    "l": dict(embed_dim=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}
#: drop path of the official ImageNet-1K recipes; the 22K pre-training and the 22K -> 1K
#: fine-tunes use 0.2 for every size
_DROP_PATH_1K = {"t": 0.2, "s": 0.3, "b": 0.5}
#: the windows of the 192 pre-training, per stage (the last stage's 6x6 map clamps 12 to 6)
_FROM_192 = (12, 12, 12, 6)


def _v2(size: str, img: int, window: int, drop_path: float, **kwargs) -> dict:
    return {**_SIZES[size], "img_size": img, "window_size": window, "drop_path_rate": drop_path, **kwargs}


@register_model
@_pyramid_is_official_backbone
def swinv2_t(**kwargs) -> SwinTransformerV2:
    """Swin V2-T: C96, depths 2-2-6-2, window 8, 256."""
    return SwinTransformerV2(**{**_v2("t", 256, 8, _DROP_PATH_1K["t"]), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_s(**kwargs) -> SwinTransformerV2:
    """Swin V2-S: C96, depths 2-2-18-2, window 8, 256."""
    return SwinTransformerV2(**{**_v2("s", 256, 8, _DROP_PATH_1K["s"]), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_b(**kwargs) -> SwinTransformerV2:
    """Swin V2-B: C128, depths 2-2-18-2, window 8, 256."""
    return SwinTransformerV2(**{**_v2("b", 256, 8, _DROP_PATH_1K["b"]), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_t_w16(**kwargs) -> SwinTransformerV2:
    """Swin V2-T with window 16 at 256."""
    return SwinTransformerV2(**{**_v2("t", 256, 16, _DROP_PATH_1K["t"]), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_s_w16(**kwargs) -> SwinTransformerV2:
    """Swin V2-S with window 16 at 256."""
    return SwinTransformerV2(**{**_v2("s", 256, 16, _DROP_PATH_1K["s"]), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_b_w16(**kwargs) -> SwinTransformerV2:
    """Swin V2-B with window 16 at 256."""
    return SwinTransformerV2(**{**_v2("b", 256, 16, _DROP_PATH_1K["b"]), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_b_192_22k(**kwargs) -> SwinTransformerV2:
    """Swin V2-B pre-trained on ImageNet-22K: window 12 at 192, 21841 classes."""
    return SwinTransformerV2(**{**_v2("b", 192, 12, 0.2, num_classes=21841), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_l_192_22k(**kwargs) -> SwinTransformerV2:
    """Swin V2-L pre-trained on ImageNet-22K: window 12 at 192, 21841 classes."""
    return SwinTransformerV2(**{**_v2("l", 192, 12, 0.2, num_classes=21841), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_b_w12to16_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-B fine-tuned from the 22K window-12 192 model to window 16 at 256."""
    return SwinTransformerV2(**{**_v2("b", 256, 16, 0.2, pretrained_window_sizes=_FROM_192), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_b_w12to24_384(**kwargs) -> SwinTransformerV2:
    """Swin V2-B fine-tuned from the 22K window-12 192 model to window 24 at 384."""
    return SwinTransformerV2(**{**_v2("b", 384, 24, 0.2, pretrained_window_sizes=_FROM_192), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_l_w12to16_256(**kwargs) -> SwinTransformerV2:
    """Swin V2-L fine-tuned from the 22K window-12 192 model to window 16 at 256."""
    return SwinTransformerV2(**{**_v2("l", 256, 16, 0.2, pretrained_window_sizes=_FROM_192), **kwargs})


@register_model
@_pyramid_is_official_backbone
def swinv2_l_w12to24_384(**kwargs) -> SwinTransformerV2:
    """Swin V2-L fine-tuned from the 22K window-12 192 model to window 24 at 384."""
    return SwinTransformerV2(**{**_v2("l", 384, 24, 0.2, pretrained_window_sizes=_FROM_192), **kwargs})
