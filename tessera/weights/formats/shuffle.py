"""Official Shuffle Transformer checkpoints (mulinmeng/Shuffle-Transformer), converted to
tessera's names.

The official model numbers stages from 1 (``stage{i}``), keeps a stage's blocks as pairs
(``layers.{k}.0`` regular, ``layers.{k}.1`` shuffled), calls the stem ``to_token`` and the
merging ``patch_partition``, and writes the token-wise projections as 1x1 convolutions
(``attn.to_qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``, weights ``(out, in, 1, 1)``).
tessera has ``patch_embed``, ``stages.{i-1}.downsample``, ``stages.{i-1}.blocks.{2k+t}``
and linear layers (``attn.qkv``, weights ``(out, in)``); the channel order is the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .official import drop_derived

_POINTWISE = re.compile(r"\.(attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.weight$")


def is_official_shuffle(sd: Mapping[str, torch.Tensor]) -> bool:
    return "to_token.conv1.0.weight" in sd and any(k.startswith("stage1.layers.") for k in sd)


def convert_official_shuffle(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in drop_derived(sd).items():
        if k.startswith("to_token."):
            k = "patch_embed." + k[len("to_token.") :]
        elif m := re.match(r"stage(\d+)\.patch_partition\.(.*)", k):
            k = f"stages.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        elif m := re.match(r"stage(\d+)\.layers\.(\d+)\.([01])\.(.*)", k):
            k = f"stages.{int(m.group(1)) - 1}.blocks.{2 * int(m.group(2)) + int(m.group(3))}.{m.group(4)}"
        k = k.replace(".attn.to_qkv.", ".attn.qkv.")
        if _POINTWISE.search(k) and v.dim() == 4:
            v = v.flatten(1)
        out[k] = v
    return out
