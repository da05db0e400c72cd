"""The official PVT v2 release layout (whai362/PVT), converted to timm's names, which are
tessera's.

The release numbers stages from 1 and keeps one module per stage and kind:
``patch_embed{i}`` (``patch_embed1`` is the stem, the others start stages 2-4),
``block{i}.{j}``, ``norm{i}``, and wraps the feed-forward's depthwise convolution one level
deeper (``mlp.dwconv.dwconv``). tessera (as timm) has ``patch_embed``,
``stages.{i-1}.downsample``, ``stages.{i-1}.blocks.{j}``, ``stages.{i-1}.norm`` and
``mlp.dwconv``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch


def is_official_pvt_v2(sd: Mapping[str, torch.Tensor]) -> bool:
    return "block1.0.mlp.dwconv.dwconv.weight" in sd


def convert_official_pvt_v2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("patch_embed1."):
            k = "patch_embed." + k[len("patch_embed1.") :]
        elif m := re.match(r"patch_embed(\d+)\.(.*)", k):
            k = f"stages.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        elif m := re.match(r"block(\d+)\.(\d+)\.(.*)", k):
            k = f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.{m.group(3)}"
        elif m := re.match(r"norm(\d+)\.(.*)", k):
            k = f"stages.{int(m.group(1)) - 1}.norm.{m.group(2)}"
        out[k.replace("mlp.dwconv.dwconv.", "mlp.dwconv.")] = v
    return out
