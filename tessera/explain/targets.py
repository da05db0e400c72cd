"""Where a CAM is taken in each model family, and how a layer's output becomes a map.

A layer's output is one of three layouts:

* ``channels_last`` grids ``(B, *grid, C)`` (Swin and Video Swin blocks, PVT v2 stages);
* ``channels_first`` maps ``(B, C, *grid)`` (convolutions, BatchNorm, Shuffle blocks);
* ``tokens`` ``(B, prefix + N, C)`` (the ViT family, CvT, PVT, LeViT): the prefix tokens
  (class, distillation) are dropped and the ``N`` patch tokens put back on their grid.

Each family has a default layer (:func:`default_layer`), following what is known to give
localised maps: for Swin a block's ``norm2`` (for Swin V2, whose ``norm2`` normalises
only the MLP branch, the block's output), whose CAM is localised, where ``norm1`` gives
a background-heavy one (torchvision's Swin-T: 7x7 maps), in the last block of the last stage
whose map is at least :data:`MIN_CAM_SIDE` tokens a side for the input (the last stage at the
official sizes; an earlier one for small inputs, whose last stages are a few tokens
wide and mix them all in one window); for the ViT family the last block's ``norm1``, the
input of the attention through which the class token reads the patches; for the
convolutional hybrids the end of their last stage. Any layer can be named instead, with
negative indices counted from the end (``layers.-1.blocks.0.norm1``).

A map cell of a layer covers ``stride`` input pixels per axis (:func:`layer_stride`): the
CAM is upsampled to ``grid * stride`` and cut to the input, which is exact where the model
pads its input at the end (Swin, the ViT family).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import TesseraError


class ExplainError(TesseraError, ValueError):
    """An explanation that cannot be made: a layer that does not exist or gives no map, a
    method the model has no use for, a query outside the input."""


# ---------------------------------------------------------------------------------------
# Layer names
# ---------------------------------------------------------------------------------------


def resolve_layer(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """``(canonical name, module)`` of ``name`` in ``model``; indices into module lists may
    be negative (``layers.-1.blocks.-1.norm2``)."""
    module, parts = model, []
    for part in name.split("."):
        children = dict(module.named_children())
        if re.fullmatch(r"-\d+", part) and isinstance(module, (nn.ModuleList, nn.Sequential)):
            index = int(part) + len(module)
            part = str(index) if 0 <= index < len(module) else part
        if part not in children:
            near = ", ".join(list(children)[:12]) or "none"
            where = ".".join(parts) or type(model).__name__
            raise ExplainError(f"no layer {name!r}: {where} has no child {part!r} (its children: {near})")
        module = children[part]
        parts.append(part)
    return ".".join(parts), module


# ---------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """How a model family is explained.

    Attributes:
        name: the family, as messages name it.
        default_layer: ``(model, input size)`` -> the name of its default CAM layer.
        layout: the layout of its layers' outputs (see the module docstring).
        stride: ``(model, layer name) -> stride per axis`` of that layer's map, or ``None``
            where unknown (the CAM is then resized to the input).
        rollout: how attention rollout reads it (``"vit"``, ``"cait"``, ``"ceit"``), or
            ``None`` when it has no class token to roll out.
    """

    name: str
    default_layer: Callable[[nn.Module, Sequence[int]], str]
    layout: str
    stride: Callable[[nn.Module, str], tuple[int, ...] | None]
    rollout: str | None = None


def _stage_of(name: str, pattern: str, base: int = 0) -> int | None:
    match = re.match(pattern, name)
    return int(match.group(1)) - base if match else None


#: the smallest map side (in tokens) at which Swin's default CAM layer is taken
MIN_CAM_SIDE = 7


def _swin_layer(model, input_size: Sequence[int]) -> str:
    """The last block's ``norm2`` (Swin V2: the block's output) of the last stage whose map is
    at least MIN_CAM_SIDE a side."""
    from .attention import swin_stage_grid

    stage = 0
    for i in range(len(model.layers)):
        if min(swin_stage_grid(model, input_size, i)[-2:]) >= MIN_CAM_SIDE:
            stage = i
    return swin_stage_layer(model, stage)


def swin_stage_layers(model) -> list[str]:
    """The CAM layer of every stage of a Swin (2D or video, V1 or V2), finest first: what
    :func:`default_layer` chooses among."""
    return [swin_stage_layer(model, stage) for stage in range(len(model.layers))]


def swin_block_layers(model) -> list[str]:
    """The CAM layer of every block of a Swin, finest first (a stage's last one is its
    :func:`swin_stage_layer`)."""
    return [swin_block_layer(model, stage, block) for stage in range(len(model.layers))
            for block in range(len(model.layers[stage].blocks))]


def swin_stage_layer(model, stage: int) -> str:
    """Stage ``stage``'s CAM layer: its last block's ``norm2`` (Swin V2: the block's output)."""
    return swin_block_layer(model, stage, len(model.layers[stage].blocks) - 1)


def swin_block_layer(model, stage: int, block: int) -> str:
    """The CAM layer of block ``block`` of stage ``stage``: its ``norm2`` (Swin V2: the
    block's output)."""
    if getattr(model.layers[stage].blocks[block], "post_norm", False):
        # Swin V2's norm2 normalises the MLP branch only (x + norm2(mlp(x))): the block's
        # output, the stream itself, is its counterpart of V1's normalised stream
        return f"layers.{stage}.blocks.{block}"
    return f"layers.{stage}.blocks.{block}.norm2"


def _swin_stride(model, name: str) -> tuple[int, ...]:
    stage = _stage_of(name, r"layers\.(\d+)")
    if stage is None:
        stage = 0 if name.startswith(("patch_embed", "pos_drop")) or not name else model.num_layers - 1
    elif ".downsample" in name:
        stage += 1  # the merging at the end of a stage gives the next stage's grid
    patch = model.patch_size
    spatial = tuple(p * 2**stage for p in patch[-2:])
    return (patch[0], *spatial) if len(patch) == 3 else spatial


def _pyramid_stride(pattern: str, first: int, base: int = 0) -> Callable[[nn.Module, str], tuple[int, int] | None]:
    """Stage ``i`` (from a name matching ``pattern``) at ``first * 2**i``."""

    def stride(model, name: str) -> tuple[int, int] | None:
        stage = _stage_of(name, pattern, base)
        if stage is None:
            return None
        return (first * 2**stage,) * 2

    return stride


def _cvt_stride(model, name: str) -> tuple[int, int] | None:
    stage = _stage_of(name, r"stage(\d+)")
    if stage is None:
        return None
    s = math.prod(st.patch_embed.proj.stride[0] for st in model.stages[: stage + 1])
    return (s, s)


def _levit_stride(model, name: str) -> tuple[int, int] | None:
    stage = _stage_of(name, r"stages\.(\d+)")
    return None if stage is None else (model.patch_size * 2**stage,) * 2


def _patch_stride(model, name: str) -> tuple[int, int]:
    return tuple(model.patch_size)


def _last(model: nn.Module, *path: str) -> str:
    """The name of the last entry of a chain of module lists: ``_last(m, "layers", "blocks")``."""
    names, module = [], model
    for part in path:
        if part.startswith("."):  # a plain attribute
            names.append(part[1:])
            module = getattr(module, part[1:])
            continue
        seq = getattr(module, part)
        names += [part, str(len(seq) - 1)]
        module = seq[-1]
    return ".".join(names)


def _families() -> list[tuple[type, Family]]:
    """Families by class, most specific first."""
    from ..models.cait import CaiT
    from ..models.ceit import CeiT
    from ..models.cvt import CvT
    from ..models.levit import LeViT
    from ..models.pvt import PyramidVisionTransformer
    from ..models.pvt_v2 import PyramidVisionTransformerV2
    from ..models.shuffle import ShuffleTransformer
    from ..models.swin import _SwinBase
    from ..models.vit import VisionTransformer

    return [
        (_SwinBase, Family("Swin", _swin_layer, "channels_last", _swin_stride)),
        (ShuffleTransformer, Family("Shuffle Transformer", lambda m, s: _last(m, "stages", "blocks") + ".norm3",
                                    "channels_first", _pyramid_stride(r"stages\.(\d+)", 4))),
        (CaiT, Family("CaiT", lambda m, s: _last(m, "blocks") + ".norm1", "tokens", _patch_stride, "cait")),
        (VisionTransformer, Family("ViT", lambda m, s: _last(m, "blocks") + ".norm1", "tokens", _patch_stride, "vit")),
        (CeiT, Family("CeiT", lambda m, s: _last(m, "blocks") + ".norm1", "tokens",
                      lambda m, name: (4 * m.patch_size,) * 2, "ceit")),
        (CvT, Family("CvT", lambda m, s: f"stage{m.num_stages - 1}." + _last(m.stages[-1], "blocks") + ".norm1",
                     "tokens", _cvt_stride)),
        (PyramidVisionTransformer, Family("PVT", lambda m, s: _last(m, f"block{m.num_stages}") + ".norm1", "tokens",
                                          _pyramid_stride(r"block(\d+)", 4, base=1))),
        (PyramidVisionTransformerV2, Family("PVT v2", lambda m, s: f"stages.{len(m.stages) - 1}", "channels_last",
                                            _pyramid_stride(r"stages\.(\d+)", 4))),
        (LeViT, Family("LeViT", lambda m, s: f"stages.{len(m.stages) - 1}", "tokens", _levit_stride)),
    ]


def family_of(model: nn.Module) -> Family:
    """The family of a tessera model (a :class:`ExplainError` for any other model)."""
    for cls, family in _families():
        if isinstance(model, cls):
            return family
    raise ExplainError(f"{type(model).__name__} is not a tessera model family that can be explained")


def default_layer(model: nn.Module, input_size: Sequence[int] | None = None) -> str:
    """The name of the family's default CAM layer for an input of ``input_size`` (``(H, W)``
    or ``(T, H, W)``; default the model's own), see the module docstring."""
    if input_size is None:
        input_size = tuple(model.default_cfg["input_size"][1:])
    return family_of(model).default_layer(model, tuple(input_size))


def is_video_model(model: nn.Module) -> bool:
    return getattr(model, "ndim", 2) == 3


# ---------------------------------------------------------------------------------------
# Layer outputs as maps
# ---------------------------------------------------------------------------------------

_CHANNELS_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.modules.pooling._MaxPoolNd,
                   nn.modules.pooling._AvgPoolNd)


def layout_of(model: nn.Module, module: nn.Module, output: torch.Tensor) -> str:
    """The layout of ``module``'s ``output`` (see the module docstring)."""
    spatial = 3 if is_video_model(model) else 2
    if output.dim() == 3:
        return "tokens"
    if output.dim() != spatial + 2:
        raise ExplainError(f"a layer output of shape {tuple(output.shape)} is no map of the input")
    if isinstance(module, _CHANNELS_FIRST):
        return "channels_first"
    layout = family_of(model).layout
    return "channels_last" if layout == "tokens" else layout


def token_grid(num_tokens: int, input_size: Sequence[int], stride: Sequence[int] | None,
               max_prefix: int = 2) -> tuple[int, tuple[int, ...]]:
    """``(prefix tokens, grid)`` of ``num_tokens`` tokens of a 2-D input: the grid is the
    input divided by the stride (rounded down or up per axis, as padding or convolutions
    make it) whose size leaves at most ``max_prefix`` tokens in front; without a stride,
    the factorisation whose aspect is the input's."""
    h, w = input_size
    if stride is not None:
        options = {(a, b) for a in {h // stride[0], -(-h // stride[0])} for b in {w // stride[1], -(-w // stride[1])}}
        fits = sorted((num_tokens - a * b, (a, b)) for a, b in options if 0 <= num_tokens - a * b <= max_prefix)
        if fits:
            return fits[0]
    best = None
    for prefix in range(max_prefix + 1):
        n = num_tokens - prefix
        for a in range(1, math.isqrt(n) + 1) if n > 0 else ():
            if n % a:
                continue
            for gh, gw in ((a, n // a), (n // a, a)):
                error = abs(math.log(gh / gw) - math.log(h / w))
                if best is None or error < best[0] - 1e-9:
                    best = (error, prefix, (gh, gw))
    if best is None:
        raise ExplainError(f"{num_tokens} tokens cannot be laid out on a grid")
    return best[1], best[2]


def to_map(output: torch.Tensor, layout: str, input_size: Sequence[int],
           stride: Sequence[int] | None) -> torch.Tensor:
    """A layer output as a channels-first map ``(B, C, *grid)``; prefix tokens dropped."""
    if layout == "channels_first":
        return output
    if layout == "channels_last":
        return output.movedim(-1, 1)
    b, n, c = output.shape
    prefix, grid = token_grid(n, input_size, stride)
    return output[:, prefix:].transpose(1, 2).reshape(b, c, *grid)


def upsample(maps: torch.Tensor, input_size: Sequence[int], stride: Sequence[int] | None) -> torch.Tensor:
    """``(B, *grid)`` maps to the input's size ``(B, *input_size)``: each cell covers
    ``stride`` pixels (interpolated between cell centres: bilinear, trilinear for video),
    the grid's overhang past the input (padding) cut off, a shortfall filled by the edge."""
    grid = maps.shape[1:]
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(grid)]
    if stride is None:
        target = tuple(input_size)
    else:
        target = tuple(g * s for g, s in zip(grid, stride))
    out = nn.functional.interpolate(maps[:, None].float(), size=target, mode=mode, align_corners=False)[:, 0]
    out = out[(slice(None), *[slice(0, min(t, s)) for t, s in zip(target, input_size)])]
    short = [s - o for s, o in zip(input_size, out.shape[1:])]
    if any(short):
        pads = []
        for gap in reversed(short):
            pads += [0, max(gap, 0)]
        out = nn.functional.pad(out[:, None], pads, mode="replicate")[:, 0]
    return out
