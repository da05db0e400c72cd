"""Segmentation checkpoints: mmseg's (the official Swin UperNet models) and Swin-Unet's.

* ``mmseg``: ``state_dict`` with ``backbone.*`` (the official segmentation backbone: the
  classifier's names without ``norm``/``head``, plus ``norm{i}``), ``decode_head.*`` and
  ``auxiliary_head.*`` (ConvModules as ``.conv`` / ``.bn``). tessera's UperNet has the same
  names; the index buffers are dropped and an absolute position embedding, stored as a map
  ``(1, C, H, W)`` by the segmentation backbone, becomes tokens ``(1, H * W, C)``.
* ``swin_unet``: HuCaoFighting/Swin-Unet's trainer saves the ``SwinUnet`` wrapper, so every
  key starts with ``swin_unet.`` (``module.swin_unet.`` under DataParallel, removed when the
  file is read); tessera's Swin-Unet has the names after it. Index and mask buffers are
  dropped.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import Format, register_format
from .official import drop_derived

SEG_HEADS = ("decode_head.", "auxiliary_head.")
APE = "backbone.absolute_pos_embed"


def is_mmseg(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(SEG_HEADS) for k in sd) and any(k.startswith("backbone.") for k in sd)


def convert_mmseg(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = drop_derived(sd)
    ape = out.get(APE)
    if ape is not None and ape.dim() == 4:  # (1, C, H, W) -> (1, H * W, C)
        out[APE] = ape.flatten(2).transpose(1, 2).contiguous()
    return out


def is_swin_unet(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(("swin_unet.", "layers_up.")) for k in sd)


def convert_swin_unet(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return drop_derived({k.removeprefix("swin_unet."): v for k, v in sd.items()})


register_format(Format("mmseg", is_mmseg, convert_mmseg,
                       "mmseg segmentors (backbone.*, decode_head.*, auxiliary_head.*): the official Swin UperNet"),
                before="mmaction")
register_format(Format("swin_unet", is_swin_unet, convert_swin_unet,
                       "HuCaoFighting/Swin-Unet (swin_unet.* keys of its SwinUnet wrapper)"), before="official")
