"""The one way in for weights: read a file safely, unwrap it, detect its format, convert it
to tessera's layout, adapt it to the model, and load it with a report."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from .adapt import adapt_generic
from .formats import Format, detect_format, get_format
from .io import read_checkpoint_file, read_directory_config

log = logging.getLogger(__name__)

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
    #: the size rule of the library that made the weights (torchvision, timm), if not the official one
    size_rule: str | None = None
    #: the caller shows the report itself: :meth:`warn` logs nothing
    quiet: bool = field(default=False, repr=False)

    def warn(self, message: str) -> None:
        """Tell the user at once what changed the weights (inflation, a new head), unless the
        caller shows the report itself."""
        if not self.quiet:
            log.warning("%s: %s", self.source, message)

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


def unwrap(obj: Any, use_ema: bool = False, source: str = "<state dict>") -> tuple[StateDict, list[str]]:
    """Find the state dict inside a training checkpoint (``{'model': ...}``,
    ``{'state_dict': ...}``, EMA copies, DDP ``module.`` prefixes)."""
    notes: list[str] = []
    keys = WRAPPER_KEYS
    if use_ema:
        keys = ("model_ema", "state_dict_ema") + keys
    for _ in range(len(WRAPPER_KEYS)):
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((k for k in keys if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors:
                obj = tensors
                break
            top = ", ".join(map(str, obj)) or "none, the dict is empty"
            raise CheckpointError(f"{source}: found no weights in the checkpoint (top-level keys: {top})")
        if use_ema and not notes and inner not in ("model_ema", "state_dict_ema"):
            notes.append("no EMA weights in the checkpoint")
        notes.append(f"weights taken from the {inner!r} entry")
        obj = obj[inner]
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: found no flat dict of tensors inside the checkpoint's nested entries")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
        notes.append("removed the DDP 'module.' prefix")
    return sd, notes


#: weight files of a directory, most preferred first (Hugging Face's names, and tessera's)
DIRECTORY_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json", "model.pth")


def _read_directory(path: Path) -> Any:
    name = next((n for n in DIRECTORY_FILES if (path / n).exists()), None)
    if name is None:
        raise CheckpointError(f"{path}: a directory without any of {', '.join(DIRECTORY_FILES)}")
    if not name.endswith(".index.json"):
        return read_checkpoint_file(path / name)
    try:  # a sharded checkpoint: the index maps every tensor to its shard
        shards = sorted(set(json.loads((path / name).read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{path / name}: not a valid shard index ({e})") from None
    sd: StateDict = {}
    for shard in shards:
        if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", ".."):
            # a file beside the index, never a path elsewhere on the machine
            raise CheckpointError(f"{path / name}: shard {shard!r} is not a file name in {path}")
        sd.update(read_checkpoint_file(path / shard))
    return sd


def read_state_dict(source: str | os.PathLike | Mapping, use_ema: bool = False) -> tuple[StateDict, list[str], str]:
    """Read a checkpoint file, a weights directory or an in-memory dict into a plain state
    dict. Returns ``(state_dict, notes, source_name)``."""
    if isinstance(source, Mapping):
        sd, notes = unwrap(source, use_ema)
        return sd, notes, "<state dict>"
    path = Path(source)
    obj = _read_directory(path) if path.is_dir() else read_checkpoint_file(path)
    sd, notes = unwrap(obj, use_ema, str(path))
    return sd, notes, str(path)


@contextmanager
def naming(source: str) -> Iterator[None]:
    """Prefix the :class:`CheckpointError` raised inside with ``source`` (errors name the file)."""
    try:
        yield
    except CheckpointError as e:
        if str(e).startswith(f"{source}:"):
            raise
        raise CheckpointError(f"{source}: {e}") from None


def source_format(source: str | os.PathLike | Mapping) -> str | None:
    """The format a source declares: ``"tessera"`` for a directory written by
    ``save_pretrained`` (its names would also pass for the official ones); else None (detect)."""
    if isinstance(source, Mapping):
        return None
    return "tessera" if "format_version" in (read_directory_config(source) or {}) else None


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], format: str | None = None, source: str = "<state dict>"
) -> tuple[StateDict, Format]:
    """Convert a foreign state dict to tessera's layout (format detected unless given)."""
    with naming(source):
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
        report.warn(f"the classifier head has another shape; it is re-initialised: {', '.join(report.reinitialized)}")
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


def read_converted(
    source: str | os.PathLike | Mapping, format: str | None = None, use_ema: bool = False
) -> tuple[StateDict, LoadReport]:
    """Read ``source`` and convert it to tessera's names: the state dict, and the report that
    loading it will fill in."""
    sd, notes, name = read_state_dict(source, use_ema)
    sd, fmt = convert_state_dict(sd, format or source_format(source), name)
    return sd, LoadReport(source=name, format=fmt.name, notes=notes, size_rule=fmt.size_rule)


def _size_rule_note(model: nn.Module, report: LoadReport) -> None:
    """Say so when the weights come from a library whose size rule would compute another
    function than the model's at the model's ``img_size`` (a size the official code refuses)."""
    own = getattr(model, "size_rule", None)
    img_size = getattr(model, "img_size", None)
    if report.size_rule is None or own is None or own == report.size_rule or getattr(model, "ndim", 2) != 2:
        return
    if img_size is None:
        return
    from ..layers.windows import rules_agree

    if not rules_agree(own, report.size_rule, img_size, model.patch_size, model.window_size, model.num_layers):
        size = "x".join(map(str, img_size))
        report.notes.append(
            f"these weights come from {report.size_rule}, whose windows differ from this model's at {size} "
            f"(size_rule={own!r}); build the model with size_rule={report.size_rule!r} to compute what "
            f"{report.size_rule} computes")


def apply_state_dict(model: nn.Module, sd: StateDict, report: LoadReport, strict: bool = False) -> LoadReport:
    """Fit a converted state dict to ``model`` (its ``adapt_checkpoint``: resizing tables and
    position embeddings, inflating image weights to video, ...) and load it."""
    with naming(report.source):
        adapt = getattr(model, "adapt_checkpoint", None)
        sd = adapt(sd, report) if adapt is not None else adapt_generic(model, sd, report)
    _size_rule_note(model, report)
    return load_state_dict_checked(model, sd, report, strict=strict)


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
            directory (tessera's ``save_pretrained``, a Hugging Face directory), or a state dict.
        format: force a format by name instead of detecting it from the keys.
        strict: also fail on missing or unused tensors (shape mismatches always fail).
        use_ema: prefer the EMA weights of a training checkpoint.
        verbose: log the report, and warn at once of an inflation or a re-initialised head;
            ``False`` when the caller shows the report itself.

    Weights made for another window or grid are resized, image weights loaded into a video
    model are inflated (see :mod:`tessera.weights.adapt`), and a head of another class count
    is re-initialised; the report's notes say so.

    Returns: a :class:`LoadReport` of what was loaded, missing and unused.

    Raises: :class:`tessera.errors.CheckpointError` naming the file and the problem
    (unreadable, unsafe pickle, unknown format, shapes that do not fit).
    """
    sd, report = read_converted(source, format, use_ema)
    report.quiet = not verbose
    apply_state_dict(model, sd, report, strict=strict)
    if verbose:
        log.info("%s", report)
    return report
