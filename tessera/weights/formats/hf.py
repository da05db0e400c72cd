"""Hugging Face transformers' Swin (``SwinForImageClassification``, ``SwinModel``) and
Swin V2 (``Swinv2ForImageClassification``, ``Swinv2Model``), as saved in hub directories
(``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

The hub names are the v4 ones: ``swin.embeddings.*``, ``swin.encoder.layers.{i}.blocks.{j}``
with ``layernorm_before/after``, separate ``attention.self.query/key/value`` (concatenated
here into the fused ``qkv``), ``attention.output.dense``, ``intermediate.dense`` and
``output.dense`` for the MLP, the merging at the end of stage ``i`` as in the official code,
``swin.layernorm`` and ``classifier``. ``SwinModel`` saves the same without ``swin.``.

Swin V2 has the prefix ``swinv2.``, the same block names, ``attention.self.logit_scale`` and
``attention.self.continuous_position_bias_mlp`` (the official ``cpb_mlp``), and no bias on
``key``: the query and value biases become ``q_bias`` and ``v_bias``. In V2
``layernorm_before`` is applied after the attention (it is the official ``norm1``; the
names are V1's). The window and ``pretrained_window_sizes`` are in ``config.json``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ...errors import CheckpointError
from . import Format, register_format

_QKV = re.compile(r"(.+)\.attention\.self\.(query|key|value)\.(weight|bias)")

# applied in order to each name; ``attention.output.dense`` must come before ``output.dense``
_RENAMES = [
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^embeddings\.norm\.", "patch_embed.norm."),
    (r"^encoder\.layers\.", "layers."),
    (r"\.layernorm_before\.", ".norm1."),
    (r"\.layernorm_after\.", ".norm2."),
    (r"\.attention\.self\.relative_position_bias_table$", ".attn.relative_position_bias_table"),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.intermediate\.dense\.", ".mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
    (r"^layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]


_RENAMES_V2 = [
    (r"\.attention\.self\.continuous_position_bias_mlp\.", ".attn.cpb_mlp."),
    (r"\.attention\.self\.(logit_scale|relative_coords_table)$", r".attn.\1"),
] + _RENAMES


def _is_hf_blocks(sd: Mapping[str, torch.Tensor], prefix: str) -> bool:
    pattern = re.compile(rf"({prefix}\.)?encoder\.layers\.\d+\.blocks\.\d+\.attention\.self\.")
    return any(pattern.match(k) for k in sd)


def _is_v2(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(".continuous_position_bias_mlp." in k for k in sd)


def is_hf_swin(sd: Mapping[str, torch.Tensor]) -> bool:
    return _is_hf_blocks(sd, "swin") and not _is_v2(sd)


def is_hf_swinv2(sd: Mapping[str, torch.Tensor]) -> bool:
    return _is_hf_blocks(sd, "swinv2") and _is_v2(sd)


def _convert(sd: Mapping[str, torch.Tensor], prefix: str, renames: list[tuple[str, str]],
             ) -> tuple[dict[str, torch.Tensor], dict[tuple[str, str], dict[str, torch.Tensor]]]:
    """Renamed tensors, and the separate query/key/value tensors grouped by (block, kind)."""
    if any(k.endswith("embeddings.position_embeddings") for k in sd):
        raise CheckpointError("a Hugging Face Swin with absolute position embeddings (use_absolute_embeddings) "
                              "is not supported")
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        k = k[len(prefix) :] if k.startswith(prefix) else k
        if k.endswith("relative_position_index"):
            continue
        if (m := _QKV.fullmatch(k)) is not None:
            block = re.sub(r"^encoder\.layers\.", "layers.", m.group(1))
            qkv.setdefault((block, m.group(3)), {})[m.group(2)] = v
            continue
        for pattern, new in renames:
            k = re.sub(pattern, new, k)
        out[k] = v
    return out, qkv


def _need(block: str, parts: Mapping[str, torch.Tensor], names: tuple[str, ...]) -> None:
    if set(parts) != set(names):
        raise CheckpointError(f"{block}.attention.self has {', '.join(sorted(parts))} but not all of "
                              f"{', '.join(names)}")


def convert_hf_swin(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, qkv = _convert(sd, "swin.", _RENAMES)
    for (block, kind), parts in qkv.items():
        _need(block, parts, ("query", "key", "value"))
        out[f"{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def convert_hf_swinv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, qkv = _convert(sd, "swinv2.", _RENAMES_V2)
    for (block, kind), parts in qkv.items():
        if kind == "weight":
            _need(block, parts, ("query", "key", "value"))
            out[f"{block}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]])
        else:  # Swin V2 has no key bias
            if "key" in parts:
                raise CheckpointError(f"{block}.attention.self.key has a bias, which Swin V2 does not have")
            _need(block, parts, ("query", "value"))
            out[f"{block}.attn.q_bias"] = parts["query"]
            out[f"{block}.attn.v_bias"] = parts["value"]
    return out


register_format(Format("hf_swin", is_hf_swin, convert_hf_swin,
                       "Hugging Face SwinForImageClassification / SwinModel (hub names)"))
register_format(Format("hf_swinv2", is_hf_swinv2, convert_hf_swinv2,
                       "Hugging Face Swinv2ForImageClassification / Swinv2Model (hub names)"))
