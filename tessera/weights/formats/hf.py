"""Hugging Face transformers' Swin (``SwinForImageClassification``, ``SwinModel``), as
saved in hub directories (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``).

The hub names are the v4 ones: ``swin.embeddings.*``, ``swin.encoder.layers.{i}.blocks.{j}``
with ``layernorm_before/after``, separate ``attention.self.query/key/value`` (concatenated
here into the fused ``qkv``), ``attention.output.dense``, ``intermediate.dense`` and
``output.dense`` for the MLP, the merging at the end of stage ``i`` as in the official code,
``swin.layernorm`` and ``classifier``. ``SwinModel`` saves the same without ``swin.``.
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


def is_hf_swin(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(re.match(r"(swin\.)?encoder\.layers\.\d+\.blocks\.\d+\.attention\.self\.", k) for k in sd)


def convert_hf_swin(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.endswith("embeddings.position_embeddings") for k in sd):
        raise CheckpointError("a Hugging Face Swin with absolute position embeddings (use_absolute_embeddings) "
                              "is not supported")
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        k = k[len("swin.") :] if k.startswith("swin.") else k
        if k.endswith("relative_position_index"):
            continue
        if (m := _QKV.fullmatch(k)) is not None:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
            continue
        for pattern, new in _RENAMES:
            k = re.sub(pattern, new, k)
        out[k] = v
    for (block, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{block}.attention.self has {', '.join(sorted(parts))} but not all of query, key, value")
        block = re.sub(r"^encoder\.layers\.", "layers.", block)
        out[f"{block}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


register_format(Format("hf_swin", is_hf_swin, convert_hf_swin,
                       "Hugging Face SwinForImageClassification / SwinModel (hub names)"))
