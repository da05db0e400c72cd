"""One registry for every model: ``@register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import ConfigError, TesseraError, UnknownModelError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model function under its own name. The function takes keyword overrides of
    the constructor arguments and returns the model."""
    name = fn.__name__
    if name in _MODELS and _MODELS[name] is not fn:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing the package registers every family)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern``, sorted."""
    _ensure_loaded()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    _ensure_loaded()
    return name in _MODELS


def suggest_models(name: str, n: int = 3) -> list[str]:
    """The registered names closest to ``name``."""
    _ensure_loaded()
    return difflib.get_close_matches(name, list(_MODELS), n=n, cutoff=0.5)


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    _ensure_loaded()
    if name not in _MODELS:
        close = suggest_models(name)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `tessera list` shows them all"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def create_model(
    name: str,
    pretrained: str | os.PathLike | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        pretrained: a checkpoint file or a directory written by ``save_pretrained``; loaded
            with :func:`tessera.load_checkpoint` (any supported format).
        features_only: return a feature-pyramid model instead of a classifier (built with
            the entrypoint's ``features_defaults`` arguments, if it has any).
        out_indices: the stages the pyramid returns.
        **overrides: constructor arguments that replace the variant's defaults
            (``num_classes=10``, ``drop_path_rate=0.1``, ...).

    Raises :class:`~tessera.errors.UnknownModelError` (with the closest names) for an
    unknown name, :class:`~tessera.errors.ConfigError` for arguments the model does not
    take or cannot be built with.
    """
    entrypoint = model_entrypoint(name)
    if features_only:
        # a family's pyramid may be built differently from its classifier (Swin: the official
        # detection and segmentation backbone partitions every stage into windows)
        overrides = {**getattr(entrypoint, "features_defaults", {}), **overrides}
    try:
        model = entrypoint(**overrides)
    except (TypeError, ValueError, RuntimeError) as e:  # an unknown argument, or values that do not fit
        if isinstance(e, TesseraError):
            raise
        given = f" with {', '.join(sorted(overrides))}" if overrides else ""
        raise ConfigError(f"cannot build {name}{given}: {' '.join(str(e).split())}") from e
    model.model_name = name
    if pretrained is not None:
        from .weights import load_checkpoint

        load_checkpoint(model, pretrained)
    if features_only:
        from .models.features import features_model

        model = features_model(model, out_indices=out_indices)
    return model
