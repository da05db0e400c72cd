"""How tessera's models run on this machine.

The models (``tessera.models``, ``tessera.layers``) say *what* is computed, in plain PyTorch and
in the order of the official code. Where an operation can be computed faster, the model calls
it through this package, the way it would call ``F.linear``; every accelerated implementation
lives here, each with a plain-PyTorch *reference* beside it:

=========================  ===================================================================
op                         candidates (besides ``reference``)
=========================  ===================================================================
``linear``                 ``onednn``: oneDNN's matrix product with the bias, GELU and the
                           residual add inside it; ``onednn_packed``: the same in inference,
                           the weight reordered for oneDNN once and kept;
                           ``onednn_packed_then_add``: the residual added in a second pass
``attention``              ``sdpa``: PyTorch's fused attention
``window_attention``       ``native`` (tessera's C++ kernel), ``sdpa``, ``matmul``
``layer_norm_for_matmul``  ``native``: tessera's kernel (inference), under bf16 autocast the
                           fp32 stream normalised straight to bf16
``swin_blocks``            ``window_order``: a Swin stage with its tokens kept in window order
=========================  ===================================================================

Which candidate runs is *measured* (:mod:`tessera.backends.dispatch`): the first call of each
kind tries every candidate that can take it, drops those that fail or disagree with the
reference, times the rest and keeps the fastest, for this process and on disk.

* :func:`use` -- ``"auto"`` (the default), ``"reference"``, a candidate's name, or
  ``"auto,-native"``; as a setting or a context. ``TESSERA_BACKEND`` sets the start.
* :func:`choices` -- what was chosen so far, with the times and the reasons.
* :func:`clear_caches` -- drop the cached plans, biases and weight copies.
* :mod:`capability` -- what this host has; :func:`capability.simulate` for tests.
* :func:`precision_policy` -- bf16 autocast on a CPU without native bf16 computes in fp32.
* :mod:`memory` -- large freed blocks kept for reuse by the C allocator (``-malloc``: not).
"""

from __future__ import annotations

import contextlib
import logging
import threading

import torch

from . import capability, memory
from .attention import WindowBias, attention, window_attention
from .cache import CACHE, cached_cast
from .dispatch import Setting, choices, current, format_choices, ops, use
from .linear import linear
from .norm import layer_norm_for_matmul
from .swin import swin_blocks

logger = logging.getLogger(__name__)

__all__ = [
    "use", "current", "Setting", "choices", "format_choices", "ops", "clear_caches", "capability", "memory",
    "precision_policy",
    "linear", "attention", "window_attention", "WindowBias", "layer_norm_for_matmul", "swin_blocks",
    "cached_cast", "CACHE",
]


def clear_caches() -> None:
    """Drop every cached window plan, bias and mask buffer and low-precision weight copy."""
    CACHE.clear()


_said_fp32 = threading.Event()


def precision_policy(device: torch.device | str = "cpu"):
    """The context a model runs its forward pass in: under CPU bf16 autocast on a processor
    without native bf16 arithmetic (where PyTorch would emulate every bf16 product at a
    fraction of the fp32 speed), autocast is switched off and the model computes in fp32,
    said once in the log; elsewhere nothing changes."""
    device_type = torch.device(device).type
    if device_type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return contextlib.nullcontext()
    if torch.get_autocast_dtype("cpu") != torch.bfloat16 or current().mode == "reference":
        return contextlib.nullcontext()
    if torch.compiler.is_compiling():
        return contextlib.nullcontext()
    native, why = capability.native_bf16()
    if native:
        return contextlib.nullcontext()
    if not _said_fp32.is_set():
        _said_fp32.set()
        logger.warning("this CPU has no native bf16 arithmetic (%s): bf16 autocast computes in fp32 here", why)
    return torch.autocast("cpu", enabled=False)
