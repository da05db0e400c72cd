"""Hugging Face transformers' CvT (``CvtForImageClassification``, ``CvtModel``), as saved
in hub directories such as ``microsoft/cvt-13``, converted to tessera's names (the official
microsoft/CvT ones).

The hub names: ``cvt.encoder.stages.{i}.embedding.convolution_embeddings.projection`` /
``.normalization`` for the convolutional token embedding, ``...layers.{j}.attention.attention.``
``convolution_projection_{query,key,value}.convolution_projection.{convolution,normalization}``
and ``projection_{query,key,value}`` for the convolutional projections,
``attention.output.dense``, ``intermediate.dense`` / ``output.dense`` for the MLP,
``layernorm_before`` / ``layernorm_after``, ``stages.{i}.cls_token``, then ``layernorm`` and
``classifier``. ``CvtModel`` saves the same without ``cvt.``.

The model settings come from ``config.json`` (:func:`cvt_args`): transformers runs CvT with
exact GELU where the official code uses QuickGELU, so its weights are loaded into a CvT built
with ``act_layer="gelu"`` to give transformers' outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from . import Format, register_format

# applied in order to each name (after the ``cvt.`` prefix and the stage are taken off)
_RENAMES = [
    (r"^embedding\.convolution_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embedding\.convolution_embeddings\.normalization\.", "patch_embed.norm."),
    (r"^layers\.", "blocks."),
    (r"\.attention\.attention\.convolution_projection_(query|key|value)\.convolution_projection\.convolution\.",
     lambda m: f".attn.conv_proj_{m.group(1)[0]}.conv."),
    (r"\.attention\.attention\.convolution_projection_(query|key|value)\.convolution_projection\.normalization\.",
     lambda m: f".attn.conv_proj_{m.group(1)[0]}.bn."),
    (r"\.attention\.attention\.projection_(query|key|value)\.", lambda m: f".attn.proj_{m.group(1)[0]}."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
]
_STAGE = re.compile(r"encoder\.stages\.(\d+)\.(.+)")


def is_hf_cvt(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(k.endswith("embedding.convolution_embeddings.projection.weight") for k in sd)


def convert_hf_cvt(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        k = key[len("cvt.") :] if key.startswith("cvt.") else key
        if (m := _STAGE.fullmatch(k)) is not None:
            rest = m.group(2)
            for pattern, new in _RENAMES:
                rest = re.sub(pattern, new, rest)
            k = f"stage{m.group(1)}.{rest}"
        elif k.startswith("layernorm."):
            k = "norm." + k[len("layernorm.") :]
        elif k.startswith("classifier."):
            k = "head." + k[len("classifier.") :]
        out[k] = value
    return out


def cvt_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """tessera CvT constructor arguments from a transformers ``CvtConfig`` (``config.json``);
    ``num_classes`` is left to the weights."""
    def per_stage(key: str, default: Any) -> tuple:
        return tuple(config.get(key, default))

    uniform = {}
    for hf, ours in (("mlp_ratio", "mlp_ratio"), ("qkv_bias", "qkv_bias"), ("kernel_qkv", "kernel_qkv"),
                     ("stride_q", "stride_q"), ("stride_kv", "stride_kv")):
        values = config.get(hf)
        if values is not None:
            if len(set(values)) != 1:
                raise ValueError(f"config.json: {hf} differs between stages ({values}); tessera's CvT takes one value")
            uniform[ours] = values[0]
    cls = config.get("cls_token", [False, False, True])
    return {
        "in_chans": config.get("num_channels", 3),
        "embed_dims": per_stage("embed_dim", (64, 192, 384)),
        "depths": per_stage("depth", (1, 2, 10)),
        "num_heads": per_stage("num_heads", (1, 3, 6)),
        "patch_sizes": per_stage("patch_sizes", (7, 3, 3)),
        "patch_strides": per_stage("patch_stride", (4, 2, 2)),
        "patch_paddings": per_stage("patch_padding", (2, 1, 1)),
        "drop_path_rate": per_stage("drop_path_rate", (0.0, 0.0, 0.1)),
        "cls_token": bool(cls[-1]),
        "act_layer": "gelu",  # transformers' CvtIntermediate: nn.GELU()
        **uniform,
    }


register_format(Format("hf_cvt", is_hf_cvt, convert_hf_cvt,
                       "Hugging Face CvtForImageClassification / CvtModel (microsoft/cvt-*)"))
