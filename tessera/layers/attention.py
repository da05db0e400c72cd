"""Multi-head self-attention with an optional additive bias, and its windowed form.

``attend`` is the one place where scores are computed. ``fused=True`` hands the work to
``torch.nn.functional.scaled_dot_product_attention`` (one kernel that adds the bias, takes
the softmax and never stores the scores); ``fused=False`` writes it out step by step in the
order of the official code (``q * scale``, ``q @ k^T``, ``+ bias``, softmax, ``@ v``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import fused, native
from .helpers import prod
from .windows import WindowPlan, clamped_bias_index, outside_inference_mode, relative_position_index


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
    fused: bool = True,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` over the last two dimensions.

    Shapes: q ``(..., Nq, d)``, k and v ``(..., Nk, d)``, bias broadcastable to
    ``(..., Nq, Nk)``; returns ``(..., Nq, d)``.
    """
    if fused:
        if bias is not None and bias.dtype != q.dtype:
            bias = bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p, training=True)
    return attn @ v


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection.

    Args:
        dim: channels C.
        num_heads: heads h; ``C`` must be divisible by ``h``.
        qkv_bias: bias on the ``qkv`` projection.
        qk_scale: score scale; default ``(C / h) ** -0.5``.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.

    Shape: ``(B, N, C) -> (B, N, C)``; an optional additive ``bias`` broadcastable to
    ``(B, h, N, N)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        #: use scaled_dot_product_attention (True) or the written-out reference (False)
        self.fused = True

    def _dropout_p(self) -> float:
        return self.attn_drop.p if self.training else 0.0

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = attend(q, k, v, bias, self.scale, self._dropout_p(), self.fused)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class WindowAttention(Attention):
    """Attention inside windows with a learned relative-position bias (Swin, Video Swin).

    Args:
        window_size: the window the bias table is made for, one entry per grid axis.
        bias_index_mode: how a window clamped at run time picks its biases out of the table;
            see :func:`tessera.layers.windows.clamped_bias_index`.
        (the rest as :class:`Attention`)

    The table has ``prod(2 * W_i - 1)`` rows and ``h`` columns (official name
    ``relative_position_bias_table``). ``relative_position_index`` is a non-persistent
    buffer: checkpoints that carry it load fine, and it is always recomputed.
    """

    def __init__(
        self,
        dim: int,
        window_size: Sequence[int],
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        bias_index_mode: str = "exact",
    ) -> None:
        super().__init__(dim, num_heads, qkv_bias, qk_scale, attn_drop, proj_drop)
        self.window_size = tuple(window_size)
        self.bias_index_mode = bias_index_mode
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(prod([2 * w - 1 for w in self.window_size]), num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size), persistent=False)
        self._index_cache: dict[tuple, torch.Tensor] = {}
        self._bias_cache: dict[tuple, torch.Tensor] = {}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        # The official code saves the index (and the shift mask) in its checkpoints; they are
        # derived data, recomputed here, so drop them instead of reporting them as unexpected.
        state_dict.pop(prefix + "relative_position_index", None)
        self._bias_cache.clear()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _bias_index(self, window: tuple[int, ...]) -> torch.Tensor:
        if window == self.window_size:
            return self.relative_position_index
        device = self.relative_position_index.device
        if torch.compiler.is_compiling():
            return clamped_bias_index(self.window_size, window, self.bias_index_mode).to(device)
        key = (window, device)
        index = self._index_cache.get(key)
        if index is None:
            with outside_inference_mode():
                index = clamped_bias_index(self.window_size, window, self.bias_index_mode).to(device)
            self._index_cache[key] = index
        return index

    def relative_position_bias(self, window: tuple[int, ...]) -> torch.Tensor:
        """``(h, N, N)`` biases for the (effective) ``window``."""
        n = prod(window)
        index = self._bias_index(window)
        bias = self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1)

    # -- reference path ------------------------------------------------------------------

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, window: tuple[int, ...] | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The official computation. ``x``: ``(B * nW, N, C)`` windows; ``mask``:
        ``(nW, N, N)`` or ``None``."""
        window = window or self.window_size
        b_, n, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).view(b_, n, 3, h, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + self.relative_position_bias(window).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, h, n, n) + mask.to(attn.dtype)[None, :, None]
            attn = attn.view(-1, h, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))

    # -- fast path -------------------------------------------------------------------------

    def _cached_bias(self, key: tuple, build) -> torch.Tensor:
        """``build()``, cached under ``key`` until the table changes (not while compiling)."""
        version = self.relative_position_bias_table._version
        caching = not torch.compiler.is_compiling()
        if caching:
            hit = self._bias_cache.get(key)
            if hit is not None and hit[0] == version:
                return hit[1]
        with outside_inference_mode(), torch.no_grad():  # the table needs no gradient here
            bias = build()
        if caching:
            if len(self._bias_cache) > 32:
                self._bias_cache.clear()
            self._bias_cache[key] = (version, bias)
        return bias

    def _frozen_bias(self, plan: WindowPlan, shifted: bool, dtype: torch.dtype, batch: int) -> torch.Tensor:
        """The bias (plus, for shifted windows, the mask) of one block when the table needs no
        gradient, cached per plan, dtype and batch until the table changes: ``(1, h, N, N)``
        for regular windows, ``(B * nW, h, N, N)`` for shifted ones (repeated over the images:
        the fused kernel cannot broadcast a per-window term over images)."""
        masked = shifted and plan.mask is not None

        def build() -> torch.Tensor:
            bias = self._live_bias(plan, masked)
            if masked:
                bias = bias.expand(batch, -1, -1, -1, -1).reshape(-1, *bias.shape[1:])
            return bias.to(dtype)

        key = (plan.grid, plan.window, plan.shift, masked, batch if masked else 0, plan.device, dtype)
        return self._cached_bias(key, build)

    def _native_bias(self, plan: WindowPlan, shifted: bool) -> torch.Tensor:
        """The same for the native kernel: fp32, ``(1 or nW, h, N, Np)`` with padded rows."""
        masked = shifted and plan.mask is not None
        key = ("native", plan.grid, plan.window, plan.shift, masked, plan.device)
        return self._cached_bias(key, lambda: native.pad_bias(self._live_bias(plan, masked)))

    def _use_native(self, qkv: torch.Tensor) -> bool:
        """Inference, with the fused path on, where the native kernels take ``qkv``."""
        return (
            self.fused and not qkv.requires_grad and self._dropout_p() == 0.0
            and not (torch.is_grad_enabled() and self.relative_position_bias_table.requires_grad)
            and native.supports(qkv)
        )

    def _live_bias(self, plan: WindowPlan, masked: bool) -> torch.Tensor:
        """``(1, h, N, N)``, or ``(nW, h, N, N)`` with the shift mask added."""
        bias = self.relative_position_bias(plan.window).unsqueeze(0)
        return bias + plan.mask.unsqueeze(1).to(bias.dtype) if masked else bias

    def _attend_windows(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: WindowPlan, shifted: bool,
                        batch: int) -> torch.Tensor:
        """q, k, v: ``(B * nW, h, N, d)`` -> ``(B * nW, h, N, d)``.

        Two cases, by what is fastest (measured on CPU):
        * the table needs no gradient: one fused kernel, with the bias and mask repeated over
          the batch (cached);
        * the table learns: a fused kernel would fall back to its slow general form to give
          the bias a gradient, so the scores are written out, the bias broadcast over images.
        """
        n, h = plan.tokens_per_window, self.num_heads
        masked = shifted and plan.mask is not None
        frozen = not (torch.is_grad_enabled() and self.relative_position_bias_table.requires_grad)
        if self.fused and frozen:
            bias = self._frozen_bias(plan, shifted, q.dtype, batch)
            return attend(q, k, v, bias, self.scale, self._dropout_p(), fused=True)
        bias = self._live_bias(plan, masked)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = (attn.view(batch, -1, h, n, n) + bias).view_as(attn)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return attn.to(v.dtype) @ v

    def forward_windows(
        self, x: torch.Tensor, plan: WindowPlan, shifted: bool, residual: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention on tokens already in window order: ``(B, nW * N, C) -> (B, nW * N, C)``.

        With ``residual`` the result is ``residual + attention(x)`` (the projection's
        dropout must be inactive), fused into the output projection where possible.
        """
        b, length, c = x.shape
        n = plan.tokens_per_window
        h, d = self.num_heads, self.head_dim
        qkv = fused.linear(x, self.qkv.weight, self.qkv.bias)
        if self._use_native(qkv):  # every window and head in one call, output in (B, L, C)
            out = native.window_attention(qkv.contiguous(), self._native_bias(plan, shifted), h, n, self.scale)
        else:
            # strided views, no copy: (B * nW, h, N, d)
            q, k, v = qkv.view(-1, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            out = self._attend_windows(q, k, v, plan, shifted, b)
            out = out.transpose(1, 2).reshape(b, length, c)  # free for SDPA's (B, N, h, d) layout
        if residual is not None:
            return fused.linear_add(out, self.proj.weight, self.proj.bias, residual)
        return self.proj_drop(fused.linear(out, self.proj.weight, self.proj.bias))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"
