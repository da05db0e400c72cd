"""Parameter and multiply-accumulate counts, with ``torch.utils.flop_counter``, and the
summary behind ``tessera summary``.

The count of every operator depends only on the shapes of its inputs, so a model built on
PyTorch's meta device (``with torch.device("meta"): create_model(...)``) gives the same
count as the real one, without allocating its weights or computing anything: what makes
``tessera summary`` take a second instead of a full-size forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _custom_formulas() -> dict:
    """Formulas for kernels the counter does not know: the CPU flash kernel of
    scaled_dot_product_attention, and oneDNN's fused linear (bias/GELU/add epilogues)."""
    formulas = {}
    sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if sdpa is not None:

        def sdpa_formula(query, key, value, *args, **kwargs) -> int:
            return sdpa_flop_count(query, key, value)

        formulas[sdpa] = sdpa_formula
    linear = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    if linear is not None:

        def linear_formula(x_shape, *args, out_shape=None, **kwargs) -> int:
            # both overloads take the input first; out = x @ W^T (+ epilogue)
            rows = 1
            for s in x_shape[:-1]:
                rows *= s
            return 2 * rows * x_shape[-1] * out_shape[-1]

        formulas[linear] = linear_formula
    return formulas


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _device_of(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def model_stats(model: nn.Module, input_shape: Sequence[int], device: str | torch.device | None = None) -> dict:
    """``{'params': int, 'macs': int, 'flops': int}`` of one forward pass in eval mode on an
    input of ``input_shape`` (batch included), on ``device`` (default: the model's; a model
    on the meta device is counted without computing anything). MACs are
    multiply-accumulates, the unit the papers call "FLOPs"; ``flops = 2 * macs``."""
    was_training = model.training
    model.eval()
    x = torch.zeros(*input_shape, device=device or _device_of(model))
    try:
        if x.is_meta:
            # a first pass costs nothing on the meta device and builds what models cache
            # (Swin's window plans) outside the counter, under which every operator is slow
            model(x)
        return _count(model, x)
    finally:
        model.train(was_training)


def _count(model: nn.Module, x: torch.Tensor) -> dict:
    with FlopCounterMode(display=False, custom_mapping=_custom_formulas()) as counter:
        model(x)
    flops = counter.get_total_flops()
    return {"params": count_params(model), "macs": flops // 2, "flops": flops}


@torch.no_grad()
def _shapes(value):
    """The shape of a tensor, or a list of the shapes of (nested) tensors: the features of a
    segmentation model are a pyramid."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return [_shapes(v) for v in value]


def summarize(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """What ``tessera summary`` prints, in eval mode, on the model's device (the meta device
    for a quick look): ``params``, ``macs``, ``flops`` (as :func:`model_stats`), ``stages``
    (the output shape of each stage, for models with ``forward_intermediates``),
    ``features`` and ``logits`` shapes."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(*input_shape, device=_device_of(model))
        stages = model.forward_intermediates(x) if hasattr(model, "forward_intermediates") else []
        shapes = {"stages": [tuple(s.shape) for s in stages], "features": _shapes(model.forward_features(x)),
                  "logits": tuple(model(x).shape)}
        return {**_count(model, x), **shapes}  # counted after the passes that filled the caches
    finally:
        model.train(was_training)
