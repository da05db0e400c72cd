"""tessera's own weights format, and conversion of any supported checkpoint into it.

A directory holds two files:

* ``config.json``: ``{"name": <registered name or null>, "class": <model class>,
  "args": <every constructor argument>, "format_version": 1}``, enough to rebuild the model;
* ``model.safetensors``: the state dict (no pickles, so loading it never runs code).

Both are written atomically (a temporary file in the same directory, flushed and synced,
then renamed over the target), weights first, so a directory with a ``config.json`` always
has complete weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_path, write_text_atomic
from ..errors import CheckpointError, ConfigError
from ..registry import create_model
from .adapt import PATCH_CONV
from .infer import infer_architecture
from .io import CONFIG_NAME, read_directory_config
from .load import LoadReport, apply_state_dict, load_checkpoint, naming, read_converted

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as safetensors wants it: contiguous CPU tensors, none sharing memory."""
    out, storages = {}, set()
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if value.numel() and value.untyped_storage().data_ptr() in storages:
            value = value.clone()  # tied weights: saved twice, tied again by whoever ties them
        storages.add(value.untyped_storage().data_ptr())
        out[key] = value
    return out


def save_pretrained(model: nn.Module, directory: str | os.PathLike, classes: list[str] | None = None,
                    data: Mapping[str, Any] | None = None, label_set: str | None = None) -> Path:
    """Write ``model`` to ``directory`` (created if needed) in tessera's format: its config
    (class, registered name, every constructor argument) and its weights; with them, what the
    model predicts (``label_set``, one of :mod:`tessera.labels`, or the ``classes`` names) and
    how its input is prepared (``data``, a data config), when given.

    Returns the directory. Raises :class:`ConfigError` for a model that cannot be rebuilt
    from JSON (not a tessera model, or arguments that are not JSON values).
    """
    args = getattr(model, "model_args", None)
    if args is None:
        raise ConfigError(f"save_pretrained takes a tessera model, got {type(model).__name__}")
    bad = [k for k, v in args.items() if not _is_json(v)]
    if bad:
        raise ConfigError(f"cannot save {type(model).__name__}: arguments {', '.join(bad)} are not JSON values")
    config = {"name": getattr(model, "model_name", None), "class": type(model).__name__, "args": args,
              "format_version": FORMAT_VERSION}
    if label_set is not None:
        config["label_set"] = label_set
    elif classes is not None:
        config["classes"] = list(classes)
    if data is not None:
        config["data"] = {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # (a file higher up the path is the OS's NotADirectoryError, said as such)
        raise CheckpointError(f"{directory}: exists and is not a directory") from None
    from safetensors.torch import save_file

    tensors = _tensors(model)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    text = _config_text(config)
    write_text_atomic(directory / CONFIG_NAME, text)
    return directory


def _config_text(config: Mapping[str, Any]) -> str:
    """JSON with one line per entry (and per argument), lists kept on their line."""
    lines = []
    for key, value in config.items():
        if isinstance(value, dict) and value:
            inner = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f"  {json.dumps(key)}: {{\n{inner}\n  }}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _is_json(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str))


def _model_class(name: str, where: Path) -> type[nn.Module]:
    from .. import models  # noqa: F401  (imports every family)
    from ..models.base import TesseraModel

    pending, seen = [TesseraModel], {}
    while pending:
        cls = pending.pop()
        seen[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    if name not in seen:
        raise CheckpointError(f"{where}: unknown model class {name!r}")
    return seen[name]


def from_pretrained(directory: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Rebuild a model written by :func:`save_pretrained` and load its weights.

    ``overrides`` replace constructor arguments (``num_classes=10`` re-initialises the head;
    another ``window_size`` resizes the bias tables).
    """
    model = build_from_config(directory, **overrides)
    load_checkpoint(model, directory, format="tessera", strict=True)
    return model


def build_from_config(directory: str | os.PathLike, **overrides: Any) -> nn.Module:
    """The model described by the ``config.json`` of a :func:`save_pretrained` directory,
    freshly initialised."""
    directory = Path(directory)
    config = read_directory_config(directory)
    file = directory / CONFIG_NAME
    if config is None:
        problem = "no such directory" if not directory.is_dir() else f"no {CONFIG_NAME} in it"
        raise CheckpointError(f"{directory}: {problem} (not written by save_pretrained)")
    missing = [k for k in ("class", "args", "format_version") if k not in config]
    if missing:
        raise CheckpointError(f"{file}: not a tessera config (no {', '.join(missing)})")
    if not isinstance(config["format_version"], int) or config["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{file}: format_version {config['format_version']!r} is not one this tessera "
                              f"reads (up to {FORMAT_VERSION}); upgrade tessera")
    if not isinstance(config["args"], dict):
        raise CheckpointError(f"{file}: 'args' must be a JSON object")
    cls = _model_class(str(config["class"]), file)
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in config["args"].items()}  # JSON has no tuples
    try:
        model = cls(**{**args, **overrides})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build {cls.__name__} from {file}: {e}") from None
    model.model_name = config.get("name")
    return model


# ---------------------------------------------------------------------------------------
# Converting any supported checkpoint into tessera's format
# ---------------------------------------------------------------------------------------


def convert_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    model: str | None = None,
    format: str | None = None,
    use_ema: bool = False,
    verbose: bool = True,
    **overrides: Any,
) -> tuple[nn.Module, LoadReport]:
    """Convert a checkpoint of any supported format into tessera's format at ``destination``.

    Args:
        source: a checkpoint file or directory.
        destination: the directory to write.
        model: a registered name to build; by default the architecture is read from the
            weights (:func:`tessera.weights.infer.infer_architecture`), or from the config of
            a tessera directory. A named model keeps the checkpoint's class count unless
            ``num_classes`` is given.
        format: force the source format instead of detecting it.
        use_ema: take the EMA weights of a training checkpoint.
        verbose: warn in the log at once of what changed the weights (a new head, an
            inflation); ``False`` when the caller shows the returned report itself.
        **overrides: constructor arguments that replace the inferred or registered ones.

    Returns: the model (with the weights loaded) and the load report.
    """
    sd, report = read_converted(source, format, use_ema)
    report.quiet = not verbose
    if model is None and report.format == "tessera" and read_directory_config(source):
        net = build_from_config(source, **overrides)  # tessera's own directory says what it is
    elif model is None:
        with naming(report.source):
            architecture = infer_architecture(sd, read_directory_config(source), report.size_rule)
        net = architecture.build(**overrides)
    else:
        head = sd.get("head.weight")
        if head is not None and "num_classes" not in overrides:
            overrides = {**overrides, "num_classes": head.shape[0]}
        if report.size_rule is not None and "size_rule" not in overrides and _takes_size_rule(model):
            overrides = {**overrides, "size_rule": report.size_rule}  # the weights' library's windows
        net = create_model(model, **overrides)
    rule = getattr(net, "size_rule", None)
    if report.size_rule is not None and rule == report.size_rule:
        report.notes.append(f"size_rule={rule!r}: at sizes the official code refuses, windows fit the maps as "
                            f"{rule} fits them (saved in the config)")
    return _save_loaded(net, sd, report, destination)


def _takes_size_rule(name: str) -> bool:
    """Whether the registered model ``name`` has a ``size_rule`` argument (image Swins)."""
    from ..registry import model_entrypoint

    with torch.device("meta"):  # only the arguments are wanted: allocate nothing
        return "size_rule" in getattr(model_entrypoint(name)(), "model_args", {})


def inflate_checkpoint(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    model: str,
    format: str | None = None,
    use_ema: bool = False,
    source_name: str | None = None,
    verbose: bool = True,
    **overrides: Any,
) -> tuple[nn.Module, LoadReport]:
    """Inflate an image checkpoint (a file, a directory or a state dict, named
    ``source_name`` in messages) into the registered video model ``model`` (see
    :func:`tessera.weights.adapt.inflate_image_to_video`) and write it in tessera's format.
    The video model keeps its own class count unless ``num_classes`` is given; ``verbose``
    as for :func:`convert_checkpoint`."""
    net = create_model(model, **overrides)
    conv = net.state_dict().get(PATCH_CONV)
    if conv is None or conv.dim() != 5:
        raise ConfigError(f"{model} is not a video model with a 3-D patch embedding; inflation needs one")
    sd, report = read_converted(source, format, use_ema)
    report.source = source_name or report.source
    report.quiet = not verbose
    image_conv = sd.get(PATCH_CONV)
    if image_conv is None or image_conv.dim() != 4:
        shape = "none" if image_conv is None else tuple(image_conv.shape)
        raise CheckpointError(f"{report.source}: not an image checkpoint (its patch embedding is {shape}, expected 4-D)")
    return _save_loaded(net, sd, report, destination)


def _save_loaded(
    model: nn.Module, sd: dict[str, torch.Tensor], report: LoadReport, destination: str | os.PathLike
) -> tuple[nn.Module, LoadReport]:
    apply_state_dict(model, sd, report)
    save_pretrained(model, destination)
    return model, report
