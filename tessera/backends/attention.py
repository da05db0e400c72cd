"""Attention: ``softmax(q k^T * scale + bias) v``, for whole sequences and inside windows.

``attention`` (ViT, DeiT, CaiT, CvT, LeViT, PVT, ...):

* ``reference``: written out in the order of the official code (``q * scale``, ``q @ k^T``,
  ``+ bias``, softmax, dropout, ``@ v``);
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention``, one kernel that never
  stores the scores.

``window_attention`` (Swin, Video Swin, Swin V2) takes the packed ``qkv`` of every window of a
batch and a :class:`WindowBias` (the relative-position bias and the shift mask):

* ``reference``: the official computation, the bias and the mask added one after the other;
* ``native``: tessera's C++ kernel (inference): every window and head in one call, the bias,
  the mask and the softmax fused, the per-window bias broadcast over the images;
* ``sdpa``: PyTorch's fused kernel with the bias and mask added up once and kept while the
  parameters they come from are unchanged (no gradient to them); windows with a shift mask
  are attended one image at a time, so the mask is broadcast over the batch, never copied;
* ``matmul``: the scores written out with the bias and mask added in one broadcast
  operation (with a gradient to the bias: training).

Cosine attention (Swin V2: ``normalize(q) normalize(k)^T * scale``, a scale per head) is a
flag of ``window_attention``; every candidate takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import native
from .cache import CACHE
from .dispatch import Op, bucket

# ---------------------------------------------------------------------------------------
# Whole-sequence attention
# ---------------------------------------------------------------------------------------


def _attention_reference(q, k, v, bias=None, scale: float | None = None, dropout_p: float = 0.0):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    attn = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        attn = attn + bias
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p, training=True)
    return attn @ v


def _attention_key(q, k, v, bias=None, scale=None, dropout_p=0.0) -> tuple:
    problems = q.numel() // (q.shape[-2] * q.shape[-1])
    return (f"Nq<={bucket(q.shape[-2])}", f"Nk<={bucket(k.shape[-2])}", f"d={q.shape[-1]}",
            f"problems<={bucket(problems)}", "bias" if bias is not None else "", "dropout" if dropout_p > 0 else "")


attention = Op("attention", _attention_reference, _attention_key)
attention.__doc__ = """``softmax(q k^T * scale + bias) v`` over the last two dimensions, with dropout
``dropout_p`` on the weights. Shapes: q ``(..., Nq, d)``, k and v ``(..., Nk, d)``, bias
broadcastable to ``(..., Nq, Nk)``; returns ``(..., Nq, d)``. ``scale`` defaults to ``d ** -0.5``."""


@attention.candidate("sdpa", traceable=True)
def _attention_sdpa(q, k, v, bias=None, scale=None, dropout_p=0.0):
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)


# ---------------------------------------------------------------------------------------
# Windowed attention
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowBias:
    """The additive terms of windowed attention, described rather than computed, so that each
    candidate builds (and caches) them in the form it needs.

    Attributes:
        relative: computes the relative-position bias ``(h, N, N)`` (with a gradient when its
            parameters have one).
        depends_on: the tensors ``relative`` is computed from; cached forms are rebuilt when
            one of them changes.
        mask: the shift mask ``(nW, N, N)`` (0 or -100), or ``None``.
        key: identifies the bias and the mask (module, window, grid, shift) in caches.
    """

    relative: Callable[[], torch.Tensor]
    depends_on: Sequence[torch.Tensor]
    mask: torch.Tensor | None
    key: Hashable

    def learns(self) -> bool:
        """Whether a gradient must reach the bias's parameters in this call."""
        return torch.is_grad_enabled() and any(t.requires_grad for t in self.depends_on)

    def dense(self, masked: bool = True) -> torch.Tensor:
        """``(1, h, N, N)``, or ``(nW, h, N, N)`` with the mask added (``masked``)."""
        bias = self.relative().unsqueeze(0)
        if masked and self.mask is not None:
            bias = bias + self.mask.unsqueeze(1).to(bias.dtype)
        return bias

    def cached(self, form: str, build: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``build(self.dense())``, kept in the backends' cache while the parameters it comes
        from are unchanged."""
        return CACHE.get(("window bias", form, self.key), lambda: build(self.dense()), self.depends_on)


def _split(qkv: torch.Tensor, heads: int):
    """``(B*nW, N, 3C)`` -> q, k, v ``(B*nW, h, N, d)`` (strided views)."""
    b_, n, c3 = qkv.shape
    return qkv.reshape(b_, n, 3, heads, c3 // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """``(B*nW, h, N, d)`` -> ``(B*nW, N, h*d)``."""
    b_, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b_, n, h * d)


def _scores(q, k, scale, cosine: bool):
    if cosine:
        return (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * scale
    return (q * scale) @ k.transpose(-2, -1)


def _window_reference(qkv, bias: WindowBias, heads: int, scale, dropout_p: float = 0.0, cosine: bool = False):
    b_, n, _ = qkv.shape
    q, k, v = _split(qkv, heads)
    attn = _scores(q, k, scale, cosine)
    attn = attn + bias.relative().unsqueeze(0)
    if bias.mask is not None:  # in the model's dtype, as the official buffer would be
        nw = bias.mask.shape[0]
        mask = bias.mask if qkv.device.type == "cpu" and torch.is_autocast_enabled("cpu") else bias.mask.to(attn.dtype)
        attn = attn.view(b_ // nw, nw, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p, training=True)
    return _merge(attn @ v)


def _window_key(qkv, bias: WindowBias, heads, scale, dropout_p=0.0, cosine=False) -> tuple:
    b_, n, c3 = qkv.shape
    return (f"N={n}", f"heads={heads}", f"d={c3 // (3 * heads)}", f"windows<={bucket(b_)}",
            "masked" if bias.mask is not None else "", "cosine" if cosine else "", "dropout" if dropout_p > 0 else "",
            "bias learns" if bias.learns() else "")


window_attention = Op("window_attention", _window_reference, _window_key)
window_attention.__doc__ = """Attention inside every window: ``qkv`` ``(B*nW, N, 3C)`` (channels
``[q | k | v]``, each ``heads`` heads), ``bias`` a :class:`WindowBias`, ``scale`` a number or
``(h, 1, 1)`` (per head), ``cosine`` for scaled cosine attention; returns ``(B*nW, N, C)``."""


def _native_reason(qkv, bias, heads, scale, dropout_p=0.0, cosine=False) -> str | None:
    if dropout_p > 0.0:
        return "no dropout (inference only)"
    if bias.learns():
        return "inference only (no gradient to the bias)"
    return native.takes(qkv)


@window_attention.candidate("native", _native_reason)
def _window_native(qkv, bias: WindowBias, heads, scale, dropout_p=0.0, cosine=False):
    b_, n, c3 = qkv.shape
    if isinstance(scale, torch.Tensor):
        scale = scale.reshape(-1)
    dense = bias.cached(f"native{native.lanes()}", native.pad_bias)
    out = native.window_attention(qkv.contiguous().view(1, b_ * n, c3), dense, heads, n, scale, cosine)
    return out.view(b_, n, c3 // 3)


def _frozen_reason(qkv, bias, heads, scale, dropout_p=0.0, cosine=False) -> str | None:
    return "the bias learns here (see matmul)" if bias.learns() else None


@window_attention.candidate("sdpa", _frozen_reason, traceable=True)
def _window_sdpa(qkv, bias: WindowBias, heads, scale, dropout_p=0.0, cosine=False):
    q, k, v = _split(qkv, heads)
    sdpa_scale = None if isinstance(scale, torch.Tensor) else scale
    if cosine or sdpa_scale is None:  # the scale per head goes into q
        q = F.normalize(q, dim=-1) * scale if cosine else q * scale
        k = F.normalize(k, dim=-1) if cosine else k
        sdpa_scale = 1.0
    dense = bias.cached(str(q.dtype), lambda d: d.to(q.dtype))
    if bias.mask is None or dense.shape[0] == 1:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, dropout_p=dropout_p, scale=sdpa_scale)
        return _merge(out)
    # one image at a time: its windows' masks as they are, nothing repeated over the batch
    nw, (b_, h, n, d) = dense.shape[0], q.shape
    qs, ks, vs = (t.reshape(b_ // nw, nw, h, n, d) for t in (q, k, v))
    out = torch.stack([F.scaled_dot_product_attention(qs[i], ks[i], vs[i], attn_mask=dense, dropout_p=dropout_p,
                                                      scale=sdpa_scale) for i in range(b_ // nw)])
    return _merge(out.view(b_, h, n, d))


@window_attention.candidate("matmul", traceable=True)
def _window_matmul(qkv, bias: WindowBias, heads, scale, dropout_p=0.0, cosine=False):
    b_, n, _ = qkv.shape
    q, k, v = _split(qkv, heads)
    attn = _scores(q, k, scale, cosine)
    dense = bias.dense() if bias.learns() else bias.cached("fp32", lambda d: d)
    attn = (attn.view(-1, dense.shape[0], heads, n, n) + dense).view_as(attn)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p, training=True)
    return _merge(attn.to(v.dtype) @ v)
