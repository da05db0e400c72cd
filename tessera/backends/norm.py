"""``layer_norm_for_matmul``: a LayerNorm whose output feeds only matrix products.

Under CPU bf16 autocast the products cast their input to bf16; when the residual stream is
kept in fp32 (as the Swin models keep it), the norm would write fp32 and the product read it
and cast it in a second pass.

* ``reference``: ``F.layer_norm`` (fp32 in, fp32 out);
* ``native``: tessera's kernel (inference): under bf16 autocast one pass that reads the fp32
  stream and writes bf16, what the product reads; in fp32 a row at a time while it is in L1
  (PyTorch's kernel takes about twice as long for the narrow rows of Swin's first stages).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _modules

from . import native
from .dispatch import Op, bucket


def _reference(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return norm(x)


def _key(x: torch.Tensor, norm: nn.LayerNorm) -> tuple:
    return (f"C={x.shape[-1]}", f"rows<={bucket(x.numel() // x.shape[-1])}")


layer_norm_for_matmul = Op("layer_norm_for_matmul", _reference, _key)
layer_norm_for_matmul.__doc__ = """``norm(x)`` for a ``LayerNorm`` whose output only feeds matrix products
(which may then receive it in their autocast precision). Shape: ``(..., C) -> (..., C)``."""


def _out_dtype(x: torch.Tensor) -> torch.dtype | None:
    """What the products that read the norm compute in: bf16 under CPU bf16 autocast, fp32
    without autocast; ``None`` for other autocast precisions."""
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.bfloat16 if torch.get_autocast_dtype("cpu") == torch.bfloat16 else None
    return torch.float32


def _native_reason(x: torch.Tensor, norm: nn.LayerNorm) -> str | None:
    if _out_dtype(x) is None:
        return "fp32, or under CPU bf16 autocast"
    if x.dtype != torch.float32 or not x.is_contiguous():
        return "reads a contiguous fp32 stream"
    if type(norm) is not nn.LayerNorm or len(norm.normalized_shape) != 1:
        return "a LayerNorm over the last axis"
    if norm.weight is not None and (norm.weight.dtype != torch.float32 or
                                    (torch.is_grad_enabled() and norm.weight.requires_grad)):
        return "inference only, fp32 weights"
    return native.takes(x)


def _hooked(module: nn.Module) -> bool:
    """Whether forward hooks would see the module's call (then the module itself runs)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or _modules._global_forward_hooks
                or _modules._global_forward_pre_hooks)


@layer_norm_for_matmul.candidate("native", _native_reason)
def _native(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    if _hooked(norm):  # a hook on the norm (features, explanations) sees the module's call
        return norm(x)
    return native.layer_norm(x, norm.weight, norm.bias, norm.eps, _out_dtype(x))


__all__ = ["layer_norm_for_matmul"]
