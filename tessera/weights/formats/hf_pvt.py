"""Hugging Face transformers' PVT v1 (``PvtForImageClassification``, ``PvtModel``), as saved
in hub directories such as ``Zetatech/pvt-tiny-224``, converted to tessera's names (the
official whai362/PVT ones).

The hub names count stages from 0 where the official code counts from 1:
``pvt.encoder.patch_embeddings.{i}.projection`` / ``.layer_norm`` / ``.position_embeddings``
(and ``.cls_token`` in the last stage), ``pvt.encoder.block.{i}.{j}`` with ``layer_norm_1/2``,
separate ``attention.self.query``, ``key`` and ``value`` (``key`` and ``value`` are
concatenated here into the official ``kv``), ``attention.self.sequence_reduction`` /
``.layer_norm`` for the spatial reduction, ``attention.output.dense``, ``mlp.dense1/2``; then
``pvt.encoder.layer_norm`` and ``classifier``. ``PvtModel`` saves the same without ``pvt.``.

transformers uses ``config.layer_norm_eps`` (1e-6) for every LayerNorm, where the official
code keeps 1e-5 in the patch embeddings and reductions: :func:`pvt_args` builds the model
with both epsilons from the config, which gives transformers' outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ...errors import CheckpointError
from . import Format, register_format

_EMBED = re.compile(r"encoder\.patch_embeddings\.(\d+)\.(.+)")
_BLOCK = re.compile(r"encoder\.block\.(\d+)\.(\d+)\.(.+)")
_KV = re.compile(r"(.+)\.attention\.self\.(key|value)\.(weight|bias)")
_BLOCK_RENAMES = [
    ("layer_norm_1.", "norm1."),
    ("layer_norm_2.", "norm2."),
    ("attention.self.query.", "attn.q."),
    ("attention.self.sequence_reduction.", "attn.sr."),
    ("attention.self.layer_norm.", "attn.norm."),
    ("attention.output.dense.", "attn.proj."),
    ("mlp.dense1.", "mlp.fc1."),
    ("mlp.dense2.", "mlp.fc2."),
]


def is_hf_pvt(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(re.match(r"(pvt\.)?encoder\.block\.\d+\.\d+\.attention\.self\.sequence_reduction\.", k)
               or re.match(r"(pvt\.)?encoder\.patch_embeddings\.\d+\.position_embeddings$", k) for k in sd)


def convert_hf_pvt(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    kv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        k = key[len("pvt.") :] if key.startswith("pvt.") else key
        if (m := _EMBED.fullmatch(k)) is not None:
            stage, rest = int(m.group(1)) + 1, m.group(2)
            if rest == "position_embeddings":
                k = f"pos_embed{stage}"
            elif rest == "cls_token":
                k = "cls_token"
            else:
                k = f"patch_embed{stage}." + rest.replace("projection.", "proj.").replace("layer_norm.", "norm.")
        elif (m := _BLOCK.fullmatch(k)) is not None:
            block, rest = f"block{int(m.group(1)) + 1}.{m.group(2)}", m.group(3)
            if (kv_match := _KV.fullmatch("x." + rest)) is not None:
                kv.setdefault((block, kv_match.group(3)), {})[kv_match.group(2)] = value
                continue
            for old, new in _BLOCK_RENAMES:
                if rest.startswith(old):
                    rest = new + rest[len(old) :]
                    break
            k = f"{block}.{rest}"
        elif k.startswith("encoder.layer_norm."):
            k = "norm." + k[len("encoder.layer_norm.") :]
        elif k.startswith("classifier."):
            k = "head." + k[len("classifier.") :]
        out[k] = value
    for (block, kind), parts in kv.items():
        if set(parts) != {"key", "value"}:
            raise CheckpointError(f"{block}: the attention has {', '.join(sorted(parts))} but not both key and value")
        out[f"{block}.attn.kv.{kind}"] = torch.cat([parts["key"], parts["value"]])
    return out


def pvt_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """tessera PVT v1 constructor arguments from a transformers ``PvtConfig``
    (``config.json``); ``num_classes`` is left to the weights."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"config.json: hidden_act {config['hidden_act']!r}; tessera's PVT uses GELU")
    patch_sizes = list(config.get("patch_sizes", [4, 2, 2, 2]))
    if patch_sizes[1:] != [2] * (len(patch_sizes) - 1) or list(config.get("strides", patch_sizes)) != patch_sizes:
        raise ValueError(f"config.json: patch_sizes {patch_sizes}; tessera's PVT merges 2x2 tokens after the "
                         f"first stage")
    eps = float(config.get("layer_norm_eps", 1e-6))
    return {
        "img_size": config.get("image_size", 224),
        "patch_size": patch_sizes[0],
        "in_chans": config.get("num_channels", 3),
        "embed_dims": tuple(config.get("hidden_sizes", (64, 128, 320, 512))),
        "num_heads": tuple(config.get("num_attention_heads", (1, 2, 5, 8))),
        "mlp_ratios": tuple(float(r) for r in config.get("mlp_ratios", (8, 8, 4, 4))),
        "depths": tuple(config.get("depths", (2, 2, 2, 2))),
        "sr_ratios": tuple(config.get("sequence_reduction_ratios", (8, 4, 2, 1))),
        "qkv_bias": bool(config.get("qkv_bias", True)),
        "drop_path_rate": float(config.get("drop_path_rate", 0.0)),
        "norm_eps": eps,
        "embed_norm_eps": eps,
    }


register_format(Format("hf_pvt", is_hf_pvt, convert_hf_pvt,
                       "Hugging Face PvtForImageClassification / PvtModel (Zetatech/pvt-*)"))
