"""One registry for every model: ``@register_model``, ``create_model``, ``list_models``."""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
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


def close_names(pattern: str, n: int = 5) -> list[str]:
    """Registered names close to a name or a shell-style pattern that matches none (its
    letters without the wildcards, compared with whole names and with their beginnings;
    case is ignored), closest first."""
    _ensure_loaded()
    core = re.sub(r"[*?\[\]]", "", pattern).lower()
    if not core:
        return []

    def score(name: str) -> float:
        name = name.lower()
        whole = difflib.SequenceMatcher(None, core, name).ratio()
        start = difflib.SequenceMatcher(None, core, name[: len(core)]).ratio()
        return max(whole, start)

    scored = sorted(((score(name), name) for name in _MODELS), key=lambda s: (-s[0], s[1]))
    return [name for value, name in scored[:n] if value >= 0.6]


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    _ensure_loaded()
    if name not in _MODELS:
        close = suggest_models(name)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `tessera list` shows them all"
        raise UnknownModelError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a registered model, with published or local weights.

    Args:
        name: a name from :func:`list_models`, or ``name.tag`` of published weights
            (:func:`tessera.list_pretrained`): the architecture and preprocessing of those
            weights (loaded with ``pretrained=True``).
        pretrained: ``True`` loads the published weights (``name.tag``'s, or the model's
            default tag's); a tag (``"ms_in1k"``) loads that tag's; a path loads a
            checkpoint of any supported format, a weights directory or a run directory
            (its best weights); ``None``/``False``: random weights.
        features_only: return a feature-pyramid model instead of a classifier (built with
            the entrypoint's ``features_defaults`` arguments, if it has any, under the
            ``overrides``).
        out_indices: the stages the pyramid returns.
        **overrides: constructor arguments that replace the variant's (or the weights')
            defaults (``num_classes=10`` re-initialises the head, ``drop_path_rate=0.1``, ...).

    Published weights are downloaded once and cached (:mod:`tessera.weights.hub`); the model
    then has ``pretrained_cfg`` (the entry, with its data config) and its ``default_cfg``
    carries the weights' preprocessing.

    Raises :class:`~tessera.errors.UnknownModelError` (with the closest names) for an
    unknown name or tag, :class:`~tessera.errors.ConfigError` for arguments the model does not
    take or cannot be built with, :class:`~tessera.errors.CheckpointError` for weights that
    cannot be had or do not fit.
    """
    base, _, tag = name.partition(".")
    entrypoint = model_entrypoint(base)
    entry = None
    if tag or pretrained is True or (isinstance(pretrained, str) and _is_tag(base, pretrained)):
        from .weights.zoo import get_pretrained

        if isinstance(pretrained, str) and tag and pretrained != tag:
            raise ConfigError(f"{name} already names its weights; pretrained={pretrained!r} names others")
        entry = get_pretrained(base, tag or (pretrained if isinstance(pretrained, str) else None))
    # a family's pyramid may be built differently from its classifier (Swin: the official
    # detection and segmentation backbone partitions every stage into windows)
    defaults = getattr(entrypoint, "features_defaults", {}) if features_only else {}
    args = {**(entry.args if entry is not None else {}), **defaults, **overrides}
    try:
        model = entrypoint(**args)
    except (TypeError, ValueError, RuntimeError) as e:  # an unknown argument, or values that do not fit
        if isinstance(e, TesseraError):
            raise
        given = f" with {', '.join(sorted(overrides))}" if overrides else ""
        raise ConfigError(f"cannot build {base}{given}: {' '.join(str(e).split())}") from e
    model.model_name = base
    if entry is not None:
        from .weights.zoo import describe_model, load_pretrained

        describe_model(model, entry)
        if pretrained:
            model.load_report = load_pretrained(model, entry)
    elif pretrained not in (None, False):
        from .weights.resolve import load_weights_into

        model.load_report = load_weights_into(model, pretrained)
    if features_only:
        from .models.features import features_model

        model = features_model(model, out_indices=out_indices)
    return model


def _is_tag(model: str, text: str) -> bool:
    """``text`` is a tag of ``model``'s published weights (and not a file that exists)."""
    from .weights.zoo import pretrained_tags

    return not os.path.exists(text) and text in pretrained_tags(model)
