"""Which model a checkpoint holds, read from the names and shapes of its tensors.

``tessera convert`` uses this to rebuild a Swin, Swin V2 or Video Swin checkpoint without
being told the architecture. Everything is read from the converted state dict (tessera's
names):

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

Swin V2 (``cpb_mlp`` instead of bias tables) reads ``num_heads`` from the last layer of each
stage's ``cpb_mlp``, and the window of each stage from its ``relative_coords_table``, which
official and torchvision checkpoints carry: its shape gives the window, its largest
coordinate the window it was normalised by (``pretrained_window_sizes``). A Hugging Face
``config.json`` gives both. timm saves no table: such a checkpoint does not say its window,
and the model must be named.

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
             "qkv_bias", "patch_norm", "ape", "img_size", "pretrained_window_sizes")
_BLOCK = re.compile(r"layers\.(\d+)\.blocks\.(\d+)\.")
CPB = "cpb_mlp.2.weight"  # Swin V2's position-bias MLP, (heads, hidden)
COORDS = "relative_coords_table"
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


def _normalise(key: str, value: Any, ndim: int, stages: int = 4) -> Any:
    if value is None:
        return None
    if key in _SIZE_ARGS:
        return to_ntuple(value, ndim, key)
    if key == "pretrained_window_sizes":  # one int for every stage, or one per stage
        return to_ntuple(value, stages, key)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return value


_REGISTERED: dict[str, tuple[type, dict[str, Any]]] = {}


def registered_args(name: str) -> tuple[type, dict[str, Any]]:
    """The class and every constructor argument of the registered model ``name`` (built once
    on the ``meta`` device: only the arguments are wanted, nothing is allocated)."""
    from ..registry import model_entrypoint

    if name not in _REGISTERED:
        with torch.device("meta"):
            model = model_entrypoint(name)()
        _REGISTERED[name] = (type(model), getattr(model, "model_args", {}))
    kind, args = _REGISTERED[name]
    return kind, dict(args)


def match_registered(cls: type, args: Mapping[str, Any], ndim: int) -> tuple[str | None, dict[str, Any]]:
    """The registered model of class ``cls`` whose structural arguments equal ``args``
    (preferring one with the same class count) and its full arguments; ``(None, {})`` when
    none does."""
    from ..registry import list_models

    stages = len(args.get("depths", ())) or 4
    wanted = {k: _normalise(k, args.get(k), ndim, stages) for k in STRUCTURE if k in args}
    best: tuple[bool, str, dict[str, Any]] | None = None
    for name in list_models():
        kind, defaults = registered_args(name)
        if kind is not cls or any(_normalise(k, defaults.get(k), ndim, stages) != v for k, v in wanted.items()):
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

    if f"layers.0.blocks.0.attn.{CPB}" in sd:
        return _infer_swin_v2(sd, hf_config)
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


# ---------------------------------------------------------------------------------------
# Swin V2
# ---------------------------------------------------------------------------------------


def _coords_window(table: torch.Tensor) -> tuple[int, int]:
    """``(window, normaliser)`` of a square V2 coordinate table ``(1, 2W-1, 2W-1, 2)``: its
    largest coordinate ``log2(8 (W - 1) / (P - 1) + 1) / 3`` gives ``P``; 0 when ``P`` is the
    window itself (no pretrained window)."""
    if table.dim() != 4 or table.shape[1] != table.shape[2] or table.shape[1] % 2 == 0:
        raise CheckpointError(f"a Swin V2 coordinate table of shape {tuple(table.shape)} is not a square window's")
    window = (table.shape[1] + 1) // 2
    if window == 1:
        return 1, 0
    top = float(table[0, -1, 0, 0])  # offset W - 1 along the first axis
    span = 8 * (window - 1) / (2 ** (3 * top) - 1)
    pretrained = round(span) + 1
    return window, 0 if pretrained == window else pretrained


def _infer_swin_v2(sd: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any] | None) -> Architecture:
    from ..models.swin_v2 import SwinTransformerV2

    conv = sd.get(PATCH_CONV)
    if conv is None or conv.dim() != 4:
        raise CheckpointError("a Swin V2 checkpoint without a 2-D patch embedding (patch_embed.proj.weight)")
    depths = _stages(sd)
    embed_dim = conv.shape[0]
    fc1 = sd.get("layers.0.blocks.0.mlp.fc1.weight")
    head = sd.get("head.weight")
    args: dict[str, Any] = {
        "patch_size": tuple(conv.shape[2:]),
        "in_chans": conv.shape[1],
        "num_classes": head.shape[0] if head is not None else 0,
        "embed_dim": embed_dim,
        "depths": tuple(depths),
        "num_heads": tuple(sd[f"layers.{i}.blocks.0.attn.{CPB}"].shape[0] for i in range(len(depths))),
        "mlp_ratio": fc1.shape[0] / embed_dim if fc1 is not None else 4.0,
        "qkv_bias": "layers.0.blocks.0.attn.q_bias" in sd,
        "patch_norm": "patch_embed.norm.weight" in sd,
        "ape": "absolute_pos_embed" in sd,
    }
    tables = [sd.get(f"layers.{i}.blocks.0.attn.{COORDS}") for i in range(len(depths))]
    patch = args["patch_size"][-1]
    if hf_config and "window_size" in hf_config:
        args["window_size"] = hf_config["window_size"]
        args["pretrained_window_sizes"] = tuple(hf_config.get("pretrained_window_sizes") or (0,) * len(depths))
        args["img_size"] = hf_config.get("image_size", args["window_size"] * patch * 2 ** (len(depths) - 1))
    elif all(t is not None for t in tables):
        found = [_coords_window(t) for t in tables]
        windows = [w for w, _ in found]
        args["window_size"] = windows[0]
        args["pretrained_window_sizes"] = tuple(p for _, p in found)
        args["img_size"] = _image_size(sd, windows[0], args["patch_size"], [(2 * w - 1) ** 2 for w in windows],
                                       hf_config)
    else:
        from ..registry import list_models

        same = [n for n in list_models("swinv2*") if _same_structure(n, args)]
        hint = f" (registered with these weights' shapes: {', '.join(same)})" if same else ""
        raise CheckpointError("a Swin V2 checkpoint without coordinate tables (as timm saves them) does not say its "
                              f"window: name the model{hint}")
    name, defaults = match_registered(SwinTransformerV2, args, 2)
    if name is not None:
        args = {**defaults, "num_classes": args["num_classes"]}
    return Architecture(SwinTransformerV2, args, 2, name)


def _same_structure(name: str, args: Mapping[str, Any]) -> bool:
    """Whether the registered ``name`` has the shapes ``args`` read from weights (window,
    size and pretrained windows aside: weights do not show them)."""
    defaults = registered_args(name)[1]
    return all(_normalise(k, defaults.get(k), 2) == _normalise(k, v, 2) for k, v in args.items()
               if k in STRUCTURE)


#: arguments that change neither the shapes of the weights nor what they are trained for
#: (dropout rates, the head's size, numerical details a port may set differently)
NOT_STRUCTURAL = ("drop_rate", "drop_path_rate", "attn_drop_rate", "proj_drop_rate", "num_classes", "act_layer",
                  "norm_eps", "embed_norm_eps")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b) and \
            all(_same(x, y) for x, y in zip(a, b))
    return a == b


def match_arguments(cls: type, args: Mapping[str, Any]) -> str | None:
    """The registered model of class ``cls`` whose arguments equal ``args`` except
    :data:`NOT_STRUCTURAL` ones (any family), or None."""
    from ..registry import list_models

    for name in list_models():
        model_cls, defaults = registered_args(name)
        if model_cls is not cls:
            continue
        if all(_same(defaults.get(k), v) for k, v in args.items() if k not in NOT_STRUCTURAL and k in defaults):
            return name
    return None
