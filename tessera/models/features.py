"""Feature pyramids for detection and segmentation: ``create_model(name, features_only=True)``.

:func:`features_model` wraps a classification model into one whose ``forward`` returns the
maps of the stages ``out_indices``, channels first (``(B, C_i, H_i, W_i)``, or
``(B, C_i, T_i, H_i, W_i)`` for videos), each normalised, and whose ``feature_info``
(:class:`FeatureInfo`) gives the channels and reduction of each output.

The contract a model family meets to get this:

* ``feature_info``: a list with one dict per stage, ``num_chs`` (channels), ``reduction``
  (spatial stride from the input), ``module`` (the name of the stage's submodule); video
  models add ``temporal_reduction``.
* ``forward_intermediates(x)``: the list of every stage's map, channels first, in the order
  of ``feature_info``. When it accepts ``channels_last=True`` it is asked for channels-last
  maps (saving two transposes around each norm).
* ``intermediates_normalized = True`` when those maps are already normalised; otherwise the
  wrapper adds one fresh ``LayerNorm`` over channels per output, named ``norm{i}`` after the
  stage index, as the official Swin detection and segmentation backbones do (the last one
  included: they never use the classifier's final ``norm``).
  ``last_norm_from_classifier=True`` starts the last stage's norm from the model's final
  ``norm`` instead, so that the last output of a classification checkpoint is exactly its
  ``forward_features`` (not what the official backbones do).
* optionally ``prune_intermediate_layers(indices)``: removes what the outputs do not need
  (later stages, final norm, head), so the pyramid stops early; without it the wrapper only
  drops the head (``reset_classifier(0)``) and runs every stage.
* optionally ``no_weight_decay()``, passed on (the names are the model's own, see below).

The pyramid adopts the model's parts as its own (as timm's feature wrappers do): its state
dict holds the model's names (``patch_embed.*``, ``layers.*``) plus ``norm{i}.*``, the layout
of the official backbones, so their weights load with no renaming. ``pyramid.model`` is the
wrapped model (not a submodule).

Weights are loaded into the classification model before it is wrapped (``create_model``
does this), so every checkpoint that loads into the classifier gives its pyramid.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


class FeatureInfo(list):
    """One dict per output (``num_chs``, ``reduction``, ``module``), with timm's helpers."""

    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self]

    def reduction(self) -> list[int]:
        return [f["reduction"] for f in self]

    def module_name(self) -> list[str]:
        return [f["module"] for f in self]


class FeaturesModel(nn.Module):
    """A pyramid of normalised stage maps of ``model`` (see the module docstring).

    Shape: ``(B, C_in, *S) -> [(B, C_i, *S / reduction_i) for i in out_indices]``.
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None,
                 last_norm_from_classifier: bool = False) -> None:
        super().__init__()
        stages = getattr(model, "feature_info", None)
        if not stages or not hasattr(model, "forward_intermediates"):
            raise ConfigError(f"{type(model).__name__} has no feature pyramid (feature_info and forward_intermediates)")
        indices = _resolve(out_indices, len(stages))
        self.out_indices = indices
        self.feature_info = FeatureInfo(dict(stages[i]) for i in indices)
        self.model_name = getattr(model, "model_name", None)
        self.default_cfg = getattr(model, "default_cfg", None)  # the input the model expects

        norms = {}
        if not getattr(model, "intermediates_normalized", False):
            for i in indices:
                norms[i] = nn.LayerNorm(stages[i]["num_chs"])
            final, last = getattr(model, "norm", None), len(stages) - 1
            if last_norm_from_classifier and last in norms:
                if not isinstance(final, nn.LayerNorm) or final.normalized_shape != norms[last].normalized_shape:
                    raise ConfigError(f"{type(model).__name__} has no final LayerNorm of the last stage's width")
                norms[last].load_state_dict(final.state_dict())
        if hasattr(model, "prune_intermediate_layers"):
            model.prune_intermediate_layers(indices)
        elif hasattr(model, "reset_classifier"):
            model.reset_classifier(0)
        object.__setattr__(self, "model", model)  # not a submodule: its parts are adopted below
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buf in model.named_buffers(recurse=False):
            self.register_buffer(name, buf, persistent=name not in model._non_persistent_buffers_set)
        for i, norm in norms.items():
            self.add_module(f"norm{i}", norm)
        self._channels_last = "channels_last" in inspect.signature(model.forward_intermediates).parameters

    def _apply(self, fn, recurse: bool = True):
        # .to(), .half(), ...: the adopted modules are shared, but converted tensors of the
        # model itself may be new objects; the model keeps using the pyramid's
        super()._apply(fn, recurse)
        for name in self.model._parameters:
            self.model._parameters[name] = self._parameters[name]
        for name in self.model._buffers:
            self.model._buffers[name] = self._buffers[name]
        return self

    def train(self, mode: bool = True) -> FeaturesModel:
        super().train(mode)
        self.model.training = mode
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        kwargs: dict[str, Any] = {"channels_last": True} if self._channels_last else {}
        maps = self.model.forward_intermediates(x, **kwargs)
        outs = []
        for i in self.out_indices:
            y = maps[i]
            norm = getattr(self, f"norm{i}", None)
            if self._channels_last:
                y = (norm(y) if norm is not None else y).movedim(-1, 1)
            elif norm is not None:
                y = norm(y.movedim(1, -1)).movedim(-1, 1)
            outs.append(y)
        return outs

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if hasattr(self.model, "set_grad_checkpointing"):
            self.model.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        return set(self.model.no_weight_decay()) if hasattr(self.model, "no_weight_decay") else set()

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report: Any) -> dict[str, torch.Tensor]:
        """Weights in the classifier's names fit the pyramid as they are (the same names); the
        model's own adaptation (resized tables, inflation) applies."""
        adapt = getattr(self.model, "adapt_checkpoint", None)
        return adapt(state_dict, report) if adapt is not None else state_dict


def _resolve(out_indices: Sequence[int] | None, count: int) -> tuple[int, ...]:
    if out_indices is None:
        return tuple(range(count))
    if isinstance(out_indices, int):
        out_indices = (out_indices,)
    resolved = []
    for i in out_indices:
        if not -count <= i < count:
            raise ConfigError(f"out_indices {tuple(out_indices)}: the model has {count} stages (0..{count - 1})")
        resolved.append(i % count)
    if len(set(resolved)) != len(resolved):
        raise ConfigError(f"out_indices {tuple(out_indices)} name a stage twice")
    return tuple(sorted(resolved))


def features_model(model: nn.Module, out_indices: Sequence[int] | None = None,
                   last_norm_from_classifier: bool = False) -> FeaturesModel:
    """Wrap ``model`` into a feature pyramid of the stages ``out_indices`` (all by default;
    negative indices count from the last stage); see :class:`FeaturesModel`."""
    return FeaturesModel(model, out_indices, last_norm_from_classifier)
