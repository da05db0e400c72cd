"""``swin_blocks``: the blocks of one Swin stage, ``(B, *grid, C) -> (B, *grid, C)``.

* ``reference``: each block's own ``forward``, the official code (pad, roll, partition,
  attend, reverse, roll back, crop, residual adds, MLP).
* ``window_order``: the same function computed the fast way, on grids that need no padding:

  - the tokens stay in *window order* through the stage: one precomputed gather hands them
    from one block's windows to the next one's instead of roll + partition + reverse + roll
    (norms and MLPs act per token, so they do not care about the order), and one gather
    returns them to the grid at the end;
  - each block's matrix products go through :func:`tessera.backends.linear`, with GELU in the
    first MLP layer and, when no stochastic depth or dropout is active, the residual adds in
    the output projections;
  - the norms through :func:`tessera.backends.layer_norm_for_matmul`, the attention through
    :func:`tessera.backends.window_attention`.

* ``grid_order`` (inference): the same blocks with the tokens left on their grid: tessera's
  attention kernel reads each window's rows where they lie and writes its output there (the
  plan's window order handed to it as an index), so no gather moves the tokens at all.

  Both take the blocks of Swin V1 (pre-norm) and Swin V2 (res-post-norm, ``post_norm = True``,
  cosine attention; the norms sit between the products and the residual adds, which stay
  apart): ``norm1``, ``attn`` with ``qkv`` and ``proj`` (and ``qkv_bias_vector``,
  ``score_scale``, ``cosine``, ``window_bias``), ``norm2``, ``mlp`` with ``fc1``, GELU and
  ``fc2``; anything else runs the reference.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import native
from .attention import window_attention
from .cache import CACHE
from .dispatch import Op, bucket
from .linear import linear
from .norm import layer_norm_for_matmul


def _checkpointed(fn, *args, enabled: bool):
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def _reference(stage: nn.Module, x: torch.Tensor, plan) -> torch.Tensor:
    for blk in stage.blocks:
        x = _checkpointed(blk, x, plan, enabled=stage.grad_checkpointing)
    return x


def _key(stage: nn.Module, x: torch.Tensor, plan) -> tuple:
    first = stage.blocks[0]
    return (type(first).__name__, f"C={x.shape[-1]}", f"heads={first.attn.num_heads}", f"depth={len(stage.blocks)}",
            "grid=" + "x".join(map(str, plan.grid)), "window=" + "x".join(map(str, plan.window)),
            "shift=" + "x".join(map(str, plan.shift)), f"batch<={bucket(x.shape[0])}",
            "train" if stage.training else "eval")


swin_blocks = Op("swin_blocks", _reference, _key)
swin_blocks.__doc__ = """The blocks of a Swin stage on ``x`` ``(B, *grid, C)`` with the stage's
:class:`~tessera.layers.windows.WindowPlan` for that grid."""


# ---------------------------------------------------------------------------------------
# Tokens in window order
# ---------------------------------------------------------------------------------------


class _PermuteTokens(torch.autograd.Function):
    """``x.index_select(1, order)`` for a permutation ``order``, whose gradient is the gather
    by the inverse permutation (``index_select``'s own backward is a slower scatter-add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def reorder(plan, tokens: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """Move the tokens ``(B, L, C)`` of ``plan``'s grid from one order to another: ``raster``
    (the grid's own), ``regular`` or ``shifted`` window order."""
    if source == target:
        return tokens
    order, inverse = plan.orders[(source, target)], plan.orders[(target, source)]
    if torch.is_grad_enabled() and tokens.requires_grad and not torch.compiler.is_compiling():
        return _PermuteTokens.apply(tokens, order, inverse)
    return tokens.index_select(1, order)


def _swin_block(blk: nn.Module) -> str | None:
    """Why ``blk`` is not a block this candidate computes, or ``None``."""
    needed = ("norm1", "attn", "norm2", "mlp", "drop_path", "is_shifted")
    if not all(hasattr(blk, n) for n in needed):
        return f"{type(blk).__name__} is not a Swin block"
    attn_needs = ("qkv", "proj", "window_bias", "qkv_bias_vector", "score_scale", "cosine", "dropout_p")
    if not all(hasattr(blk.attn, n) for n in attn_needs):
        return f"{type(blk.attn).__name__} is not a window attention with qkv and proj"
    mlp = blk.mlp
    if not (hasattr(mlp, "fc1") and hasattr(mlp, "fc2") and isinstance(getattr(mlp, "act", None), nn.GELU)):
        return "the MLP is not fc1, GELU, fc2"
    return None


def _window_order_reason(stage: nn.Module, x: torch.Tensor, plan) -> str | None:
    if plan.needs_pad:
        return "the grid needs padding (pad tokens would go through the MLP)"
    for blk in stage.blocks:
        reason = _swin_block(blk)
        if reason:
            return reason
    return None


def _stochastic(blk: nn.Module) -> bool:
    """Whether stochastic depth or dropout is active (then the residual adds stay apart)."""
    if not blk.training:
        return False
    return (getattr(blk.drop_path, "drop_prob", 0.0) > 0 or blk.attn.proj_drop.p > 0
            or blk.mlp.drop1.p > 0 or blk.mlp.drop2.p > 0)


def _attention(attn: nn.Module, h: torch.Tensor, plan, shifted: bool) -> torch.Tensor:
    """The window attention of tokens ``(B, L, C)`` in window order, before the projection."""
    n = plan.tokens_per_window
    qkv = linear(h, attn.qkv.weight, attn.qkv_bias_vector())
    y = window_attention(qkv.view(-1, n, qkv.shape[-1]), attn.window_bias(plan.window, plan.mask if shifted else None),
                         attn.num_heads, attn.score_scale(), attn.dropout_p(), cosine=attn.cosine)
    return y.view(h.shape[0], -1, y.shape[-1])


def _grid_attention(attn: nn.Module, h: torch.Tensor, plan, shifted: bool) -> torch.Tensor:
    """The window attention of tokens ``(B, L, C)`` on their grid, before the projection."""
    qkv = linear(h, attn.qkv.weight, attn.qkv_bias_vector()).contiguous()
    bias = attn.window_bias(plan.window, plan.mask if shifted else None)
    order = plan.orders[("raster", "shifted" if shifted else "regular")]
    order32 = CACHE.get(("grid_order", id(order)), lambda: order.to(torch.int32).contiguous(), (order,))
    scale = attn.score_scale()
    scale = scale.reshape(-1) if isinstance(scale, torch.Tensor) else scale
    return native.window_attention(qkv, bias.cached(f"native{native.lanes()}", native.pad_bias), attn.num_heads,
                                   plan.tokens_per_window, scale, attn.cosine, order=order32)


def _mlp_activation(mlp: nn.Module) -> str:
    return "gelu" if mlp.act.approximate == "none" else "gelu_tanh"


def _post_norm_block(blk: nn.Module, x: torch.Tensor, plan, shifted: bool, attention=_attention) -> torch.Tensor:
    """One res-post-norm block (Swin V2) on tokens ``(B, L, C)`` already in its window order
    (or on their grid, with ``_grid_attention``)."""
    attn, mlp = blk.attn, blk.mlp
    y = attn.proj_drop(linear(attention(attn, x, plan, shifted), attn.proj.weight, attn.proj.bias))
    x = x + blk.drop_path(blk.norm1(y))
    h = mlp.drop1(linear(x, mlp.fc1.weight, mlp.fc1.bias, activation=_mlp_activation(mlp)))
    return x + blk.drop_path(blk.norm2(mlp.drop2(linear(h, mlp.fc2.weight, mlp.fc2.bias))))


def _block(blk: nn.Module, x: torch.Tensor, plan, shifted: bool, attention=_attention) -> torch.Tensor:
    """One block on tokens ``(B, L, C)`` already in its window order (or on their grid, with
    ``_grid_attention``)."""
    if getattr(blk, "post_norm", False):
        return _post_norm_block(blk, x, plan, shifted, attention)
    attn, mlp = blk.attn, blk.mlp
    stochastic = _stochastic(blk)
    y = attention(attn, layer_norm_for_matmul(x, blk.norm1), plan, shifted)
    if stochastic:
        x = x + blk.drop_path(attn.proj_drop(linear(y, attn.proj.weight, attn.proj.bias)))
    else:
        x = linear(y, attn.proj.weight, attn.proj.bias, residual=x)
    h = layer_norm_for_matmul(x, blk.norm2)
    h = linear(h, mlp.fc1.weight, mlp.fc1.bias, activation=_mlp_activation(mlp))
    if stochastic:
        return x + blk.drop_path(mlp.drop2(linear(mlp.drop1(h), mlp.fc2.weight, mlp.fc2.bias)))
    return linear(h, mlp.fc2.weight, mlp.fc2.bias, residual=x)


@swin_blocks.candidate("window_order", _window_order_reason, traceable=True)
def _window_order(stage: nn.Module, x: torch.Tensor, plan) -> torch.Tensor:
    b, c = x.shape[0], x.shape[-1]
    tokens, current = x.reshape(b, -1, c), "raster"
    for blk in stage.blocks:
        shifted = blk.is_shifted(plan)
        wanted = "shifted" if shifted else "regular"
        tokens, current = reorder(plan, tokens, current, wanted), wanted
        tokens = _checkpointed(_block, blk, tokens, plan, shifted, enabled=stage.grad_checkpointing)
    return reorder(plan, tokens, current, "raster").view(b, *plan.grid, c)


# ---------------------------------------------------------------------------------------
# Tokens on their grid
# ---------------------------------------------------------------------------------------


def _grid_order_reason(stage: nn.Module, x: torch.Tensor, plan) -> str | None:
    reason = _window_order_reason(stage, x, plan)
    if reason:
        return reason
    if stage.training or (torch.is_grad_enabled() and any(p.requires_grad for p in stage.parameters())):
        return "inference only (the attention is tessera's kernel)"
    return native.takes(x)


@swin_blocks.candidate("grid_order", _grid_order_reason)
def _grid_order(stage: nn.Module, x: torch.Tensor, plan) -> torch.Tensor:
    b, c = x.shape[0], x.shape[-1]
    tokens = x.reshape(b, -1, c)
    for blk in stage.blocks:
        tokens = _block(blk, tokens, plan, blk.is_shifted(plan), _grid_attention)
    return tokens.view(b, *plan.grid, c)
