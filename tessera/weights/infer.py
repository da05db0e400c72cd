"""Which model a checkpoint holds, read from the names and shapes of its tensors.

``tessera convert`` uses this to rebuild a Swin or Video Swin checkpoint without being told
the architecture. Everything is read from the converted state dict (tessera's names):

* image or video: the rank of the patch convolution (4-D or 5-D), the patch size from its
  kernel, ``in_chans`` and ``embed_dim`` from its shape;
* ``depths``: the blocks counted per stage; ``num_heads``: each stage's bias-table columns;
* ``window_size``: the bias-table rows (see :func:`tessera.weights.adapt.table_window`);
* ``num_classes``: the head's rows (0 without a head); ``ape``: an ``absolute_pos_embed``;
  ``mlp_ratio``, ``qkv_bias``, ``patch_norm`` from the MLP and the presence of biases/norms;
* image models only: ``img_size``, which fixes which stages clamp their window. It comes from
  a Hugging Face ``config.json`` when there is one, else from the position embedding, else
  from a stage whose table is smaller (clamped), else it is the size at which the last
  stage's map equals the window (224 for window 7, 384 for window 12), as every released
  checkpoint was trained;
* image models only: ``size_rule``, when the weights come from a library with its own
  (torchvision, timm: see :class:`tessera.layers.windows.SizeRule`), given by the format.

When the arguments match a registered model, the result carries its name and its other
arguments (drop rates, ...); otherwise the class and the inferred arguments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..layers.helpers import to_ntuple
from .adapt import PATCH_CONV, TABLE, table_window

#: constructor arguments read from the weights; the others are training settings
STRUCTURE = ("patch_size", "in_chans", "embed_dim", "depths", "num_heads", "window_size", "mlp_ratio",
             "qkv_bias", "patch_norm", "ape", "img_size")
_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
_SIZE_ARGS = ("patch_size", "window_size", "img_size")


@dataclass
class Architecture:
    """A model class, its constructor arguments, and the registered name they match (if any)."""

    cls: type[nn.Module]
    args: dict[str, Any]
    ndim: int
    name: str | None = None

    def build(self, **overrides: Any) -> nn.Module:
        """The model, with ``overrides`` replacing arguments; named after the registered model
        whose structure it still has."""
        args = {**self.args, **overrides}
        try:
            model = self.cls(**args)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot build {self.cls.__name__}: {e}") from None
        model.model_name = match_registered(self.cls, args, self.ndim)[0] if overrides else self.name
        return model


def _normalise(key: str, value: Any, ndim: int) -> Any:
    if value is None:
        return None
    if key in _SIZE_ARGS:
        return to_ntuple(value, ndim, key)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def match_registered(cls: type, args: Mapping[str, Any], ndim: int) -> tuple[str | None, dict[str, Any]]:
    """The registered model of class ``cls`` whose structural arguments equal ``args``
    (preferring one with the same class count) and its full arguments; ``(None, {})`` when
    none does."""
    from ..registry import list_models, model_entrypoint

    wanted = {k: _normalise(k, args.get(k), ndim) for k in STRUCTURE if k in args}
    best: tuple[bool, str, dict[str, Any]] | None = None
    for name in list_models():
        with torch.device("meta"):  # only the arguments are wanted: allocate nothing
            candidate = model_entrypoint(name)()
        defaults = getattr(candidate, "model_args", {})
        if type(candidate) is not cls or any(_normalise(k, defaults.get(k), ndim) != v for k, v in wanted.items()):
            continue
        same_head = defaults.get("num_classes") == args.get("num_classes")
        if best is None or (same_head and not best[0]):
            best = (same_head, name, defaults)
    return (best[1], best[2]) if best else (None, {})


def _stages(sd: Mapping[str, torch.Tensor]) -> list[int]:
    """Blocks per stage, from the ``layers.{i}.blocks.{j}.`` names."""
    blocks: dict[int, set[int]] = {}
    for k in sd:
        if (m := _BLOCK.match(k)) is not None:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(f"the stages found ({sorted(blocks)}) are not numbered 0, 1, ...")
    return [len(blocks[i]) for i in range(len(blocks))]


def _image_size(sd: Mapping[str, torch.Tensor], window: int, patch: tuple[int, ...], tables: list[int],
                hf_config: Mapping[str, Any] | None) -> int | tuple[int, ...]:
    if hf_config and "image_size" in hf_config:
        return hf_config["image_size"]
    if "absolute_pos_embed" in sd:
        tokens = sd["absolute_pos_embed"].shape[1]
        if math.isqrt(tokens) ** 2 == tokens:
            return math.isqrt(tokens) * patch[-1]
    for i, rows in enumerate(tables):  # the official image model clamps a stage whose map <= window
        side = table_window(rows, 2)[0]
        if side < window:
            return side * patch[-1] * 2**i
    return window * patch[-1] * 2 ** (len(tables) - 1)


def infer_architecture(sd: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any] | None = None,
                       size_rule: str | None = None) -> Architecture:
    """The Swin or Video Swin that a state dict in tessera's names was made for.

    Args:
        sd: the converted state dict.
        hf_config: the ``config.json`` of a Hugging Face directory (for its ``image_size``).
        size_rule: the size rule of the library that made the weights (image models).

    Raises :class:`CheckpointError` when the weights are not a Swin's.
    """
    from ..models.swin import SwinTransformer, VideoSwinTransformer

    conv = sd.get(PATCH_CONV)
    if conv is None or conv.dim() not in (4, 5) or f"layers.0.blocks.0.attn.{TABLE}" not in sd:
        raise CheckpointError("cannot tell the architecture: only Swin and Video Swin weights are recognised "
                              "(patch_embed.proj and layers.*.blocks.*.attn); name the model instead")
    ndim = conv.dim() - 2
    depths = _stages(sd)
    tables = [sd[f"layers.{i}.blocks.0.attn.{TABLE}"] for i in range(len(depths))]
    embed_dim = conv.shape[0]
    window = table_window(tables[0].shape[0], ndim)
    fc1 = sd.get("layers.0.blocks.0.mlp.fc1.weight")
    head = sd.get("head.weight")
    args: dict[str, Any] = {
        "patch_size": tuple(conv.shape[2:]),
        "in_chans": conv.shape[1],
        "num_classes": head.shape[0] if head is not None else 0,
        "embed_dim": embed_dim,
        "depths": tuple(depths),
        "num_heads": tuple(t.shape[1] for t in tables),
        "window_size": window,
        "mlp_ratio": fc1.shape[0] / embed_dim if fc1 is not None else 4.0,
        "qkv_bias": "layers.0.blocks.0.attn.qkv.bias" in sd,
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": "absolute_pos_embed" in sd,
    }
    if ndim == 2:
        args["window_size"] = window[0]
        args["img_size"] = _image_size(sd, window[0], args["patch_size"], [t.shape[0] for t in tables], hf_config)
        cls: type[nn.Module] = SwinTransformer
    else:
        cls = VideoSwinTransformer
    name, defaults = match_registered(cls, args, ndim)
    if name is not None:  # the registered arguments, as written there, with this head
        args = {**defaults, "num_classes": args["num_classes"]}
    if ndim == 2 and size_rule is not None:
        args["size_rule"] = size_rule
    return Architecture(cls, args, ndim, name)
