"""Hugging Face transformers' PVT v2 (``PvtV2ForImageClassification``, ``PvtV2Model``), as
saved in hub directories such as ``OpenGVLab/pvt_v2_b0``, converted to tessera's names
(timm's).

The hub names: ``pvt_v2.encoder.layers.{i}.patch_embedding.proj`` / ``.layer_norm`` (the stem
for stage 0, the downsampling of stage ``i`` after it), ``...layers.{i}.blocks.{j}`` with
``layer_norm_1/2``, separate ``attention.query``, ``key`` and ``value`` (``key`` and ``value``
concatenated here into ``kv``), ``attention.proj``, ``attention.spatial_reduction`` /
``.layer_norm``, ``mlp.dense1``, ``mlp.dwconv.dwconv``, ``mlp.dense2``, the stage's
``layer_norm``, and ``classifier``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ...errors import CheckpointError
from . import Format, register_format

_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_BLOCK_RENAMES = [
    ("layer_norm_1.", "norm1."),
    ("layer_norm_2.", "norm2."),
    ("attention.query.", "attn.q."),
    ("attention.proj.", "attn.proj."),
    ("attention.spatial_reduction.", "attn.sr."),
    ("attention.layer_norm.", "attn.norm."),
    ("mlp.dense1.", "mlp.fc1."),
    ("mlp.dwconv.dwconv.", "mlp.dwconv."),
    ("mlp.dense2.", "mlp.fc2."),
]


def is_hf_pvt_v2(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(re.match(r"(pvt_v2\.)?encoder\.layers\.\d+\.patch_embedding\.proj\.weight$", k) for k in sd)


def convert_hf_pvt_v2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    kv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        k = key.removeprefix("pvt_v2.")
        if (m := _LAYER.fullmatch(k)) is not None:
            stage, rest = int(m.group(1)), m.group(2)
            if rest.startswith("patch_embedding."):
                rest = rest[len("patch_embedding.") :].replace("layer_norm.", "norm.")
                k = f"patch_embed.{rest}" if stage == 0 else f"stages.{stage}.downsample.{rest}"
            elif rest.startswith("layer_norm."):
                k = f"stages.{stage}.norm." + rest[len("layer_norm.") :]
            elif (b := re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)) is not None:
                block, name = f"stages.{stage}.blocks.{b.group(1)}", b.group(2)
                if (kv_match := re.fullmatch(r"attention\.(key|value)\.(weight|bias)", name)) is not None:
                    kv.setdefault((block, kv_match.group(2)), {})[kv_match.group(1)] = value
                    continue
                for old, new in _BLOCK_RENAMES:
                    if name.startswith(old):
                        name = new + name[len(old) :]
                        break
                k = f"{block}.{name}"
        elif k.startswith("classifier."):
            k = "head." + k[len("classifier.") :]
        out[k] = value
    for (block, kind), parts in kv.items():
        if set(parts) != {"key", "value"}:
            raise CheckpointError(f"{block}: the attention has {', '.join(sorted(parts))} but not both key and value")
        out[f"{block}.attn.kv.{kind}"] = torch.cat([parts["key"], parts["value"]])
    return out


register_format(Format("hf_pvt_v2", is_hf_pvt_v2, convert_hf_pvt_v2,
                       "Hugging Face PvtV2ForImageClassification / PvtV2Model (OpenGVLab/pvt_v2_*)"))


def pvt_v2_args(config: Mapping) -> dict:
    """tessera PVT v2 constructor arguments from a transformers ``PvtV2Config``
    (``config.json``); ``num_classes`` is left to the weights."""
    if list(config.get("patch_sizes", [7, 3, 3, 3])) != [7, 3, 3, 3] or \
            list(config.get("strides", [4, 2, 2, 2])) != [4, 2, 2, 2]:
        raise ValueError("config.json: patch sizes or strides other than PVT v2's (7/4, then 3/2)")
    return {
        "in_chans": config.get("num_channels", 3),
        "depths": tuple(config.get("depths", (2, 2, 2, 2))),
        "embed_dims": tuple(config.get("hidden_sizes", (32, 64, 160, 256))),
        "num_heads": tuple(config.get("num_attention_heads", (1, 2, 5, 8))),
        "sr_ratios": tuple(config.get("sr_ratios", (8, 4, 2, 1))),
        "mlp_ratios": tuple(float(r) for r in config.get("mlp_ratios", (8, 8, 4, 4))),
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "linear": bool(config.get("linear_attention", False)),
        "drop_path_rate": float(config.get("drop_path_rate", 0.0)),
        "norm_eps": float(config.get("layer_norm_eps", 1e-6)),
    }
