"""Parameter and multiply-accumulate counts, with ``torch.utils.flop_counter``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _cpu_flash_sdpa_flop(query_shape, key_shape, value_shape, *args, out_val=None, **kwargs) -> int:
    # The CPU flash kernel of scaled_dot_product_attention is not in the counter's table
    # (it would count 0); its work is the same as any other SDPA backend's.
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_formulas() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}

    def formula(query, key, value, *args, out_val=None, **kwargs):
        return _cpu_flash_sdpa_flop(query, key, value)

    return {op: formula}


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
