"""Parameter and multiply-accumulate counts, with ``torch.utils.flop_counter``."""

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


@torch.no_grad()
def model_stats(model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu") -> dict:
    """``{'params': int, 'macs': int, 'flops': int}`` of one forward pass on an input of
    ``input_shape`` (batch included). MACs are multiply-accumulates, the unit the papers
    call "FLOPs"; ``flops = 2 * macs``."""
    was_training = model.training
    model.eval()
    x = torch.zeros(*input_shape, device=device)
    try:
        with FlopCounterMode(display=False, custom_mapping=_custom_formulas()) as counter:
            model(x)
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    return {"params": count_params(model), "macs": flops // 2, "flops": flops}
