"""``linear``: ``residual + act(x @ W^T + b)``, the matrix product of every transformer layer,
with what follows it (the bias, GELU, the residual add).

Candidates:

* ``reference``: ``F.linear``, then ``F.gelu``, then ``+ residual``.
* ``onednn``: oneDNN's ``mkldnn._linear_pointwise``, which applies the bias, GELU and the
  residual add inside the matrix product (saving passes over the output), with its own GEMM,
  which is much faster than the BLAS one on some processors and slower on others (hence the
  measurement). In inference also under bf16 autocast (the op is not on autocast's lists, so
  the cast is done here, with the weights' bf16 copies kept in the backends' cache); in
  training in fp32, where an autograd function runs the forward and the input gradient on
  oneDNN and the weight gradient with BLAS (which reads the transposed operands without a
  copy). Under ``torch.compile`` (inference) the calls are opaque custom ops that inductor
  calls as they are and fuses the rest of the graph around.
* ``onednn_packed``: the same in inference, with the weight reordered once into oneDNN's
  blocked layout for the product (kept in the backends' cache while the weight is unchanged)
  instead of on every call: 7 to 25 % faster per product in fp32 on the Zen 4 kind, a few
  per cent in bf16, the same numbers (the reorder moves values, it does not round them).
* ``onednn_packed_then_add``: the same with the residual added in a second pass over the
  product's output instead of inside the product (oneDNN's fused add slows the product down
  more than a separate pass costs for narrow outputs: 96 -> 96 channels at stage 1 of swin_t,
  1.9 against 1.5 ms on the Zen 4 kind). The same numbers: the bias, then the residual.

A processor whose oneDNN has no bf16 kernels raises when asked for one: the probe records it
and the reference is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import capability, native
from .cache import CACHE, cached_cast
from .dispatch import Op, bucket

_OP = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
_PACK = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None)
_ACTIVATIONS = {None: ("none", ""), "gelu": ("gelu", "none"), "gelu_tanh": ("gelu", "tanh")}


def _reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None,
               residual: torch.Tensor | None = None) -> torch.Tensor:
    y = _activate(F.linear(x, weight, bias), activation)
    return y if residual is None else residual + y


def _key(x, weight, bias=None, activation=None, residual=None) -> tuple:
    rows = x.numel() // max(1, x.shape[-1])
    residual_kind = "" if residual is None else "+residual " + str(residual.dtype).removeprefix("torch.")
    return (f"rows<={bucket(rows)}", f"{weight.shape[1]}->{weight.shape[0]}", activation or "", residual_kind)


linear = Op("linear", _reference, _key)
linear.__doc__ = """``residual + act(F.linear(x, weight, bias))`` (``activation``: ``None``,
``"gelu"`` (exact) or ``"gelu_tanh"``; ``residual`` optional, the shape of the output).
Shape: ``(..., K) -> (..., N)``."""


# ---------------------------------------------------------------------------------------
# oneDNN
# ---------------------------------------------------------------------------------------


def _trains(*tensors: torch.Tensor | None) -> bool:
    """Whether gradients will flow through the call."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return x.dtype


def _onednn_reason(x, weight, bias=None, activation=None, residual=None) -> str | None:
    if not capability.host().onednn or _OP is None:
        return "this PyTorch build has no oneDNN fused linear"
    if x.device.type != "cpu":
        return f"runs on the CPU, not {x.device.type}"
    dtype = _compute_dtype(x)
    if dtype not in (torch.float32, torch.bfloat16):
        return f"takes fp32 or bf16, not {dtype}"
    if _trains(x, weight, bias, residual):
        if dtype != torch.float32 or weight.dtype != torch.float32:
            return "trains in fp32 only"
        if torch.compiler.is_compiling():
            return "compiled training uses the plain expressions (inductor derives the backward)"
    elif not x.is_contiguous() or (residual is not None and not residual.is_contiguous()):
        return "takes contiguous inputs"
    return None


# Opaque to torch.compile: inductor cannot lower a direct call of oneDNN's fused linear.
@torch.library.custom_op("tessera::onednn_linear", mutates_args=())
def _compiled_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, attr: str,
                     algorithm: str) -> torch.Tensor:
    return _OP(x, weight, bias, attr, [], algorithm)


@_compiled_linear.register_fake
def _(x, weight, bias, attr, algorithm):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


@torch.library.custom_op("tessera::onednn_linear_add", mutates_args=())
def _compiled_linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         residual: torch.Tensor) -> torch.Tensor:
    return _OP.binary(x, residual, weight, bias, "add")


@_compiled_linear_add.register_fake
def _(x, weight, bias, residual):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


class _TrainLinear(torch.autograd.Function):
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


def _packed_reason(x, weight, bias=None, activation=None, residual=None) -> str | None:
    if _PACK is None:
        return "this PyTorch build cannot reorder linear weights for oneDNN"
    if _trains(x, weight, bias, residual):
        return "inference only (the packed weight is a copy that gradients cannot reach)"
    if torch.compiler.is_compiling():
        return "not under torch.compile (the packed weight is opaque to it)"
    return _onednn_reason(x, weight, bias, activation, residual)


def _packed(weight: torch.Tensor, dtype: torch.dtype, rows: int) -> torch.Tensor:
    """``weight`` in ``dtype`` in oneDNN's layout for products of about ``rows`` rows (any
    number of rows gives the same result; the layout is chosen for the bucket's)."""
    return CACHE.get(("onednn_packed", id(weight), dtype, bucket(rows)),
                     lambda: _PACK(cached_cast(weight, dtype), bucket(rows)), (weight,))


@linear.candidate("onednn_packed", _packed_reason)
def _onednn_packed(x, weight, bias=None, activation=None, residual=None):
    dtype = _compute_dtype(x)
    return _inference(x, _packed(weight, dtype, x.numel() // max(1, x.shape[-1])), bias, activation, residual, dtype)


def _then_add_reason(x, weight, bias=None, activation=None, residual=None) -> str | None:
    if residual is None or activation is not None or residual.dtype != _compute_dtype(x):
        return "for a residual in the product's precision without an activation (else added apart anyway)"
    return _packed_reason(x, weight, bias, activation, residual)


@linear.candidate("onednn_packed_then_add", _then_add_reason)
def _onednn_packed_then_add(x, weight, bias=None, activation=None, residual=None):
    dtype = _compute_dtype(x)
    y = _inference(x, _packed(weight, dtype, x.numel() // max(1, x.shape[-1])), bias, None, None, dtype)
    return y.add_(residual)


@linear.candidate("onednn", _onednn_reason, traceable=True)
def _onednn(x, weight, bias=None, activation=None, residual=None):
    if _trains(x, weight, bias, residual):
        shape = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1]).contiguous()
        if activation is not None:  # the activation's backward is PyTorch's
            y = _TrainLinear.apply(x2, weight, bias, None).view(*shape, weight.shape[0])
            y = _activate(y, activation)
            return y if residual is None else residual + y
        r2 = residual.reshape(-1, residual.shape[-1]).contiguous() if residual is not None else None
        return _TrainLinear.apply(x2, weight, bias, r2).view(*shape, weight.shape[0])
    dtype = _compute_dtype(x)
    return _inference(x, cached_cast(weight, dtype), bias, activation, residual, dtype)


def _inference(x, w, bias, activation, residual, dtype):
    """The oneDNN product in inference, ``w`` already in ``dtype`` (plain or packed)."""
    attr, algorithm = _ACTIVATIONS[activation]
    xc = x.to(dtype)
    b = cached_cast(bias, dtype) if bias is not None else None
    compiling = torch.compiler.is_compiling()
    if residual is not None and residual.dtype == dtype and activation is None:
        return _compiled_linear_add(xc, w, b, residual) if compiling else _OP.binary(xc, residual, w, b, "add")
    y = _compiled_linear(xc, w, b, attr, algorithm) if compiling else _OP(xc, w, b, attr, [], algorithm)
    if residual is None:
        return y
    if residual.dtype == torch.float32 and y.dtype == torch.bfloat16 and not compiling and native.takes(residual) is None:
        return native.add_bf16(residual, y)  # the fp32 stream under autocast: one pass, no cast
    return residual + y


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    if activation == "gelu":
        return F.gelu(y)
    if activation == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    if activation is not None:
        raise ValueError(f"unknown activation {activation!r}; expected None, 'gelu' or 'gelu_tanh'")
    return y
