"""torchvision's Swin (``swin_t/s/b``), Swin V2 (``swin_v2_t/s/b``) and Video Swin
(``swin3d_t/s/b``) layouts.

All keep the stages and the patch mergings as alternating entries of one ``features``
sequence, and the MLP as ``mlp.0`` / ``mlp.3``:

* image: ``features.0`` is the stem (``features.0.0`` the conv, ``features.0.2`` the norm),
  ``features.{2i+1}.{j}`` block ``j`` of stage ``i``, ``features.{2i+2}`` the merging at the
  end of stage ``i``; ``relative_position_index`` is saved flattened (dropped here);
* V2 as the image layout, with one ``qkv.bias`` of 3C whose middle (k) third torchvision
  zeroes at every forward: it becomes ``q_bias`` and ``v_bias``, the k third is dropped.
  torchvision normalises the position coordinates by the window itself, which is tessera's
  ``pretrained_window_sizes=0``;
* video: ``patch_embed`` is outside ``features``, so stage ``i`` is ``features.{2i}`` and its
  merging ``features.{2i+1}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ...errors import CheckpointError
from . import Format, register_format
from .official import drop_derived

_FEATURE = re.compile(r"features\.(\d+)\.(.+)")
_MLP = {"mlp.0.": "mlp.fc1.", "mlp.3.": "mlp.fc2."}


def _has_table(sd: Mapping[str, torch.Tensor], prefix: str) -> bool:
    return any(k.startswith(prefix) and k.endswith("relative_position_bias_table") for k in sd)


def is_torchvision_swin(sd: Mapping[str, torch.Tensor]) -> bool:
    stem = sd.get("features.0.0.weight")
    return stem is not None and stem.dim() == 4 and _has_table(sd, "features.1.0.")


def is_torchvision_swinv2(sd: Mapping[str, torch.Tensor]) -> bool:
    stem = sd.get("features.0.0.weight")
    return stem is not None and stem.dim() == 4 and "features.1.0.attn.cpb_mlp.0.weight" in sd


def is_torchvision_swin3d(sd: Mapping[str, torch.Tensor]) -> bool:
    stem = sd.get("patch_embed.proj.weight")
    return stem is not None and stem.dim() == 5 and _has_table(sd, "features.0.0.")


def _convert(sd: Mapping[str, torch.Tensor], first_stage: int, stem: dict[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in drop_derived(sd).items():
        for old, new in stem.items():
            if k.startswith(old):
                k = new + k[len(old) :]
                break
        else:
            if (m := _FEATURE.fullmatch(k)) is not None:
                n, rest = int(m.group(1)) - first_stage, m.group(2)
                if n % 2 == 0:  # the blocks of stage n // 2: "{j}.{name}"
                    j, name = rest.split(".", 1)
                    for old, new in _MLP.items():
                        name = new + name[len(old) :] if name.startswith(old) else name
                    k = f"layers.{n // 2}.blocks.{j}.{name}"
                else:  # the merging at the end of stage n // 2
                    k = f"layers.{n // 2}.downsample.{rest}"
        out[k] = v
    return out


_IMAGE_STEM = {"features.0.0.": "patch_embed.proj.", "features.0.2.": "patch_embed.norm."}


def _is_v2(sd: Mapping[str, torch.Tensor]) -> bool:
    return any("cpb_mlp" in k or "logit_scale" in k for k in sd)


def convert_torchvision_swin(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if _is_v2(sd):
        raise CheckpointError("a Swin V2 checkpoint (torchvision swin_v2_*): use the torchvision_swinv2 format "
                              "and a swinv2_* model")
    return _convert(sd, first_stage=1, stem=_IMAGE_STEM)


def convert_torchvision_swinv2(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in _convert(sd, first_stage=1, stem=_IMAGE_STEM).items():
        if k.endswith(".attn.qkv.bias"):  # [q, k, v] biases; k's is zeroed by torchvision at every forward
            dim = v.shape[0] // 3
            out[k[: -len("qkv.bias")] + "q_bias"] = v[:dim]
            out[k[: -len("qkv.bias")] + "v_bias"] = v[2 * dim :]
        else:
            out[k] = v
    return out


def convert_torchvision_swin3d(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if _is_v2(sd):
        raise CheckpointError("a Swin V2 checkpoint is not a torchvision swin3d_* one")
    return _convert(sd, first_stage=0, stem={})


# torchvision pads windows at run time and drops pixels short of a patch: its size rule
register_format(Format("torchvision_swin", is_torchvision_swin, convert_torchvision_swin,
                       "torchvision swin_t/s/b (features.*, flattened index, mlp.0/mlp.3)", size_rule="torchvision"))
register_format(Format("torchvision_swinv2", is_torchvision_swinv2, convert_torchvision_swinv2,
                       "torchvision swin_v2_t/s/b (features.*, one qkv.bias of which k's third is unused)",
                       size_rule="torchvision"))
register_format(Format("torchvision_swin3d", is_torchvision_swin3d, convert_torchvision_swin3d,
                       "torchvision swin3d_t/s/b (patch_embed.*, features.*)"))
