"""Decode heads of mmseg, in its module layout so that its checkpoints load as they are:
:class:`ConvModule` (``conv``, ``bn``, ReLU), :class:`PPM` (the pooling pyramid of PSPNet),
:class:`UPerHead` (UperNet's decoder: PPM on the last map, lateral 1x1 and FPN 3x3
convolutions, a fused 3x3 bottleneck) and :class:`FCNHead` (the auxiliary head).

BatchNorm stands for mmseg's ``SyncBN`` (the official configs'): the same parameters and
buffers, statistics per process unless the model is converted with
``nn.SyncBatchNorm.convert_sync_batchnorm`` (the trainer does so on several GPUs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import resize


class ConvModule(nn.Module):
    """mmcv's ``ConvModule`` with a norm and ReLU: a bias-free convolution, BatchNorm, ReLU,
    initialised as mmcv does (Kaiming normal, fan-out; the norm at 1 and 0).

    Shape: ``(B, C_in, H, W) -> (B, C_out, H, W)`` (``padding = kernel // 2``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


class PPM(nn.ModuleList):
    """The pooling pyramid module: for each scale ``s``, adaptive average pooling to ``s x s``
    and a 1x1 :class:`ConvModule` (``{i}.1``), resized back to the input bilinearly.

    Shape: ``(B, C_in, H, W) -> [(B, channels, H, W)] * len(pool_scales)``.
    """

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int,
                 align_corners: bool = False) -> None:
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels, channels, 1))
                         for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [resize(branch(x), tuple(x.shape[-2:]), self.align_corners) for branch in self]


class _ClassifierMixin:
    """``cls_seg`` of mmseg's ``BaseDecodeHead``: dropout (2-D, per channel), then a 1x1
    convolution with bias, initialised N(0, 0.01)."""

    def _init_classifier(self, channels: int, num_classes: int, dropout: float) -> None:
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else None
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.conv_seg = nn.Conv2d(self.conv_seg.in_channels, num_classes, kernel_size=1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def cls_seg(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout is not None:
            x = self.dropout(x)
        return self.conv_seg(x)


class UPerHead(_ClassifierMixin, nn.Module):
    """UperNet's decode head (mmseg's ``UPerHead``).

    The last map goes through the PPM and a 3x3 ``bottleneck``; every other map through a
    1x1 lateral convolution. Top-down, each level adds the level above, resized to it
    bilinearly; every level but the top then passes a 3x3 FPN convolution. All levels are
    resized to the first one's size, concatenated, fused by a 3x3 ``fpn_bottleneck`` and
    classified.

    Args:
        in_channels: channels of the input maps, finest first.
        channels: the head's width (512 in the official configs).
        num_classes: classes of the classifier.
        pool_scales: the PPM's output sizes.
        dropout: dropout before the classifier.
        align_corners: of the bilinear resizing.

    Shape: ``[(B, C_i, H / s_i, W / s_i)] -> (B, num_classes, H / s_0, W / s_0)``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1, align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners
        top = in_channels[-1]
        self.psp_modules = PPM(pool_scales, top, channels, align_corners)
        self.bottleneck = ConvModule(top + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self._init_classifier(channels, num_classes, dropout)

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        top = inputs[-1]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        laterals.append(self.bottleneck(torch.cat([top, *self.psp_modules(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], tuple(laterals[i - 1].shape[-2:]),
                                                       self.align_corners)
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = tuple(outs[0].shape[-2:])
        outs = [outs[0]] + [resize(x, size, self.align_corners) for x in outs[1:]]
        return self.cls_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))


class FCNHead(_ClassifierMixin, nn.Module):
    """mmseg's ``FCNHead`` without the input concatenation (``concat_input=False``, as the
    official auxiliary head): ``num_convs`` 3x3 :class:`ConvModule` (``convs.{i}``), dropout,
    a 1x1 classifier.

    Shape: ``(B, in_channels, h, w) -> (B, num_classes, h, w)``.
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_convs: int = 1,
                 kernel_size: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"an FCN head needs at least one convolution, got num_convs={num_convs}")
        self.convs = nn.Sequential(*(ConvModule(in_channels if i == 0 else channels, channels, kernel_size)
                                     for i in range(num_convs)))
        self._init_classifier(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls_seg(self.convs(x))
