"""Running a model for an explanation without changing it: its reference path, eval mode,
and the attention probabilities of its blocks.

Every explanation runs the model on its *reference path* (:func:`reference_path`, i.e.
``tessera.backends.use("reference")``): the plain, step-by-step computation that holds the
attention probabilities and keeps Swin's tokens in raster order. The backends' faster
candidates compute the same function but never hold the probabilities (fused kernels), and
Swin's ``window_order`` candidate keeps tokens in window order, bypassing the blocks' hooks.

Attention is read with :func:`capture_attention`: while it is active, every softmax
computed inside an attention module is recorded with the module's name (a
``TorchFunctionMode`` that is only pushed inside the block, so the normal path pays
nothing). Nothing is left behind: the backend setting is restored, the module hooks removed
and the function mode popped when the block ends, also on an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


@contextlib.contextmanager
def reference_path(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` on its reference path inside the block: every backend op runs its
    plain-PyTorch reference (``tessera.backends.use("reference")``), so each attention
    computes its scores and softmax step by step and Swin stages run each block's own
    ``forward`` (the official roll/partition code, tokens in raster order). The previous
    backend setting is restored afterwards; the model itself is not touched."""
    from .. import backends

    with backends.use("reference"):
        yield model


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block (dropout off, BatchNorm on its running
    statistics, which are then never updated) and without gradient checkpointing (which would
    run a layer's hooks again in the backward pass); each module's own settings are restored
    after."""
    modes = [(m, m.training) for m in model.modules()]
    checkpointing = [(m, m.__dict__["grad_checkpointing"]) for m in model.modules()
                     if isinstance(m.__dict__.get("grad_checkpointing"), bool)]
    model.eval()
    for module, _ in checkpointing:
        module.grad_checkpointing = False
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for module, value in checkpointing:
            module.grad_checkpointing = value


def attention_modules(model: nn.Module) -> dict[nn.Module, str]:
    """The modules of ``model`` that compute attention, with their names: every multi-head
    attention of tessera's layers and models (window, class, convolutional, biased)."""
    from ..layers.attention import Attention
    from ..layers.block import ClassAttention
    from ..models.cvt import ConvAttention
    from ..models.levit import _BiasedAttention

    kinds = (Attention, ClassAttention, ConvAttention, _BiasedAttention)
    return {m: name for name, m in model.named_modules() if isinstance(m, kinds)}


@dataclass
class AttentionRecord:
    """The attention probabilities one attention module computed in one call.

    Attributes:
        name: the module's name in the model (``blocks.3.attn``).
        module: the module itself.
        probs: the softmax, ``(..., heads, queries, keys)`` (for window attention
            ``(B * nW, heads, N, N)``).
    """

    name: str
    module: nn.Module
    probs: torch.Tensor


@dataclass
class AttentionCapture:
    """What :func:`capture_attention` records, in call order."""

    records: list[AttentionRecord] = field(default_factory=list)

    def of(self, name: str) -> list[AttentionRecord]:
        """The records of the module called ``name``."""
        return [r for r in self.records if r.name == name]


_SOFTMAX = {torch.softmax, torch.Tensor.softmax, F.softmax, torch.special.softmax}


class _SoftmaxRecorder(TorchFunctionMode):
    """Records the result of every softmax computed while an attention module runs."""

    def __init__(self, capture: AttentionCapture) -> None:
        super().__init__()
        self.capture = capture
        self.running: list[tuple[str, nn.Module]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SOFTMAX and self.running:
            name, module = self.running[-1]
            self.capture.records.append(AttentionRecord(name, module, out.detach()))
        return out


@contextlib.contextmanager
def capture_attention(model: nn.Module) -> Iterator[AttentionCapture]:
    """Record the attention probabilities of every attention module of ``model`` while the
    block runs. Use it together with :func:`reference_path` (the faster backends compute no
    probabilities to record)::

        with reference_path(model), capture_attention(model) as captured:
            model(x)
        captured.records[0].probs   # (B, heads, N, N) of the first block
    """
    capture = AttentionCapture()
    recorder = _SoftmaxRecorder(capture)
    handles = []

    def enter(name: str):
        def pre_hook(module, args):
            recorder.running.append((name, module))
        return pre_hook

    def leave(module, args, output):
        recorder.running.pop()

    try:
        for module, name in attention_modules(model).items():
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave))
        with recorder:
            yield capture
    finally:
        for handle in handles:
            handle.remove()
