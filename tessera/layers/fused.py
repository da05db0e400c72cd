"""Linear layers on oneDNN's matrix product, with their epilogue (bias, GELU, residual add)
in the same kernel.

On CPU, ``torch.nn.functional.linear`` in fp32 goes to the BLAS library's GEMM, copies the
bias into its output before the product, and GELU and the residual add each take another
pass over memory. oneDNN's ``mkldnn._linear_pointwise`` does the epilogue inside the GEMM,
and its fp32 GEMM is much faster on some processors (twice as fast on the AMD EPYC of the
benchmarks in BENCHMARKS.md).

* Inference (no gradient): the whole expression is one oneDNN call, in fp32 or half
  precision (CPU autocast applied by hand: the op is not on autocast's lists).
* Training in fp32: a small autograd function runs the forward and the input gradient on
  oneDNN; the weight gradient stays with BLAS (which takes the transposed operands without
  copying them) and the bias gradient is a sum.
* Under ``torch.compile`` (inference): the same oneDNN calls, wrapped as opaque custom ops
  so that inductor calls them as they are and fuses the rest of the graph around them.
* Elsewhere (GPU, ``torch.export`` and ONNX -- which must stay portable --, training under
  ``torch.compile``, half-precision training, no oneDNN): the plain expressions these
  functions stand for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import native

_OP = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_AVAILABLE = _OP is not None and torch.backends.mkldnn.is_available()
_enabled = True


def set_fused_linear(enable: bool) -> None:
    """Switch the oneDNN path on or off (for comparisons)."""
    global _enabled
    _enabled = enable


def _on_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        _AVAILABLE and _enabled and x.device.type == "cpu" and not torch.compiler.is_exporting()
        and x.dtype == weight.dtype and x.dtype in (torch.float32, torch.bfloat16)
    )


# Opaque to torch.compile: inductor cannot lower a direct call of oneDNN's fused linear.
@torch.library.custom_op("tessera::onednn_linear", mutates_args=())
def _compiled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool) -> torch.Tensor:
    return _OP(x, weight, bias, "gelu" if gelu else "none", [], "none" if gelu else "")


@_compiled_linear.register_fake
def _(x, weight, bias, gelu):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("tessera::onednn_linear_add", mutates_args=())
def _compiled_linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         residual: torch.Tensor) -> torch.Tensor:
    return _OP.binary(x, residual, weight, bias, "add")


@_compiled_linear_add.register_fake
def _(x, weight, bias, residual):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _trains_on_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """fp32 training in eager mode (compiled training keeps the plain expressions, whose
    backward inductor derives and fuses itself)."""
    return (_on_onednn(x, weight) and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _cast(param: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``param.to(dtype)``, kept on the parameter until it changes (inference only: casting
    every weight on every call costs a pass over all of them)."""
    if param.dtype == dtype or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return param.to(dtype)
    hit = getattr(param, "_tessera_cast", None)
    if hit is not None and hit[0] == (param._version, dtype, param.data_ptr()):
        return hit[1]
    with torch.inference_mode(False):
        cast = param.detach().to(dtype)
    param._tessera_cast = ((param._version, dtype, param.data_ptr()), cast)
    return cast


def _autocast(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), _cast(weight, dtype)
        bias = _cast(bias, dtype) if bias is not None else None
    return x, weight, bias


class _Linear(torch.autograd.Function):
    """``F.linear`` (and optionally ``+ residual``) with the forward and the input gradient on
    oneDNN. ``x`` is 2-D and contiguous."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual):
        ctx.save_for_backward(x, weight)
        ctx.has_bias, ctx.has_residual = bias is not None, residual is not None
        if residual is not None:
            return _OP.binary(x, residual, weight, bias, "add")
        return _OP(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _OP(grad, weight.t().contiguous(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            grad_w = grad.t() @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b, grad if ctx.has_residual and ctx.needs_input_grad[3] else None


def _train_linear(x, weight, bias, residual=None) -> torch.Tensor:
    shape = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    r2 = residual.reshape(-1, residual.shape[-1]).contiguous() if residual is not None else None
    return _Linear.apply(x2, weight, bias, r2).view(*shape, weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, followed by exact (erf) GELU when ``gelu``."""
    if _needs_grad(x, weight, bias):
        if _trains_on_onednn(x, weight):
            y = _train_linear(x, weight, bias)
        else:
            y = F.linear(x, weight, bias)
        return F.gelu(y) if gelu else y
    xc, w, b = _autocast(x, weight, bias)
    if _on_onednn(xc, w) and xc.is_contiguous():
        if torch.compiler.is_compiling():
            return _compiled_linear(xc, w, b, gelu)
        return _OP(xc, w, b, "gelu" if gelu else "none", [], "none" if gelu else "")
    y = F.linear(x, weight, bias)
    return F.gelu(y) if gelu else y


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor) -> torch.Tensor:
    """``residual + F.linear(x, weight, bias)``."""
    if _needs_grad(x, weight, bias, residual):
        if _trains_on_onednn(x, weight) and residual.dtype == torch.float32:
            return _train_linear(x, weight, bias, residual)
        return residual + F.linear(x, weight, bias)
    xc, w, b = _autocast(x, weight, bias)
    if _on_onednn(xc, w) and xc.is_contiguous() and residual.is_contiguous():
        compiling = torch.compiler.is_compiling()
        if residual.dtype == xc.dtype:
            return _compiled_linear_add(xc, w, b, residual) if compiling else _OP.binary(xc, residual, w, b, "add")
        # a wider residual (the fp32 stream under autocast): the product in half precision,
        # the sum in the residual's precision
        if compiling:
            return residual + _compiled_linear(xc, w, b, False)
        y = _OP(xc, w, b, "none", [], "")
        if residual.dtype == torch.float32 and y.dtype == torch.bfloat16 and native.supports(residual):
            return native.add_bf16(residual, y)
        return residual + y
    return residual + F.linear(x, weight, bias)


def norm_for_linear(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` for a norm whose output only feeds this module's linear layers. Under CPU
    bf16 autocast, a LayerNorm of the fp32 residual stream is written straight in bf16 (which
    the linear layer would cast it to) by one native pass instead of two."""
    if (
        type(norm) is nn.LayerNorm and x.dtype == torch.float32
        and torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and not _needs_grad(x, norm.weight) and x.is_contiguous() and len(norm.normalized_shape) == 1
        and native.supports(x)
        and (norm.weight is None or norm.weight.dtype == torch.float32)
    ):
        return native.layer_norm(x, norm, torch.bfloat16)
    return norm(x)
