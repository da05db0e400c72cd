"""Linear layers with their epilogue (bias, GELU, residual add) in one kernel, for inference.

On CPU, ``torch.nn.functional.linear`` copies the bias into its output before the matrix
product and GELU and the residual add each take another pass over memory. oneDNN's
``mkldnn._linear_pointwise`` does all of it inside the GEMM. It has no autograd formula, so
it is used only where no gradient is needed (``torch.no_grad`` / ``inference_mode``), on CPU,
outside ``torch.compile`` (which makes its own fusions); everywhere else these functions are
the plain ``F.linear`` expressions they replace.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_OP = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_AVAILABLE = _OP is not None and torch.backends.mkldnn.is_available()
_enabled = True


def set_fused_linear(enable: bool) -> None:
    """Switch the oneDNN epilogue fusions on or off (for comparisons)."""
    global _enabled
    _enabled = enable


def _fusable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if not (_AVAILABLE and _enabled) or x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False
    return x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16)


def _autocast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    """Apply CPU autocast by hand: the oneDNN op is not on autocast's lists."""
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    return x, weight, bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, followed by exact (erf) GELU when ``gelu``."""
    xc, w, b = _autocast(x, weight, bias)
    if _fusable(xc, w) and xc.is_contiguous():
        return _OP(xc, w, b, "gelu" if gelu else "none", [], "none" if gelu else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor) -> torch.Tensor:
    """``residual + F.linear(x, weight, bias)``."""
    xc, w, b = _autocast(x, weight, bias)
    if _fusable(xc, w) and xc.is_contiguous() and residual.is_contiguous() and residual.dtype == xc.dtype:
        return _OP.binary(xc, residual, w, b, "add")
    return residual + F.linear(x, weight, bias)
