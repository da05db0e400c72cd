"""Foreign checkpoint formats: one pure function per format, ``state_dict -> state_dict``
in tessera's layout (the official Swin key names), plus a detector from the keys.

``FORMATS`` is ordered: the first format whose detector accepts a state dict is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ...errors import CheckpointError
from . import official

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Format:
    name: str
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    convert: Callable[[Mapping[str, torch.Tensor]], StateDict]
    description: str


FORMATS: list[Format] = [
    Format("mmaction", official.is_mmaction, official.convert_mmaction,
           "official Video Swin / mmaction2 (backbone.*, cls_head.fc_cls.*)"),
    Format("official", official.is_official, official.convert_official,
           "official Swin and tessera's own layout"),
]


def register_format(fmt: Format, before: str | None = None) -> None:
    """Add a format; ``before`` puts it ahead of the named one in detection order."""
    if any(f.name == fmt.name for f in FORMATS):
        raise ValueError(f"format {fmt.name!r} is registered twice")
    if before is None:
        FORMATS.append(fmt)
    else:
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
