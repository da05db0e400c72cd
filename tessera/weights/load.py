"""The one way in for weights: read a file safely, unwrap it, detect its format, convert it
to tessera's layout, adapt it to the model, and load it with a report."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .formats import Format, detect_format, get_format
from .io import read_checkpoint_file

log = logging.getLogger("tessera")

StateDict = dict[str, torch.Tensor]

#: keys under which training scripts store the weights, most preferred first
WRAPPER_KEYS = ("state_dict", "model", "module", "model_ema", "state_dict_ema")


@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    source: str
    format: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors from {self.source} (format: {self.format})"]
        lines += [f"  note: {n}" for n in self.notes]
        if self.reinitialized:
            lines.append(f"  re-initialised (shape differs): {', '.join(self.reinitialized)}")
        if self.missing:
            lines.append(f"  missing in the checkpoint ({len(self.missing)}): {_short(self.missing)}")
        if self.unexpected:
            lines.append(f"  not used from the checkpoint ({len(self.unexpected)}): {_short(self.unexpected)}")
        return "\n".join(lines)


def _short(keys: list[str], n: int = 6) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


#: Steps that adapt a converted state dict to a particular model (resizing tables,
#: inflating image weights to video, ...): ``fn(model, state_dict, report) -> state_dict``.
ADAPTERS: list[Callable[[nn.Module, StateDict, LoadReport], StateDict]] = []


def unwrap(obj: Any, use_ema: bool = False) -> tuple[StateDict, list[str]]:
    """Find the state dict inside a training checkpoint (``{'model': ...}``,
    ``{'state_dict': ...}``, EMA copies, DDP ``module.`` prefixes)."""
    notes: list[str] = []
    keys = WRAPPER_KEYS
    if use_ema:
        keys = ("model_ema", "state_dict_ema") + keys
    for _ in range(3):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((k for k in keys if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                obj = tensors
                break
            raise CheckpointError(f"found no weights in the checkpoint (top-level keys: {', '.join(map(str, obj))})")
        notes.append(f"weights taken from the {inner!r} entry")
        obj = obj[inner]
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
        notes.append("removed the DDP 'module.' prefix")
    return sd, notes


def read_state_dict(source: str | os.PathLike | Mapping, use_ema: bool = False) -> tuple[StateDict, list[str], str]:
    """Read a checkpoint file, a weights directory or an in-memory dict into a plain state
    dict. Returns ``(state_dict, notes, source_name)``."""
    if isinstance(source, Mapping):
        sd, notes = unwrap(source, use_ema)
        return sd, notes, "<state dict>"
    path = Path(source)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "model.pth"):
            if (path / name).exists():
                sd, notes = unwrap(read_checkpoint_file(path / name), use_ema)
                return sd, notes, str(path)
        raise CheckpointError(f"{path}: a directory without model.safetensors, pytorch_model.bin or model.pth")
    sd, notes = unwrap(read_checkpoint_file(path), use_ema)
    return sd, notes, str(path)


def convert_state_dict(sd: Mapping[str, torch.Tensor], format: str | None = None) -> tuple[StateDict, Format]:
    """Convert a foreign state dict to tessera's layout (format detected unless given)."""
    fmt = get_format(format) if format else detect_format(sd)
    return fmt.convert(sd), fmt


def _head_prefixes(model: nn.Module) -> list[str]:
    get = getattr(model, "get_classifier", None)
    if get is None:
        return []
    heads = get()
    heads = heads if isinstance(heads, (tuple, list)) else [heads]
    names = {id(m): n for n, m in model.named_modules()}
    return [names[id(h)] + "." for h in heads if id(h) in names and names[id(h)]]


def load_state_dict_checked(model: nn.Module, sd: StateDict, report: LoadReport, strict: bool = False) -> LoadReport:
    """Load ``sd`` into ``model``; shape mismatches are an error listing every key, except in
    the classifier head, which is re-initialised with a warning (another class count)."""
    own = model.state_dict()
    heads = _head_prefixes(model)
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if k in own and v.shape != own[k].shape]
    head_mismatch = [m for m in mismatched if any(m[0].startswith(h) for h in heads)]
    other = [m for m in mismatched if m not in head_mismatch]
    if other:
        rows = "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in other[:10])
        more = f"; ... ({len(other) - 10} more)" if len(other) > 10 else ""
        raise CheckpointError(
            f"{report.source}: the checkpoint does not fit the model ({len(other)} tensors differ in shape): {rows}{more}"
        )
    if head_mismatch:
        for k, _, _ in head_mismatch:
            sd.pop(k)
        report.reinitialized = [k for k, _, _ in head_mismatch]
        log.warning("the classifier head of %s has another shape; it is re-initialised: %s",
                    report.source, ", ".join(report.reinitialized))
    matched = [k for k in sd if k in own]
    if not matched:
        raise CheckpointError(
            f"{report.source}: none of its {len(sd)} tensors match the model "
            f"(checkpoint keys like {_short(list(sd), 3)}; model keys like {_short(list(own), 3)})"
        )
    report.loaded = matched
    report.unexpected = [k for k in sd if k not in own]
    report.missing = [k for k in own if k not in sd and k not in report.reinitialized]
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(
            f"{report.source}: strict loading failed: missing {_short(report.missing)}; unexpected {_short(report.unexpected)}"
        )
    model.load_state_dict({k: sd[k] for k in matched}, strict=False)
    return report


def load_checkpoint(
    model: nn.Module,
    source: str | os.PathLike | Mapping,
    format: str | None = None,
    strict: bool = False,
    use_ema: bool = False,
    verbose: bool = True,
) -> LoadReport:
    """Load weights of any supported format into ``model``.

    Args:
        model: a tessera model.
        source: a checkpoint file (``.safetensors``, ``.pth``/``.pt``/``.bin``), a weights
            directory, or a state dict.
        format: force a format by name instead of detecting it from the keys.
        strict: also fail on missing or unused tensors (shape mismatches always fail).
        use_ema: prefer the EMA weights of a training checkpoint.
        verbose: log the report.

    Returns: a :class:`LoadReport` of what was loaded, missing and unused.

    Raises: :class:`tessera.errors.CheckpointError` naming the file and the problem
    (unreadable, unsafe pickle, unknown format, shapes that do not fit).
    """
    sd, notes, name = read_state_dict(source, use_ema)
    sd, fmt = convert_state_dict(sd, format)
    report = LoadReport(source=name, format=fmt.name, notes=notes)
    for adapt in ADAPTERS:
        sd = adapt(model, sd, report)
    load_state_dict_checked(model, sd, report, strict=strict)
    if verbose:
        log.info("%s", report)
    return report
