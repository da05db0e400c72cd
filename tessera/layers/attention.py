"""Multi-head self-attention with an optional additive bias, and its windowed form.

The scores are computed by :func:`tessera.backends.attention` and
:func:`tessera.backends.window_attention`, whose references are the official step-by-step
computation (``q * scale``, ``q @ k^T``, ``+ bias``, softmax, ``@ v``); the backends choose a
faster implementation where one computes the same here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import backends
from ..backends.cache import CACHE
from .helpers import prod
from .windows import clamped_bias_index, relative_position_index


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """``softmax(q k^T * scale + bias) v`` over the last two dimensions.

    Shapes: q ``(..., Nq, d)``, k and v ``(..., Nk, d)``, bias broadcastable to
    ``(..., Nq, Nk)``; returns ``(..., Nq, d)``.
    """
    return backends.attention(q, k, v, bias, scale, dropout_p)


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

    def dropout_p(self) -> float:
        """The dropout on the attention weights in this call (none in eval mode)."""
        return self.attn_drop.p if self.training else 0.0

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = attend(q, k, v, bias, self.scale, self.dropout_p())
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

    Shape: ``(B * nW, N, C) -> (B * nW, N, C)``, windows of ``N = prod(window)`` tokens.
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

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        # The official code saves the index (and the shift mask) in its checkpoints; they are
        # derived data, recomputed here, so drop them instead of reporting them as unexpected.
        state_dict.pop(prefix + "relative_position_index", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _bias_index(self, window: tuple[int, ...]) -> torch.Tensor:
        if window == self.window_size:
            return self.relative_position_index
        device = self.relative_position_index.device
        key = ("bias index", self.window_size, window, self.bias_index_mode, str(device))
        return CACHE.get(key, lambda: clamped_bias_index(self.window_size, window, self.bias_index_mode).to(device))

    def relative_position_bias(self, window: tuple[int, ...]) -> torch.Tensor:
        """``(h, N, N)`` biases for the (effective) ``window``."""
        n = prod(window)
        index = self._bias_index(window)
        bias = self.relative_position_bias_table[index.reshape(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1)

    #: plain scaled dot products (Swin V2's attention is cosine)
    cosine = False

    def qkv_bias_vector(self) -> torch.Tensor | None:
        """The bias of the ``qkv`` projection ``(3C,)``."""
        return self.qkv.bias

    def score_scale(self) -> float:
        """What the scores are multiplied by."""
        return self.scale

    def window_bias(self, window: tuple[int, ...], mask: torch.Tensor | None) -> backends.WindowBias:
        """The bias of the (effective) ``window`` and the shift ``mask`` ``(nW, N, N)``, for
        :func:`tessera.backends.window_attention`."""
        table = self.relative_position_bias_table
        return backends.WindowBias(
            relative=lambda: self.relative_position_bias(window),
            depends_on=(table,) if mask is None else (table, mask),
            mask=mask,
            key=(id(self), window, None if mask is None else id(mask)),
        )

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, window: tuple[int, ...] | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x``: ``(B * nW, N, C)`` windows of the (effective) ``window``; ``mask``:
        ``(nW, N, N)`` or ``None``."""
        window = window or self.window_size
        qkv = self.qkv(x)
        x = backends.window_attention(qkv, self.window_bias(window, mask), self.num_heads, self.scale, self.dropout_p())
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"
