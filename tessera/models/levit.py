"""LeViT: a Vision Transformer in ConvNet's clothing (Graham et al., 2021).

A fast three-stage transformer built like a ConvNet:

* a **convolutional stem** of four 3x3 stride-2 convolutions with BatchNorm and hard-swish
  (stride 16) instead of a patch embedding;
* **attention biases** instead of position embeddings: every head learns one scalar per
  relative offset ``(|dy|, |dx|)`` between query and key, added to the attention scores;
* **shrink attention** between stages: queries are taken on every second row and column,
  keys and values on the full map, so the resolution halves while the width grows (the block
  has no residual around it; its MLP has one);
* **BatchNorm everywhere**: every linear layer is followed by BatchNorm (foldable into it
  at inference), hard-swish activations, and keys narrower than values (``attn_ratio``);
* a **distillation head** next to the classifier; at inference the two are averaged.

State-dict keys follow timm (``stem.conv{i}.linear/bn``, ``stages.{i}.downsample.attn_downsample``,
``stages.{i}.blocks.{j}.attn.qkv.linear/bn``, ``attn.proj.ln``, ``mlp.ln1/ln2``,
``attention_biases``, ``head.bn/linear``, ``head_dist``), so timm checkpoints load as they
are. The attention biases are made for one resolution (``img_size``); a checkpoint of
another resolution is resized bicubically when it is loaded (``LeViT.adapt_checkpoint``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputShapeError
from ..layers.attention import attend
from ..layers.conv import map_to_tokens
from ..layers.drop import DropPath
from ..layers.helpers import check_input, to_ntuple
from ..registry import register_model
from ..weights.load import LoadReport
from .base import TesseraModel, maybe_checkpoint

__all__ = ["LeViT", "resize_bias_grid"]

ACTIVATIONS = {"hard_swish": nn.Hardswish, "silu": nn.SiLU, "gelu": nn.GELU}


# ---------------------------------------------------------------------------------------
# Linear (or conv) + BatchNorm, and the classifier (BatchNorm + linear)
# ---------------------------------------------------------------------------------------


class ConvNorm(nn.Sequential):
    """A 3x3 stride-2 convolution without bias, then BatchNorm (timm's names: ``linear``,
    ``bn``). Shape: ``(B, C_in, H, W) -> (B, C_out, ceil(H / 2), ceil(W / 2))``."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(OrderedDict(
            linear=nn.Conv2d(in_chans, out_chans, 3, stride=2, padding=1, bias=False),
            bn=nn.BatchNorm2d(out_chans),
        ))


class LinearNorm(nn.Module):
    """A linear layer without bias, then BatchNorm over the channels of every token.

    ``bn_weight_init=0`` makes the layer output zeros at first (used at the end of residual
    branches). Shape: ``(B, N, C_in) -> (B, N, C_out)``.
    """

    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).view_as(x)


class NormLinear(nn.Module):
    """The classifier: BatchNorm, dropout, linear. Shape: ``(B, C) -> (B, num_classes)``."""

    def __init__(self, in_features: int, out_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.drop = nn.Dropout(drop)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(self.bn(x)))


def _classifier(in_features: int, num_classes: int, drop: float = 0.0) -> nn.Module:
    return NormLinear(in_features, num_classes, drop) if num_classes > 0 else nn.Identity()


# ---------------------------------------------------------------------------------------
# Attention with learned biases per relative offset
# ---------------------------------------------------------------------------------------


def offset_index(resolution: tuple[int, int], stride: int = 1) -> torch.Tensor:
    """``(Nq, Nk)`` index into a bias table of ``R0 * R1`` entries per head: for a query at
    ``(y, x)`` (every ``stride``-th row and column of the map) and a key at ``(y', x')``, the
    entry ``|y - y'| * R1 + |x - x'|``. Pairs at the same absolute offset share a bias."""
    r0, r1 = resolution
    k_pos = torch.stack(torch.meshgrid(torch.arange(r0), torch.arange(r1), indexing="ij")).flatten(1)
    q_pos = torch.stack(torch.meshgrid(torch.arange(0, r0, stride), torch.arange(0, r1, stride), indexing="ij")).flatten(1)
    offset = (q_pos[:, :, None] - k_pos[:, None, :]).abs()
    return offset[0] * r1 + offset[1]


class _BiasedAttention(nn.Module):
    """What both LeViT attentions share: keys of ``key_dim`` and values of
    ``attn_ratio * key_dim`` channels per head, the learned biases ``attention_biases``
    ``(h, R0 * R1)`` on a map of ``resolution``, and the output projection (activation, then
    linear + BatchNorm)."""

    def __init__(self, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: tuple[int, int],
                 stride: int, act_layer: type[nn.Module], proj_bn_init: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim**-0.5
        self.resolution = resolution
        self.stride = stride
        self.proj = nn.Sequential(OrderedDict(
            act=act_layer(), ln=LinearNorm(self.val_dim * num_heads, out_dim, bn_weight_init=proj_bn_init),
        ))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution[0] * resolution[1]))
        self.register_buffer("attention_bias_idxs", offset_index(resolution, stride), persistent=False)
        #: use scaled_dot_product_attention (True) or the written-out reference (False)

    def attention_bias(self) -> torch.Tensor:
        """``(h, Nq, Nk)`` biases gathered from the table by relative offset."""
        return self.attention_biases[:, self.attention_bias_idxs]

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k ``(B, h, N, key_dim)``, v ``(B, h, Nk, val_dim)`` -> ``(B, Nq, out_dim)``."""
        x = attend(q, k, v, self.attention_bias(), self.scale, 0.0)
        return self.proj(x.transpose(1, 2).flatten(2))


class LeViTAttention(_BiasedAttention):
    """Self-attention on a map of ``resolution`` with a fused ``qkv`` (per head: q, k, v).

    Shape: ``(B, R0 * R1, C) -> (B, R0 * R1, C)``.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: tuple[int, int],
                 act_layer: type[nn.Module]) -> None:
        super().__init__(dim, key_dim, num_heads, attn_ratio, resolution, 1, act_layer, proj_bn_init=0.0)
        self.qkv = LinearNorm(dim, num_heads * (2 * key_dim + self.val_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, self.num_heads, -1).transpose(1, 2)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=-1)
        return self._attend(q, k, v)


class Subsample(nn.Module):
    """Keep every ``stride``-th row and column of the token map.
    Shape: ``(B, R0 * R1, C) -> (B, ceil(R0 / s) * ceil(R1 / s), C)``."""

    def __init__(self, stride: int, resolution: tuple[int, int]) -> None:
        super().__init__()
        self.stride = stride
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, *self.resolution, c)[:, :: self.stride, :: self.stride]
        return x.reshape(b, -1, c)


class ShrinkAttention(_BiasedAttention):
    """Shrink attention (timm: ``AttentionDownsample``): queries on the subsampled map, keys
    and values on the full map, so the output has a quarter of the tokens (stride 2) and
    ``out_dim`` channels.

    Shape: ``(B, R0 * R1, C_in) -> (B, ceil(R0 / 2) * ceil(R1 / 2), out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 resolution: tuple[int, int], act_layer: type[nn.Module], stride: int = 2) -> None:
        super().__init__(out_dim, key_dim, num_heads, attn_ratio, resolution, stride, act_layer, proj_bn_init=1.0)
        self.kv = LinearNorm(in_dim, num_heads * (key_dim + self.val_dim))
        self.q = nn.Sequential(OrderedDict(
            down=Subsample(stride, resolution), ln=LinearNorm(in_dim, num_heads * key_dim),
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        k, v = self.kv(x).view(b, n, self.num_heads, -1).transpose(1, 2).split([self.key_dim, self.val_dim], dim=-1)
        q = self.q(x).view(b, -1, self.num_heads, self.key_dim).transpose(1, 2)
        return self._attend(q, k, v)


# ---------------------------------------------------------------------------------------
# Blocks and stages
# ---------------------------------------------------------------------------------------


class LeViTMlp(nn.Module):
    """``ln1 (linear + BN) -> act -> drop -> ln2 (linear + BN, zero-initialised scale)``.
    Shape: ``(B, N, C) -> (B, N, C)``."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module], drop: float = 0.0) -> None:
        super().__init__()
        self.ln1 = LinearNorm(dim, hidden_dim)
        self.act = act_layer()
        self.drop = nn.Dropout(drop)
        self.ln2 = LinearNorm(hidden_dim, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.drop(self.act(self.ln1(x))))


class LeViTDownsample(nn.Module):
    """Between stages: shrink attention (no residual: the shape changes), then a residual MLP.
    Shape: ``(B, R0 * R1, C_in) -> (B, ceil(R0 / 2) * ceil(R1 / 2), C_out)``."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, resolution: tuple[int, int],
                 act_layer: type[nn.Module], drop_path: float = 0.0) -> None:
        super().__init__()
        # the paper's shrink block: in_dim / key_dim heads, values 4x the keys, MLP ratio 2
        self.attn_downsample = ShrinkAttention(in_dim, out_dim, key_dim, in_dim // key_dim, 4.0, resolution, act_layer)
        self.mlp = LeViTMlp(out_dim, out_dim * 2, act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_downsample(x)
        return x + self.drop_path(self.mlp(x))


class LeViTBlock(nn.Module):
    """Residual attention and residual MLP (no LayerNorm: the BatchNorms inside normalise).
    Shape: ``(B, R0 * R1, C) -> (B, R0 * R1, C)``."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, mlp_ratio: float,
                 resolution: tuple[int, int], act_layer: type[nn.Module], drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn = LeViTAttention(dim, key_dim, num_heads, attn_ratio, resolution, act_layer)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = LeViTMlp(dim, int(dim * mlp_ratio), act_layer)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(x))
        return x + self.drop_path2(self.mlp(x))


class LeViTStage(nn.Module):
    """An optional downsample (shrink attention + MLP) and ``depth`` blocks at one resolution.
    Shape: ``(B, R0 * R1, C_in) -> (B, R0' * R1', C_out)``."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, depth: int, num_heads: int, attn_ratio: float,
                 mlp_ratio: float, resolution: tuple[int, int], downsample: bool, act_layer: type[nn.Module],
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if downsample:
            self.downsample = LeViTDownsample(in_dim, out_dim, key_dim, resolution, act_layer, drop_path)
            resolution = ((resolution[0] - 1) // 2 + 1, (resolution[1] - 1) // 2 + 1)
        else:
            if in_dim != out_dim:
                raise ValueError(f"a stage without downsample keeps its width; got {in_dim} -> {out_dim}")
            self.downsample = nn.Identity()
        self.resolution = resolution
        self.blocks = nn.Sequential(*[
            LeViTBlock(out_dim, key_dim, num_heads, attn_ratio, mlp_ratio, resolution, act_layer, drop_path)
            for _ in range(depth)
        ])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        for blk in self.blocks:
            x = maybe_checkpoint(blk, x, enabled=self.grad_checkpointing)
        return x


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


class LeViT(TesseraModel):
    """LeViT (timm's keyword names: ``LeViT(**timm_kwargs)`` builds the same model as timm's
    ``Levit``, or ``LevitDistilled`` with ``distilled=True``).

    Args:
        img_size: the input resolution. The attention biases are made for it, so inputs must
            have this size; checkpoints of another resolution are resized at load.
        patch_size: the stride of the convolutional stem, a power of two (16: four convs).
        in_chans: input channels.
        num_classes: classes of the heads; 0 for none.
        embed_dim, depth, num_heads: width, blocks and heads of each stage (tuples).
        key_dim: channels of a query/key head.
        attn_ratio: value channels over key channels in the stages' attention.
        mlp_ratio: MLP hidden width over the stage width.
        act_layer: ``"hard_swish"`` (the paper), ``"silu"`` or ``"gelu"``.
        drop_rate: dropout before the classifier(s).
        drop_path_rate: stochastic depth, the same rate in every block (as timm).
        distilled: add the distillation head ``head_dist``: ``forward`` returns the average
            of the two heads, or both as a tuple in training after
            :meth:`set_distilled_training`.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)`` with ``(H, W) == img_size``;
    ``forward_features`` gives ``(B, N, C)`` with ``N = (H / 64) * (W / 64)`` for 3 stages.
    """

    def __init__(
        self,
        img_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: Sequence[int] = (192,),
        key_dim: int = 64,
        depth: Sequence[int] = (12,),
        num_heads: int | Sequence[int] = (3,),
        attn_ratio: float | Sequence[float] = 2.0,
        mlp_ratio: float | Sequence[float] = 2.0,
        act_layer: str = "hard_swish",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        distilled: bool = False,
    ) -> None:
        super().__init__()
        n = len(embed_dim)
        if len(depth) != n:
            raise ValueError(f"depth {tuple(depth)} and embed_dim {tuple(embed_dim)} differ in length")
        if act_layer not in ACTIVATIONS:
            raise ValueError(f"unknown act_layer {act_layer!r}; expected one of {sorted(ACTIVATIONS)}")
        num_convs = int(math.log2(patch_size)) if patch_size > 1 else 0
        if 2**num_convs != patch_size or num_convs < 1 or embed_dim[0] % 2 ** (num_convs - 1):
            raise ValueError(f"patch_size must be a power of two >= 2 dividing 2 * embed_dim[0]; got {patch_size}")
        act = ACTIVATIONS[act_layer]
        num_heads = to_ntuple(num_heads, n, "num_heads")
        attn_ratio = tuple(float(r) for r in (attn_ratio if isinstance(attn_ratio, Sequence) else [attn_ratio] * n))
        mlp_ratio = tuple(float(r) for r in (mlp_ratio if isinstance(mlp_ratio, Sequence) else [mlp_ratio] * n))
        self.img_size = to_ntuple(img_size, 2, "img_size")
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = embed_dim[-1]
        self.drop_rate = drop_rate
        self.distilled = distilled
        self.distilled_training = False

        # stem: channels double at each stride-2 conv up to embed_dim[0]
        convs: OrderedDict[str, nn.Module] = OrderedDict()
        chans = in_chans
        for i in range(num_convs):
            out = embed_dim[0] // 2 ** (num_convs - 1 - i)
            convs[f"conv{i + 1}"] = ConvNorm(chans, out)
            if i < num_convs - 1:
                convs[f"act{i + 1}"] = act()
            chans = out
        self.stem = nn.Sequential(convs)

        resolution = tuple(s // patch_size for s in self.img_size)
        stages = []
        for i in range(n):
            stage = LeViTStage(
                embed_dim[i - 1] if i > 0 else embed_dim[0], embed_dim[i], key_dim, depth[i], num_heads[i],
                attn_ratio[i], mlp_ratio[i], resolution, downsample=i > 0, act_layer=act, drop_path=drop_path_rate,
            )
            resolution = stage.resolution
            stages.append(stage)
        self.stages = nn.Sequential(*stages)

        self.head = _classifier(self.num_features, num_classes, drop_rate)
        if distilled:
            self.head_dist = _classifier(self.num_features, num_classes)
        self.default_cfg.update(input_size=(in_chans, *self.img_size), crop_pct=0.9)

    # -- heads -------------------------------------------------------------------------------

    def get_classifier(self) -> nn.Module | tuple[nn.Module, nn.Module]:
        return (self.head, self.head_dist) if self.distilled else self.head

    def reset_classifier(self, num_classes: int) -> None:
        """New heads (both, when distilled) for ``num_classes``; 0 removes them."""
        self.num_classes = num_classes
        self.head = _classifier(self.num_features, num_classes, self.drop_rate)
        if self.distilled:
            self.head_dist = _classifier(self.num_features, num_classes)

    def set_distilled_training(self, enable: bool = True) -> None:
        """In training, return ``(class_logits, distillation_logits)`` instead of their mean
        (for a distillation loss)."""
        if enable and not self.distilled:
            raise ValueError("this LeViT has no distillation head; build it with distilled=True")
        self.distilled_training = enable

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
        """The attention biases of a checkpoint made at another resolution are resized to
        this model's grids."""
        own = self.state_dict()
        resized = 0
        for key, value in state_dict.items():
            if not key.endswith("attention_biases") or key not in own or value.shape == own[key].shape:
                continue
            if value.dim() != 2 or value.shape[0] != own[key].shape[0]:
                continue  # another number of heads: left to the shape check, which names it
            state_dict[key] = resize_bias_grid(value, self.get_submodule(key.rsplit(".", 1)[0]).resolution)
            resized += 1
        if resized:
            report.notes.append(f"resized {resized} attention bias grids to img_size {self.img_size}")
        return state_dict

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "attention_biases" in n}

    # -- forward -------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, N, C)``: the tokens of the last stage."""
        check_input(x, rank=4, channels=self.in_chans, layout=f"(B, {self.in_chans}, H, W)")
        if tuple(x.shape[2:]) != self.img_size:
            raise InputShapeError(
                f"expected input of spatial size {self.img_size} (the img_size the attention biases are "
                f"made for), got shape {tuple(x.shape)}; build the model with img_size={tuple(x.shape[2:])}"
            )
        return self.stages(map_to_tokens(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Average over the tokens, then the head(s): ``(B, N, C) -> (B, num_classes)``
        (``(B, C)`` with ``pre_logits``). With the distillation head: the mean of both heads,
        or the pair in training after :meth:`set_distilled_training`."""
        x = x.mean(dim=1)
        if pre_logits:
            return x
        if not self.distilled:
            return self.head(x)
        logits, logits_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2


# ---------------------------------------------------------------------------------------
# Loading at another resolution
# ---------------------------------------------------------------------------------------


def resize_bias_grid(biases: torch.Tensor, new_resolution: tuple[int, int]) -> torch.Tensor:
    """Resize ``(h, S * S)`` biases, a square grid of offsets, to ``(h, R0 * R1)``: bicubic,
    antialiased when shrinking (as timm resizes LeViT-style bias tables)."""
    h, length = biases.shape
    side = math.isqrt(length)
    if side * side != length:
        raise CheckpointError(f"attention biases of {length} offsets are not a square grid; cannot resize them")
    grid = biases.float().view(1, h, side, side)
    grid = F.interpolate(grid, size=new_resolution, mode="bicubic", align_corners=False, antialias=True)
    return grid.reshape(h, -1).to(biases.dtype)




# ---------------------------------------------------------------------------------------
# Registered variants (timm's configurations: 224x224, distillation head, 1000 classes)
# ---------------------------------------------------------------------------------------

_CONFIGS = {
    "128s": dict(embed_dim=(128, 256, 384), key_dim=16, num_heads=(4, 6, 8), depth=(2, 3, 4)),
    "256": dict(embed_dim=(256, 384, 512), key_dim=32, num_heads=(4, 6, 8), depth=(4, 4, 4)),
}


def _levit(size: str, **kwargs) -> LeViT:
    return LeViT(**{**_CONFIGS[size], "distilled": True, **kwargs})


@register_model
def levit_128s(**kwargs) -> LeViT:
    """LeViT-128S: widths 128/256/384, depths 2-3-4 (7.8M parameters)."""
    return _levit("128s", **kwargs)


@register_model
def levit_256(**kwargs) -> LeViT:
    """LeViT-256: widths 256/384/512, depths 4-4-4 (18.9M parameters)."""
    return _levit("256", **kwargs)
