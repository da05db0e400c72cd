"""Swin-Unet (Cao et al., 2021) as HuCaoFighting/Swin-Unet builds it
(``networks/swin_transformer_unet_skip_expand_decoder_sys.py``, ``SwinTransformerSys`` with
``final_upsample="expand_first"``), on tessera's Swin stages.

* Encoder: the Swin classifier's patch embedding and stages (windows clamped at
  construction for ``img_size``, as the official classifier), and its final ``norm`` on the
  bottleneck. The input of every stage is kept as a skip connection.
* Decoder, from the bottleneck up: a patch expanding (``layers_up.0``); then for each finer
  level, the skip concatenated on channels and projected back by ``Linear(2C -> C)``
  (``concat_back_dim.{i}``), a stage of Swin blocks with the encoder stage's depth, heads and
  window, and (but the last) a patch expanding at its end (``layers_up.{i}.upsample``).
* Patch expanding: ``Linear(C -> 2C, no bias)``, each token's channels rearranged into a 2x2
  block of ``C / 2`` channels (``(p1 p2 c)`` order), ``LayerNorm(C / 2)``.
* Head: ``norm_up``, a 4x expanding (``Linear(C -> 16C, no bias)``, 4x4 blocks of C
  channels, ``LayerNorm(C)``) and a bias-free 1x1 convolution to the classes (``output``).

State-dict keys are the official ones, so its checkpoints (``swin_unet.*`` through the
``SwinUnet`` wrapper) load as they are; an ImageNet Swin initialises the encoder and the
decoder stages as the official ``load_from`` does (:meth:`SwinUnet.adapt_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...errors import InputShapeError
from ...layers.drop import drop_path_rates
from ...layers.helpers import autocast_enabled, init_linear_trunc_normal, to_ntuple
from ...layers.patch_embed import PatchEmbed
from ...layers.pos_embed import resize_pos_embed
from ...layers.windows import size_rule
from ...registry import register_model
from ..base import IMAGENET_MEAN, IMAGENET_STD
from ..swin import SwinStage
from .base import SegmentationModel


class PatchExpand(nn.Module):
    """Upsample tokens by ``scale`` on both axes: ``Linear(C -> scale**2 * C_out)`` without
    bias, each token's channels laid out as a ``scale x scale`` block of ``C_out`` channels
    (channel index ``(p1 * scale + p2) * C_out + c``), then ``LayerNorm(C_out)``.

    ``scale=2`` is Swin-Unet's ``PatchExpand`` (``C_out = C / 2``), ``scale=4`` its
    ``FinalPatchExpand_X4`` (``C_out = C``).

    Shape: ``(B, H, W, C) -> (B, scale * H, scale * W, C_out)``.
    """

    def __init__(self, dim: int, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.out_dim = dim // 2 if scale == 2 else dim
        self.expand = nn.Linear(dim, scale * scale * self.out_dim, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, self.out_dim)
        return self.norm(x)


class SwinUpStage(SwinStage):
    """A decoder stage: Swin blocks, then (optionally) a :class:`PatchExpand` at its end
    (``upsample``) instead of a patch merging.

    Shape: ``(B, H, W, C) -> (B, 2H, 2W, C / 2)`` with ``upsample``, else unchanged.
    """

    def __init__(self, dim: int, *args, upsample: bool = False, **kwargs) -> None:
        super().__init__(dim, *args, downsample=False, **kwargs)
        self.upsample = PatchExpand(dim) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return self.upsample(x) if self.upsample is not None else x


class SwinUnet(SegmentationModel):
    """Swin-Unet (see the module docstring).

    Args (the official names):
        img_size: the input size the windows are planned for (the official model takes
            only this size; tessera takes any multiple of ``patch_size * 2**(stages - 1)``,
            with the same windows, clamped at run time where a map is smaller).
        patch_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio,
        qkv_bias, qk_scale, drop_rate, attn_drop_rate, drop_path_rate, ape, patch_norm,
        use_checkpoint: as :class:`~tessera.models.SwinTransformer`; the decoder stages reuse
            the depth, heads and drop-path rates of their encoder stage.
        num_classes: output classes.

    A one-channel input is repeated to three channels when ``in_chans`` is 3, as the
    official ``SwinUnet`` wrapper does.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes, H, W)`` (with the official patch of 4; see
    :meth:`forward`).
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 9,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.img_size = to_ntuple(img_size, 2, "img_size")
        self.patch_size = to_ntuple(patch_size, 2, "patch_size")
        self.min_input_size = max(self.patch_size)
        self.num_layers = n = len(depths)
        self.embed_dim = embed_dim
        self.num_features = embed_dim * 2 ** (n - 1)
        self.ape = ape
        grid = [s // p for s, p in zip(self.img_size, self.patch_size)]
        self.patch_grid = tuple(grid)

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, embed_dim, norm=patch_norm)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, sum(depths))

        def stage(cls, i: int, **extra) -> SwinStage:
            # the official classifier's rule, which Swin-Unet's blocks follow: a map no larger
            # than the window at img_size gets a window of its size and no shift
            window, shift = size_rule("official").stage_window([g // 2**i for g in grid], (window_size,) * 2)
            return cls(dim=embed_dim * 2**i, depth=depths[i], num_heads=num_heads[i], window_size=window,
                       shift_size=shift, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                       attn_drop=attn_drop_rate, drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])], **extra)

        self.layers = nn.ModuleList(stage(SwinStage, i, downsample=i < n - 1) for i in range(n))
        # decoder level j works at the resolution of encoder stage n - 1 - j
        self.layers_up = nn.ModuleList([PatchExpand(self.num_features)])
        self.concat_back_dim = nn.ModuleList([nn.Identity()])
        for j in range(1, n):
            i = n - 1 - j
            self.layers_up.append(stage(SwinUpStage, i, upsample=j < n - 1))
            self.concat_back_dim.append(nn.Linear(2 * embed_dim * 2**i, embed_dim * 2**i))
        self.norm = nn.LayerNorm(self.num_features)
        self.norm_up = nn.LayerNorm(embed_dim)
        self.up = PatchExpand(embed_dim, scale=4)
        self.output = nn.Conv2d(embed_dim, num_classes, kernel_size=1, bias=False)
        self.apply(init_linear_trunc_normal)
        self.set_grad_checkpointing(use_checkpoint)
        self.default_cfg.update(input_size=(in_chans, *self.img_size), mean=IMAGENET_MEAN, std=IMAGENET_STD)

    # -- the forward pass ----------------------------------------------------------------------

    def _check(self, x: torch.Tensor) -> None:
        super()._check(x)
        multiple = self.patch_size[0] * 2 ** (self.num_layers - 1)
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise InputShapeError(f"expected H and W divisible by {multiple} (patch x 2**(stages - 1): Swin-Unet's "
                                  f"skip connections must align), got input of shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, num_classes, 4 H / patch, 4 W / patch)``: the input's
        size with the official patch of 4 (the final expanding is 4x whatever the patch, as
        in the official code)."""
        if x.dim() == 4 and x.shape[1] == 1 and self.in_chans == 3:
            x = x.repeat(1, 3, 1, 1)  # the official wrapper's grey-scale input
        self._check(x)
        return self.decode(self.forward_features(x))["out"]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The normalised bottleneck ``(B, h, w, C * 2**(n-1))`` and the skips: the input of
        every encoder stage, channels last."""
        x = self.patch_embed(x)
        if autocast_enabled(x.device):
            x = x.float()  # the residual stream in fp32 under autocast (see SwinTransformer)
        if self.ape:
            grid = tuple(x.shape[1:-1])
            x = x + resize_pos_embed(self.absolute_pos_embed, self.patch_grid, grid).view(1, *grid, -1)
        x = self.pos_drop(x)
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)
        return self.norm(x), skips

    def decode(self, features: tuple[torch.Tensor, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        x, skips = features
        n = self.num_layers
        x = self.layers_up[0](x)
        for j in range(1, n):
            x = self.concat_back_dim[j](torch.cat([x, skips[n - 1 - j]], dim=-1))
            x = self.layers_up[j](x)
        x = self.up(self.norm_up(x))  # (B, H, W, C)
        return {"out": self.output(x.movedim(-1, 1))}

    # -- head, weights ---------------------------------------------------------------------------

    def get_classifier(self) -> nn.Module:
        return self.output

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.output = nn.Conv2d(self.embed_dim, num_classes, kernel_size=1, bias=False)

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report) -> dict[str, torch.Tensor]:
        """A Swin-Unet checkpoint loads as it is. A classifier's (an ImageNet Swin, no
        ``layers_up``) initialises the model as the official ``load_from`` does: the encoder
        from the encoder stages and the final norm, and every decoder stage's blocks from the
        encoder stage at its resolution (``layers.{i}`` -> ``layers_up.{n-1-i}``). As there,
        tensors whose shape differs from the model's are dropped (they keep their
        initialisation; reported as missing), and the classifier head is unused."""
        if any(k.startswith("layers_up.") for k in state_dict):
            return state_dict
        n = self.num_layers
        own = self.state_dict()
        out = dict(state_dict)
        for key, value in state_dict.items():
            if key.startswith("layers.") and ".blocks." in key:
                stage, rest = key[len("layers.") :].split(".", 1)
                copy = f"layers_up.{n - 1 - int(stage)}.{rest}"
                if copy in own:
                    out[copy] = value
        dropped = sorted(k for k, v in out.items() if k in own and v.shape != own[k].shape)
        for key in dropped:
            del out[key]
        report.notes.append("a classification checkpoint: the encoder and the decoder stages (copies of the encoder "
                            "stages at their resolution) start from it, as Swin-Unet's load_from does")
        if dropped:
            report.notes.append(f"left at their initialisation, as their shape differs (as load_from does): "
                                f"{', '.join(dropped[:6])}" + (f", ... ({len(dropped) - 6} more)" if len(dropped) > 6 else ""))
        return out


@register_model
def swin_unet_t(**kwargs) -> SwinUnet:
    """Swin-Unet with the official Swin-T encoder settings: C96, depths 2-2-2-2, heads
    3-6-12-24, window 7, 224, drop path 0.2, 9 classes (Synapse)."""
    return SwinUnet(**{"img_size": 224, "embed_dim": 96, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24),
                       "window_size": 7, "drop_path_rate": 0.2, "num_classes": 9, **kwargs})
