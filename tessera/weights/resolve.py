"""From whatever names a model to the model, its class names and its preprocessing.

Every command (predict, evaluate, export, benchmark, summary, convert, inflate, and
``train model.pretrained=``) goes through :func:`resolve_model`, which takes:

* a registered name (``swin_t``: random weights, or its default weights where asked) or a
  ``name.tag`` of published weights (:mod:`tessera.weights.zoo`);
* a run directory of ``tessera train`` or one of its weights files (``best.safetensors``):
  the model name, arguments, class names and data settings stored with the weights;
* a tessera directory (``save_pretrained``, ``tessera convert``): its ``config.json``;
* a Hugging Face directory (``config.json`` + weights) of Swin, CvT or PVT v1: the
  architecture from its config;
* a checkpoint of any supported format, detected from its keys: the architecture is read
  from the weights (Swin, Video Swin), taken from a published file of the same name, or named
  with ``model`` (``--model NAME``).

Class names are those stored with the weights, else those of the label set the head's class
count belongs to (ImageNet-1K, ImageNet-22K, Kinetics, SSv2), else the class indices.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import CheckpointError, ConfigError, UnknownModelError
from .io import read_directory_config
from .load import DIRECTORY_FILES, LoadReport, apply_state_dict, load_checkpoint, naming, read_converted

log = logging.getLogger(__name__)

RUN_FILES = ("best.safetensors", "last.safetensors")


@dataclass
class ResolvedModel:
    """A model with what it predicts and how its input is prepared.

    Attributes:
        model: the model, in eval mode.
        name: a short description (``swin_t.ms_in1k``, ``runs/demo/best.safetensors``).
        classes: the name of each output.
        data: the data config (:mod:`tessera.data.preprocess`).
        source: where the weights came from (``random weights`` when none were loaded).
        report: the load report, when weights were loaded.
        label_set: the label set the classes are, if one of tessera's.
        info: a run's stored information (epoch, ...), for run sources.
    """

    model: nn.Module
    name: str
    classes: list[str]
    data: dict[str, Any]
    source: str
    report: LoadReport | None = None
    label_set: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def has_weights(self) -> bool:
        return self.report is not None

    def run_info(self) -> dict[str, Any]:
        """The run-information dict the evaluation and prediction helpers take."""
        return {**self.info, "model": getattr(self.model, "model_name", None),
                "model_args": getattr(self.model, "model_args", {}), "classes": self.classes, "data": self.data,
                "checkpoint": self.source, "label_set": self.label_set}


# ---------------------------------------------------------------------------------------
# Class names
# ---------------------------------------------------------------------------------------


def class_names(num_classes: int, stored: list[str] | None = None,
                label_set: str | None = None) -> tuple[list[str], str | None]:
    """``(names, label set)`` for a head of ``num_classes`` outputs: the stored names, else a
    label set's (the given one, else the one of that class count), else the indices."""
    from ..labels import LABEL_SETS, label_names, label_set_for

    if stored and len(stored) == num_classes:
        return list(stored), label_set if label_set and LABEL_SETS.get(label_set, ("", -1))[1] == num_classes else None
    if label_set is None or LABEL_SETS.get(label_set, ("", -1))[1] != num_classes:
        label_set = label_set_for(num_classes)
    if label_set is not None:
        return label_names(label_set), label_set
    return [str(i) for i in range(num_classes)], None


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def _stored_classes(config: dict[str, Any]) -> tuple[list[str] | None, str | None]:
    """The classes a tessera ``config.json`` stores: ``classes`` (a list) or ``label_set``."""
    return config.get("classes"), config.get("label_set")


def _hf_classes(config: dict[str, Any]) -> list[str] | None:
    """``id2label`` of a Hugging Face config, unless it holds transformers' placeholders."""
    labels = config.get("id2label") or {}
    try:
        names = [labels[k] for k in sorted(labels, key=int)]
    except (ValueError, TypeError):
        return None
    return None if not names or all(str(n).startswith("LABEL_") for n in names) else [str(n) for n in names]


# ---------------------------------------------------------------------------------------
# The resolver
# ---------------------------------------------------------------------------------------


def _finish(model: nn.Module, name: str, source: str, report: LoadReport | None, data: dict | None = None,
            stored: list[str] | None = None, label_set: str | None = None, info: dict | None = None) -> ResolvedModel:
    from ..data.preprocess import complete_data_config, model_data_config

    classes, label_set = class_names(_num_classes(model), stored, label_set)
    data = complete_data_config(data) if data else model_data_config(model)
    return ResolvedModel(model.eval(), name, classes, data, source, report, label_set, info or {})


def _entry_model(entry_name: str, load_weights: bool, overrides: dict[str, Any]) -> ResolvedModel:
    from ..registry import create_model
    from .zoo import get_pretrained

    entry = get_pretrained(entry_name)
    model = create_model(entry.name, pretrained=load_weights, **overrides)
    report = getattr(model, "load_report", None) if load_weights else None
    return _finish(model, entry.name, entry.name if load_weights else "random weights", report,
                   model.pretrained_cfg["data"], label_set=entry.label_set)


def _run_weights(path: Path) -> Path | None:
    """The weights file of a run directory, or the file itself when it holds run information."""
    from ..train.checkpoint import RUN_INFO_KEY

    if path.is_dir():
        return next((path / n for n in RUN_FILES if (path / n).is_file()), None)
    return path if _safetensors_metadata(path).get(RUN_INFO_KEY) else None


def _safetensors_metadata(path: Path) -> dict[str, str]:
    if path.suffix != ".safetensors" or not path.is_file():
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupted?): {e}") from None


def _run_model(file: Path, load_weights: bool, overrides: dict[str, Any]) -> ResolvedModel:
    from ..registry import create_model
    from ..train.checkpoint import read_run_info

    info = read_run_info(file)
    model = create_model(info["model"], **{**info["model_args"], **overrides})
    report = load_checkpoint(model, file, strict=not overrides, verbose=False) if load_weights else None
    extra = {k: v for k, v in info.items() if k not in ("model", "model_args", "classes", "data")}
    return _finish(model, str(file), str(file) if load_weights else "random weights", report, info["data"],
                   info["classes"], info.get("label_set"), extra)


def _tessera_dir(path: Path, config: dict, load_weights: bool, overrides: dict[str, Any]) -> ResolvedModel:
    from .pretrained import build_from_config

    model = build_from_config(path, **overrides)
    report = load_checkpoint(model, path, format="tessera", strict=not overrides, verbose=False) \
        if load_weights else None
    stored, label_set = _stored_classes(config)
    return _finish(model, str(path), str(path) if load_weights else "random weights", report, config.get("data"),
                   stored, label_set)


def hf_architecture(config: dict[str, Any], sd: dict, where: Path):
    """The :class:`~tessera.weights.infer.Architecture` of a Hugging Face directory's config
    (Swin, Swin V2, CvT, PVT v1, PVT v2)."""
    from .formats.hf_cvt import cvt_args
    from .formats.hf_pvt import pvt_args
    from .formats.hf_pvt_v2 import pvt_v2_args
    from .infer import Architecture, infer_architecture, match_arguments

    kind = config.get("model_type")
    if kind in ("swin", "swinv2", "donut-swin", "maskformer-swin"):
        with naming(str(where)):
            return infer_architecture(sd, config)
    builders = {"cvt": ("CvT", cvt_args), "pvt": ("PyramidVisionTransformer", pvt_args),
                "pvt_v2": ("PyramidVisionTransformerV2", pvt_v2_args)}
    if kind not in builders:
        raise CheckpointError(f"{where}: a Hugging Face {kind!r} model; tessera reads Hugging Face Swin, Swin V2, "
                              f"CvT, PVT and PVT v2 directories")
    from .. import models

    cls = getattr(models, builders[kind][0])
    try:
        args = builders[kind][1](config)
    except ValueError as e:
        raise CheckpointError(f"{where}/{e}") from None
    head = sd.get("head.weight")
    args["num_classes"] = int(head.shape[0]) if head is not None else 0
    return Architecture(cls, args, 2, match_arguments(cls, args))


def _foreign(path: Path, arch: str | None, load_weights: bool, format: str | None, use_ema: bool,
             overrides: dict[str, Any], verbose: bool = True) -> ResolvedModel:
    """A checkpoint of a foreign format (or a Hugging Face directory)."""
    from ..registry import create_model
    from .infer import infer_architecture, registered_args
    from .zoo import find_by_file_name, get_pretrained

    sd, report = read_converted(path, format, use_ema)
    report.quiet = not verbose
    config = read_directory_config(path) if path.is_dir() else None
    entry = get_pretrained(arch) if arch and "." in arch else find_by_file_name(path.name)
    stored = _hf_classes(config) if config else None
    if arch is not None:
        base = arch.split(".", 1)[0]
        args = dict(entry.args) if entry is not None and "." in arch else {}
        head = sd.get("head.weight")
        if head is not None and "num_classes" not in overrides:
            args["num_classes"] = int(head.shape[0])
        if report.size_rule is not None and "size_rule" in registered_args(base)[1]:
            args["size_rule"] = report.size_rule  # the windows of the weights' library
        model = create_model(base, **{**args, **overrides})
    elif config is not None and "model_type" in config:
        model = hf_architecture(config, sd, path).build(**overrides)
    else:
        try:
            with naming(str(path)):
                model = infer_architecture(sd, size_rule=report.size_rule).build(**overrides)
        except CheckpointError as err:
            if entry is None:  # the reason of the inference, and how to name the model on the command line
                raise CheckpointError(f"{err} (--model NAME, or NAME --checkpoint FILE)") from None  # err names path
            model = create_model(entry.model, **{**entry.args, **overrides})
    rule = getattr(model, "size_rule", None)
    if report.size_rule is not None and rule == report.size_rule:
        report.notes.append(f"size_rule={rule!r}: at sizes the official code refuses, windows fit the maps as "
                            f"{rule} fits them (saved in the config)")
    if entry is not None and getattr(model, "model_name", None) != entry.model:
        entry = None  # a file of the same name, but not the published model
    if entry is not None:
        from .zoo import describe_model

        describe_model(model, entry)
    if load_weights:
        apply_state_dict(model, sd, report)
    data = entry.data_config() if entry is not None else None
    return _finish(model, str(path), str(path) if load_weights else "random weights",
                   report if load_weights else None, data, stored, entry.label_set if entry else None)


def _from_path(path: Path, arch: str | None, load_weights: bool, format: str | None, use_ema: bool,
               overrides: dict[str, Any], verbose: bool = True) -> ResolvedModel:
    from .zoo import ZOO_KEY

    run = _run_weights(path)
    if run is not None:
        if arch is not None:
            from ..train.checkpoint import read_run_info

            _no_arch(arch, path, "a run's weights", read_run_info(run)["model"])
        return _run_model(run, load_weights, overrides)
    if path.is_dir():
        config = read_directory_config(path)
        if config is not None and "format_version" in config:
            _no_arch(arch, path, "a tessera directory", config.get("name"))
            return _tessera_dir(path, config, load_weights, overrides)
        if config is None and not any((path / n).exists() for n in DIRECTORY_FILES):
            raise CheckpointError(f"{path}: a directory without weights (no {', '.join(RUN_FILES)}, config.json "
                                  f"or {', '.join(DIRECTORY_FILES)})")
    stamp = _safetensors_metadata(path).get(ZOO_KEY) if path.is_file() else None
    if stamp and arch is None:  # a file of tessera's weights cache: the published entry it holds
        arch = json.loads(stamp)["name"]
        format = format or "tessera"
    return _foreign(path, arch, load_weights, format, use_ema, overrides, verbose)


def _no_arch(arch: str | None, path: Path, what: str, stored: str | None) -> None:
    """A source that records its model takes no other model name than its own."""
    if arch is not None and arch.split(".", 1)[0] != stored:
        raise ConfigError(f"{path} is {what} of {stored}, which names its model itself; leave out the model name "
                          f"({arch})")


def resolve_model(spec: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None, *,
                  load_weights: bool = True, default_tag: bool = False, require_weights: bool = False,
                  format: str | None = None, use_ema: bool = False, device: Any = None, verbose: bool = True,
                  **overrides: Any) -> ResolvedModel:
    """The model that ``spec`` (and ``checkpoint``) name (see the module docstring).

    Args:
        spec: a registered name, a ``name.tag``, or a path (run directory, weights file,
            tessera or Hugging Face directory, checkpoint).
        checkpoint: weights to load into the model ``spec`` names (any source above); with
            ``checkpoint`` alone, ``spec`` may be None.
        load_weights: load the weights (False: the architecture and data settings only).
        default_tag: a bare registered name means its default published weights (where it
            has any; :func:`tessera.list_pretrained`).
        require_weights: fail (with one line) when the result would have random weights.
        format: force the checkpoint format of a foreign file.
        use_ema: take the EMA weights of a training checkpoint.
        device: move the model there.
        verbose: warn in the log of what changed the weights as they load (commands that
            print the report pass False, so that each note appears once).
        **overrides: constructor arguments that replace the stored or registered ones.

    Raises :class:`~tessera.errors.TesseraError` subclasses with one line naming the problem.
    """
    from ..registry import create_model, is_model
    from .zoo import is_path_like, is_pretrained_name, pretrained_tags

    if spec is None and checkpoint is None:
        raise ConfigError("name a model (NAME or NAME.TAG) or give a checkpoint")
    if checkpoint is not None:
        text = str(checkpoint)
        if not os.path.exists(text) and is_pretrained_name(text):
            resolved = _entry_model(text, load_weights, overrides)
        elif not os.path.exists(text):
            raise CheckpointError(f"{text}: no such file or directory")
        else:
            resolved = _from_path(Path(text), None if spec is None else str(spec), load_weights, format, use_ema,
                                  overrides, verbose)
    else:
        text = str(spec)
        base, _, tag = text.partition(".")
        if os.path.exists(text) and not (tag and is_pretrained_name(text)):
            resolved = _from_path(Path(text), None, load_weights, format, use_ema, overrides, verbose)
        elif tag and is_model(base) and not is_path_like(text):
            resolved = _entry_model(text, load_weights, overrides)
        elif is_model(text) and default_tag and pretrained_tags(text):
            resolved = _entry_model(text, load_weights, overrides)
        elif is_model(text) and require_weights:
            raise ConfigError(f"{text} has no trained weights: give NAME.TAG (tessera list --pretrained) or a "
                              f"checkpoint")
        elif is_model(text):
            resolved = _finish(create_model(text, **overrides), text, "random weights", None)
        elif is_path_like(text):
            raise CheckpointError(f"{text}: no such file or directory")
        else:
            create_model(text)  # an unknown name: UnknownModelError with the closest names
            raise UnknownModelError(f"unknown model {text!r}")  # pragma: no cover
    if require_weights and resolved.report is None:
        raise ConfigError(f"{resolved.name} has no trained weights: give NAME.TAG (tessera list --pretrained) "
                          f"or a checkpoint")
    if device is not None:
        resolved.model.to(device)
    return resolved


# ---------------------------------------------------------------------------------------
# What the training loop needs from a pretrained source
# ---------------------------------------------------------------------------------------


def _tuples(args: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments read from JSON, whose lists were tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}


@dataclass
class StoredArchitecture:
    """The model a pretrained source records: registered name, arguments, kind of data."""

    name: str
    args: dict[str, Any]
    kind: str


def stored_architecture(source: str | os.PathLike) -> StoredArchitecture | None:
    """The architecture that ``source`` records (published weights, a run, a tessera
    directory), or None for a checkpoint that records none (a foreign file)."""
    from .zoo import get_pretrained, is_pretrained_name

    text = str(source)
    if not os.path.exists(text):
        if is_pretrained_name(text):
            entry = get_pretrained(text)
            return StoredArchitecture(entry.model, dict(entry.args), "video" if entry.video else "image")
        return None
    path = Path(text)
    run = _run_weights(path)
    if run is not None:
        from ..train.checkpoint import read_run_info

        info = read_run_info(run)
        return StoredArchitecture(info["model"], _tuples(info["model_args"]), info["data"].get("kind", "image"))
    config = read_directory_config(path) if path.is_dir() else None
    if config is not None and "format_version" in config and config.get("name"):
        args = _tuples(config["args"])
        kind = "video" if config.get("class") == "VideoSwinTransformer" else \
            (config.get("data") or {}).get("kind", "image")
        return StoredArchitecture(config["name"], args, kind)
    return None


def load_weights_into(model: nn.Module, source: str | os.PathLike, use_ema: bool = False,
                      verbose: bool = True) -> LoadReport:
    """Load any pretrained source into ``model`` (a ``name.tag``, a run directory, a weights
    file or directory of any supported format), adapting it as :func:`load_checkpoint` does."""
    from .zoo import get_pretrained, is_pretrained_name, load_pretrained

    text = str(source)
    if not os.path.exists(text) and is_pretrained_name(text):
        return load_pretrained(model, get_pretrained(text), verbose=verbose)
    path = Path(text)
    run = _run_weights(path) if path.exists() else None
    return load_checkpoint(model, run or path, use_ema=use_ema, verbose=verbose)
