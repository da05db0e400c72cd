"""The official Swin and Swin V2 (microsoft/Swin-Transformer) and Video Swin (mmaction2)
layouts.

tessera's own key names are the official ones, so converting means dropping the derived
buffers (``relative_position_index``, ``attn_mask``, recomputed by the model) and, for
mmaction2, removing the ``backbone.`` prefix and renaming the head. Swin V2's
``relative_coords_table`` is kept: it tells the window and the normalisation the checkpoint
was made with (for inferring the architecture and for the load report); the V2 model drops
it and uses its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

DERIVED_BUFFERS = ("relative_position_index", "attn_mask")


def drop_derived(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state_dict.items() if not k.endswith(DERIVED_BUFFERS)}


DOWNSAMPLE_KEY = re.compile(r"layers\.(\d+)\.downsample\.(.+)")


def downsample_stages(sd: Mapping[str, torch.Tensor]) -> set[int]:
    """The stage indices that hold a ``downsample``: from 0 in the official layout (end of
    stage ``i``), from 1 in timm's (start of stage ``i + 1``)."""
    return {int(m.group(1)) for k in sd if (m := DOWNSAMPLE_KEY.fullmatch(k))}


def is_swin_like(sd: Mapping[str, torch.Tensor]) -> bool:
    return "patch_embed.proj.weight" in sd and any(k.startswith("layers.") for k in sd)


def has_timm_layout(sd: Mapping[str, torch.Tensor]) -> bool:
    """timm moved the downsample to the start of the next stage and the head to ``head.fc``."""
    stages = downsample_stages(sd)
    return "head.fc.weight" in sd or (bool(stages) and min(stages) > 0)


def is_official(sd: Mapping[str, torch.Tensor]) -> bool:
    return is_swin_like(sd) and not has_timm_layout(sd)


def convert_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return drop_derived(sd)


def is_mmaction(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("backbone.patch_embed.") for k in sd)


def convert_mmaction(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # mmaction2 1.x keeps one norm per output stage (norm0..norm3); the last is the final norm
    stage_norms = sorted({int(m.group(1)) for k in sd if (m := re.match(r"backbone\.norm(\d+)\.", k))})
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            k = k[len("backbone.") :]
            if (m := re.match(r"norm(\d+)\.", k)) is not None:
                if int(m.group(1)) != stage_norms[-1]:
                    continue
                k = "norm." + k[m.end() :]
        elif k.startswith("cls_head.fc_cls."):
            k = "head." + k[len("cls_head.fc_cls.") :]
        else:
            continue
        out[k] = v
    return drop_derived(out)
