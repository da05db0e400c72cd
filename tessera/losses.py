"""Training losses: the classification loss of the recipes (cross-entropy on hard labels or
on the soft targets of mixup/cutmix), DeiT's distillation objective, and the segmentation
losses (mmseg's per-pixel cross-entropy, Swin-Unet's Dice loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DistillationLoss", "classification_loss", "dice_loss", "pixel_cross_entropy", "segmentation_loss",
           "soft_target_cross_entropy"]


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_i sum_c -target[i, c] * log_softmax(logits)[i, c]`` for ``(B, C)`` targets (the
    class probabilities that mixup/cutmix produce, label smoothing already folded in)."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def classification_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Soft-target cross-entropy for ``(B, C)`` float targets, else cross-entropy on class
    indices ``(B,)`` with ``label_smoothing``. Computed in float32 whatever the autocast dtype."""
    if target.is_floating_point():
        return soft_target_cross_entropy(logits, target)
    return F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)


class DistillationLoss(nn.Module):
    """DeiT's distillation objective for a model with a class head and a distillation head
    (:class:`tessera.models.DistilledVisionTransformer` after ``set_distilled_training(True)``).

    ``loss = (1 - alpha) * base_criterion(cls_logits, target) + alpha * distill`` where, with
    ``kind="hard"`` (DeiT's best, ``alpha = 0.5``), ``distill`` is the cross-entropy of the
    distillation head against the teacher's hard decisions ``teacher_logits.argmax(-1)``;
    with ``kind="soft"`` it is ``tau**2 * KL(softmax(teacher / tau) || softmax(dist / tau))``
    averaged over the logits, as in the DeiT code.

    Args:
        base_criterion: the loss of the class head against the labels (default
            ``nn.CrossEntropyLoss()``; pass ``nn.CrossEntropyLoss(label_smoothing=0.1)`` for
            DeiT's recipe).
        kind: ``"hard"`` or ``"soft"``.
        alpha: weight of the distillation term.
        tau: temperature of the soft distillation.

    Call: ``loss(outputs, target, teacher_logits)`` with ``outputs`` the pair
    ``(cls_logits, dist_logits)``, each ``(B, K)``; ``target`` the labels ``(B,)`` or class
    probabilities ``(B, K)``; ``teacher_logits`` ``(B, K)`` (no gradient flows into them).
    Returns a scalar.
    """

    def __init__(
        self, base_criterion: nn.Module | None = None, kind: str = "hard", alpha: float = 0.5, tau: float = 1.0
    ) -> None:
        super().__init__()
        if kind not in ("hard", "soft"):
            raise ValueError(f"unknown distillation kind {kind!r}; expected 'hard' or 'soft'")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.base_criterion = base_criterion if base_criterion is not None else nn.CrossEntropyLoss()
        self.kind = kind
        self.alpha = alpha
        self.tau = tau

    def forward(
        self, outputs: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor, teacher_logits: torch.Tensor
    ) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor) or len(outputs) != 2:
            raise ValueError(
                "DistillationLoss needs the pair (cls_logits, dist_logits); "
                "call set_distilled_training(True) on the model and keep it in training mode"
            )
        cls_logits, dist_logits = outputs
        if teacher_logits.shape != dist_logits.shape:
            raise ValueError(
                f"teacher logits of shape {tuple(teacher_logits.shape)} do not match the "
                f"distillation logits {tuple(dist_logits.shape)}"
            )
        teacher_logits = teacher_logits.detach()
        base = self.base_criterion(cls_logits, target)
        if self.kind == "hard":
            distill = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=-1))
        else:
            t = self.tau
            distill = F.kl_div(
                F.log_softmax(dist_logits / t, dim=-1),
                F.log_softmax(teacher_logits / t, dim=-1),
                reduction="sum",
                log_target=True,
            ) * (t * t) / dist_logits.numel()
        return (1.0 - self.alpha) * base + self.alpha * distill


def pixel_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255,
                        class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """mmseg's ``CrossEntropyLoss``: per-pixel cross-entropy of ``(B, K, H, W)`` logits against
    ``(B, H, W)`` labels, ignored pixels counting 0, averaged over all pixels (ignored ones
    included: mmseg's ``avg_non_ignore=False``). In float32.

    ``class_weight`` ``(K,)`` (mmseg's ``class_weight``) multiplies each pixel's loss by the
    weight of its true class; the average is still over the pixels, not over the weights."""
    weight = None if class_weight is None else class_weight.to(device=logits.device, dtype=torch.float32)
    loss = F.cross_entropy(logits.float(), target.long(), weight=weight, ignore_index=ignore_index, reduction="none")
    return loss.mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, smooth: float = 1e-5) -> torch.Tensor:
    """Swin-Unet's ``DiceLoss`` on softmax probabilities: per class ``c``,
    ``1 - (2 sum(p_c t_c) + s) / (sum(p_c^2) + sum(t_c^2) + s)`` over the whole batch (``t``
    the one-hot labels), averaged over the classes; ignored pixels count in neither sum."""
    probs = torch.softmax(logits.float(), dim=1)
    target = target.long()
    valid = (target != ignore_index).unsqueeze(1)
    one_hot = F.one_hot(target.masked_fill(~valid.squeeze(1), 0), probs.shape[1]).movedim(-1, 1).float() * valid
    probs = probs * valid
    dims = (0, 2, 3)
    intersect = (probs * one_hot).sum(dims)
    dice = (2 * intersect + smooth) / (probs.square().sum(dims) + one_hot.square().sum(dims) + smooth)
    return (1 - dice).mean()


def segmentation_loss(outputs: torch.Tensor | dict[str, torch.Tensor], target: torch.Tensor,
                      weights: dict[str, float] | None = None, ce_weight: float = 1.0, dice_weight: float = 0.0,
                      ignore_index: int = 255, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_k weights[k] * (ce_weight * CE + dice_weight * Dice)(outputs[k], target)`` over
    the outputs of a segmentation model (one tensor, or a dict such as UperNet's ``out`` and
    ``aux`` in training; ``weights`` its ``loss_weights``). Every output is ``(B, K, h, w)``,
    resized bilinearly to the labels' size if it differs (as mmseg's losses do). ``class_weight``
    ``(K,)`` weights the cross-entropy per true class (see :func:`pixel_cross_entropy`)."""
    if isinstance(outputs, torch.Tensor):
        outputs = {"out": outputs}
    total = None
    for key, logits in outputs.items():
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        loss = 0.0
        if ce_weight:
            loss = ce_weight * pixel_cross_entropy(logits, target, ignore_index, class_weight)
        if dice_weight:
            loss = loss + dice_weight * dice_loss(logits, target, ignore_index)
        loss = loss * (weights or {}).get(key, 1.0)
        total = loss if total is None else total + loss
    return total
