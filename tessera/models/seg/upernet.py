"""UperNet (Xiao et al., 2018) with a Swin backbone, as the official Swin segmentation code
builds it (SwinTransformer/Swin-Transformer-Semantic-Segmentation,
``configs/_base_/models/upernet_swin.py``, on mmseg 0.11).

* ``backbone``: the official segmentation backbone, i.e. tessera's feature pyramid of the
  Swin (``create_model(name, features_only=True)``): every stage partitions its map into
  windows whatever its size, and each output has a fresh LayerNorm ``norm{i}``.
* ``decode_head``: :class:`~tessera.models.seg.heads.UPerHead` on the four maps, 512
  channels, PPM scales (1, 2, 3, 6), dropout 0.1.
* ``auxiliary_head``: :class:`~tessera.models.seg.heads.FCNHead` on stage 3, 256 channels,
  one 3x3 convolution, dropout 0.1, loss weight 0.4 (used in training only).

State-dict keys are mmseg's (``backbone.*``, ``decode_head.*``, ``auxiliary_head.*``,
ConvModules as ``.conv`` / ``.bn``), so its checkpoints load with no renaming but the index
buffers. A classification checkpoint initialises the backbone (see
:meth:`UperNet.adapt_checkpoint`).

Any registered model with a feature pyramid can be the backbone (``backbone="pvt_v2_b2"``,
:func:`upernet_for`). The Swin V2 variants (``upernet_swin_v2_t/s/b``) put the same heads on
the Swin V2 pyramid (fresh ``norm{i}``, every stage partitioned), with the V2 classifiers'
window 8 at 256 as their initialisation; no official V2 UperNet weights are published.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ...registry import create_model, register_model
from ..base import IMAGENET_MEAN, IMAGENET_STD
from .base import SegmentationModel
from .heads import FCNHead, UPerHead


class UperNet(SegmentationModel):
    """A feature-pyramid backbone, UperNet's decode head and an FCN auxiliary head.

    Args:
        backbone: a registered model with a feature pyramid (``swin_t``, ``swin_s``, ...).
        num_classes: classes (150 for ADE20K).
        backbone_args: constructor arguments of the backbone (``drop_path_rate``, ...).
        in_chans: input channels.
        img_size: the training crop (the input size the model is exported at by default).
        channels: width of the decode head.
        pool_scales: the PPM's scales.
        dropout: dropout before both classifiers.
        aux_index: the backbone output the auxiliary head reads (``None``: no auxiliary head).
        aux_channels: width of the auxiliary head.
        aux_weight: its weight in the training loss (the decode head's is 1).
        align_corners: of every bilinear resizing.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes, H, W)``; the decode head works at 1/4
    of the input (the backbone's first stride).
    """

    def __init__(
        self,
        backbone: str = "swin_t",
        num_classes: int = 150,
        backbone_args: dict[str, Any] | None = None,
        in_chans: int = 3,
        img_size: int | Sequence[int] = 512,
        channels: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
        aux_index: int | None = 2,
        aux_channels: int = 256,
        aux_weight: float = 0.4,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.align_corners = align_corners
        self.backbone_name = backbone
        args = {"num_classes": 0, "in_chans": in_chans, **(backbone_args or {})}
        self.backbone = create_model(backbone, features_only=True, **args)
        widths = self.backbone.feature_info.channels()
        self.min_input_size = max(getattr(self.backbone.model, "patch_size", (1,))[-2:])
        self.num_features = widths[-1]
        self.decode_head = UPerHead(widths, channels, num_classes, pool_scales, dropout, align_corners)
        self.aux_index = aux_index
        self.auxiliary_head = None
        if aux_index is not None:
            self.auxiliary_head = FCNHead(widths[aux_index], aux_channels, num_classes, num_convs=1, dropout=dropout)
        self.loss_weights = {"out": 1.0, "aux": aux_weight} if aux_index is not None else {"out": 1.0}
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.default_cfg.update(input_size=(in_chans, *size), mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's normalised maps ``[(B, C_i, H / s_i, W / s_i)]``."""
        return self.backbone(x)

    def decode(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"out": self.decode_head(features)}
        if self.training and self.auxiliary_head is not None:
            out["aux"] = self.auxiliary_head(features[self.aux_index])
        return out

    def get_classifier(self) -> list[nn.Module]:
        heads = [self.decode_head.conv_seg]
        return heads + ([self.auxiliary_head.conv_seg] if self.auxiliary_head is not None else [])

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        for head in (self.decode_head, self.auxiliary_head):
            if head is not None:
                head.reset_classifier(num_classes)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | set(self.backbone.no_weight_decay())

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report) -> dict[str, torch.Tensor]:
        """Fit weights to the model before loading.

        * mmseg's layout (``backbone.*``, heads): the backbone part is adapted by the
          backbone (relative-position tables of another window resized bicubically, as the
          official loader ``mmcv_custom.load_checkpoint`` does).
        * a classifier's or a backbone's names (no ``backbone.`` prefix): they initialise the
          backbone, as the official ``init_weights(pretrained)`` does; the classifier's final
          ``norm`` and ``head`` stay unused, the heads and the output norms ``norm{i}`` keep
          their initialisation (reported as missing).
        """
        prefix = "backbone."
        own = ("backbone.", "decode_head.", "auxiliary_head.")
        if any(k.startswith(own) for k in state_dict):
            backbone = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            rest = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
        else:
            backbone, rest = dict(state_dict), {}
            report.notes.append(f"weights without the {prefix!r} prefix: they initialise the backbone "
                                f"(the heads keep their initialisation)")
        backbone = self.backbone.adapt_checkpoint(backbone, report)
        return {**{prefix + k: v for k, v in backbone.items()}, **rest}


# ---------------------------------------------------------------------------------------
# Registered variants: the official ADE20K models (150 classes, drop path 0.3)
# ---------------------------------------------------------------------------------------


def upernet_for(backbone: str, drop_path_rate: float = 0.3, **kwargs) -> UperNet:
    """UperNet with the official settings on the pyramid of ``backbone`` (a registered
    name); ``kwargs`` override :class:`UperNet`'s arguments, ``backbone_args`` are merged."""
    kwargs["backbone_args"] = {"drop_path_rate": drop_path_rate, **(kwargs.get("backbone_args") or {})}
    return UperNet(backbone=backbone, **kwargs)


@register_model
def upernet_swin_t(**kwargs) -> UperNet:
    """UperNet on Swin-T (ADE20K: 44.51 mIoU single scale, 45.81 multi-scale + flip)."""
    return upernet_for(**{"backbone": "swin_t", **kwargs})


@register_model
def upernet_swin_s(**kwargs) -> UperNet:
    """UperNet on Swin-S (ADE20K: 47.64 / 49.47 mIoU)."""
    return upernet_for(**{"backbone": "swin_s", **kwargs})


@register_model
def upernet_swin_b(**kwargs) -> UperNet:
    """UperNet on Swin-B (ADE20K: 48.13 / 49.72 mIoU)."""
    return upernet_for(**{"backbone": "swin_b", **kwargs})


@register_model
def upernet_swin_v2_t(**kwargs) -> UperNet:
    """UperNet on Swin V2-T (window 8, as the 256 ImageNet-1K classifier)."""
    return upernet_for(**{"backbone": "swinv2_t", **kwargs})


@register_model
def upernet_swin_v2_s(**kwargs) -> UperNet:
    """UperNet on Swin V2-S (window 8, as the 256 ImageNet-1K classifier)."""
    return upernet_for(**{"backbone": "swinv2_s", **kwargs})


@register_model
def upernet_swin_v2_b(**kwargs) -> UperNet:
    """UperNet on Swin V2-B (window 8, as the 256 ImageNet-1K classifier)."""
    return upernet_for(**{"backbone": "swinv2_b", **kwargs})
