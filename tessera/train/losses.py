"""Classification losses of the official recipe: cross-entropy on the soft targets that
mixup/cutmix produce (label smoothing already folded in), or with label smoothing on hard
labels when mixing is off."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_c -target[i, c] * log_softmax(logits)[i, c]`` for ``(B, C)`` targets."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Soft-target cross-entropy for ``(B, C)`` float targets, else cross-entropy on class
    indices with ``label_smoothing``. Computed in float32 whatever the autocast dtype."""
    if target.is_floating_point():
        return soft_target_cross_entropy(logits, target)
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
