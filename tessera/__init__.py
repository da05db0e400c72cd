"""tessera: hierarchical vision transformers (Swin, Video Swin and the ViT family) on PyTorch.

The names below are imported on first use (PEP 562), so that ``import tessera`` and the
command line start without loading PyTorch until something needs it: ``tessera --help``
answers at once, and ``tessera.create_model`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "create_model": "registry", "is_model": "registry", "list_models": "registry", "register_model": "registry",
    "model_stats": "stats", "load_checkpoint": "weights", "LoadReport": "weights", "save_pretrained": "weights",
    "from_pretrained": "weights", "resolve_model": "weights.resolve", "get_pretrained": "weights.zoo",
    "list_pretrained": "weights.zoo", "label_names": "labels", "data_config": "data.preprocess",
    "eval_transform": "data.preprocess", "train_transform": "data.preprocess",
}
#: sub-packages and modules reachable as attributes (``tessera.errors.ConfigError``)
_SUBMODULES = {"atomic", "backends", "bench", "cli", "data", "errors", "explain", "export", "labels", "layers", "losses",
               "models", "predict", "registry", "stats", "train", "weights"}

__all__ = [
    "create_model", "is_model", "list_models", "register_model", "list_pretrained", "get_pretrained", "model_stats",
    "load_checkpoint", "LoadReport", "save_pretrained", "from_pretrained", "resolve_model", "data_config",
    "eval_transform", "train_transform", "label_names", "__version__",
]

if TYPE_CHECKING:  # for type checkers and editors: the names as if imported eagerly
    from .data.preprocess import data_config, eval_transform, train_transform
    from .labels import label_names
    from .registry import create_model, is_model, list_models, register_model
    from .stats import model_stats
    from .weights import LoadReport, from_pretrained, load_checkpoint, save_pretrained
    from .weights.resolve import resolve_model
    from .weights.zoo import get_pretrained, list_pretrained


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # found once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
