"""The optimizer step: AdamW on PyTorch's fused kernel where it has one.

PyTorch's default AdamW on the CPU loops over the parameters and makes about ten passes over
each (its fused and ``foreach`` forms are the defaults on CUDA only). The fused kernel makes
one: for Swin-T's 28M parameters on a 2-core CPU, 13 ms a step instead of 33 (BENCHMARKS.md,
item 9). The updates are the same, rounding apart.
"""

from __future__ import annotations

import torch

__all__ = ["adamw"]


def adamw(params, **kwargs) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)`` with the fused kernel where PyTorch has one for
    the parameters (CPU and CUDA, floating point); where the kernel is refused, the default
    implementation. ``params``: tensors or parameter groups, as for any optimizer."""
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    if tensors and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in tensors):
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError):
            pass  # an older build, or a device or dtype without the kernel
    return torch.optim.AdamW(params, **kwargs)
