"""timm's Swin and Swin V2 layout (timm >= 0.9).

timm keeps the official names except in two places: the patch merging sits at the start of
the next stage (``layers.{i+1}.downsample``, where the official code has
``layers.{i}.downsample`` at the end of stage ``i``) and the classifier is ``head.fc``.
Index, mask and (V2) coordinate-table buffers are not saved (they are non-persistent in
timm).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from . import Format, register_format
from .official import DOWNSAMPLE_KEY, drop_derived, has_timm_layout, is_swin_like


def is_timm_swin(sd: Mapping[str, torch.Tensor]) -> bool:
    return is_swin_like(sd) and has_timm_layout(sd)


def convert_timm_swin(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in drop_derived(sd).items():
        if (m := DOWNSAMPLE_KEY.fullmatch(k)) is not None:
            k = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        elif k.startswith("head.fc."):
            k = "head." + k[len("head.fc.") :]
        elif k == "absolute_pos_embed" and v.dim() == 4:  # (1, H, W, C) -> (1, H * W, C)
            v = v.flatten(1, 2)
        out[k] = v
    return out


# timm clamps windows per axis at construction and rolls before padding: its size rule
register_format(Format("timm_swin", is_timm_swin, convert_timm_swin,
                       "timm Swin and Swin V2 (patch merging at the start of the next stage, head.fc)", size_rule="timm"))
