"""Foreign checkpoint formats: one pure function per format, ``state_dict -> state_dict``
in tessera's layout (the official Swin key names), plus a detector from the keys.

``FORMATS`` is ordered: the first format whose detector accepts a state dict is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ...errors import CheckpointError
from . import official, pvt_v2, shuffle

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Format:
    """A foreign checkpoint layout: its detector and converter, and the ``size_rule`` of the
    library that trains such weights (Swin image models: how its windows fit maps that are
    not a multiple of the window; None where the official rule applies)."""

    name: str
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    convert: Callable[[Mapping[str, torch.Tensor]], StateDict]
    description: str
    size_rule: str | None = None


FORMATS: list[Format] = [
    Format("mmaction", official.is_mmaction, official.convert_mmaction,
           "official Video Swin / mmaction2 (backbone.*, cls_head.fc_cls.*)"),
    Format("official", official.is_official, official.convert_official,
           "official Swin and Swin V2 (microsoft/Swin-Transformer), the same names as tessera's"),
    Format("pvt_v2_official", pvt_v2.is_official_pvt_v2, pvt_v2.convert_official_pvt_v2,
           "official PVT v2 release (whai362/PVT: patch_embed1-4, block1-4, norm1-4)"),
    Format("shuffle_official", shuffle.is_official_shuffle, shuffle.convert_official_shuffle,
           "official Shuffle Transformer (mulinmeng/Shuffle-Transformer: to_token, stage1-4, 1x1 convs)"),
    # last: a state dict already in the model's own names (tessera's, and the families whose
    # names follow their reference implementation); derived buffers are dropped
    Format("tessera", lambda sd: True, official.drop_derived, "tessera's own names"),
]


def register_format(fmt: Format, before: str = "tessera") -> None:
    """Add a format ahead of ``before`` in detection order (by default just before the
    catch-all ``tessera`` format)."""
    if any(f.name == fmt.name for f in FORMATS):
        raise ValueError(f"format {fmt.name!r} is registered twice")
    FORMATS.insert(next(i for i, f in enumerate(FORMATS) if f.name == before), fmt)


def get_format(name: str) -> Format:
    for f in FORMATS:
        if f.name == name:
            return f
    names = ", ".join(f.name for f in FORMATS)
    raise CheckpointError(f"unknown checkpoint format {name!r}; known formats: {names}")


def detect_format(state_dict: Mapping[str, torch.Tensor]) -> Format:
    for f in FORMATS:
        if f.detect(state_dict):
            return f
    sample = ", ".join(list(state_dict)[:5])
    raise CheckpointError(f"could not recognise the checkpoint's format from its keys ({sample}, ...)")


# the foreign formats register themselves, ahead of the catch-all
from . import hf, hf_cvt, hf_pvt, hf_pvt_v2, seg, timm, torchvision  # noqa: E402,F401
