"""The training losses against the formulas written out by hand."""

import math

import pytest
import torch
from torch import nn

from tessera.losses import DistillationLoss
from tessera.models import DistilledVisionTransformer


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood, from the definition of the softmax."""
    log_probs = logits - logits.exp().sum(-1, keepdim=True).log()
    return -log_probs[torch.arange(len(labels)), labels].mean()


def test_hard_distillation_is_half_label_loss_half_teacher_decision_loss():
    torch.manual_seed(0)
    cls_logits, dist_logits, teacher = torch.randn(3, 4, 10).unbind(0)
    labels = torch.tensor([1, 7, 3, 0])
    loss = DistillationLoss()((cls_logits, dist_logits), labels, teacher)
    expected = 0.5 * nll(cls_logits, labels) + 0.5 * nll(dist_logits, teacher.argmax(-1))
    torch.testing.assert_close(loss, expected)
    # the teacher's decisions, not the labels, drive the distillation head
    assert not torch.allclose(loss, 0.5 * nll(cls_logits, labels) + 0.5 * nll(dist_logits, labels))


def test_soft_distillation_is_the_scaled_kl_divergence():
    torch.manual_seed(0)
    cls_logits, dist_logits, teacher = torch.randn(3, 4, 10).unbind(0)
    labels = torch.tensor([1, 7, 3, 0])
    tau, alpha = 3.0, 0.3
    loss = DistillationLoss(kind="soft", alpha=alpha, tau=tau)((cls_logits, dist_logits), labels, teacher)
    p_teacher = (teacher / tau).softmax(-1)
    p_student = (dist_logits / tau).softmax(-1)
    kl = (p_teacher * (p_teacher.log() - p_student.log())).sum() * tau**2 / dist_logits.numel()
    torch.testing.assert_close(loss, (1 - alpha) * nll(cls_logits, labels) + alpha * kl)


def test_label_smoothing_and_soft_targets_go_to_the_base_criterion():
    torch.manual_seed(0)
    cls_logits, dist_logits, teacher = torch.randn(3, 4, 10).unbind(0)
    mixed = torch.softmax(torch.randn(4, 10), -1)  # mixup/cutmix targets
    loss = DistillationLoss(nn.CrossEntropyLoss(label_smoothing=0.1))((cls_logits, dist_logits), mixed, teacher)
    smoothed = 0.9 * mixed + 0.1 / 10
    base = -(smoothed * cls_logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(loss, 0.5 * base + 0.5 * nll(dist_logits, teacher.argmax(-1)))


def test_no_gradient_reaches_the_teacher_and_both_heads_learn():
    torch.manual_seed(0)
    model = DistilledVisionTransformer(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2, num_classes=4)
    model.train().set_distilled_training(True)
    teacher = torch.randn(2, 4, requires_grad=True)
    loss = DistillationLoss()(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 3]), teacher)
    loss.backward()
    assert teacher.grad is None
    assert model.head.weight.grad.abs().sum() > 0 and model.head_dist.weight.grad.abs().sum() > 0
    assert model.dist_token.grad.abs().sum() > 0
    assert math.isfinite(loss.item())


def test_averaged_logits_are_a_clear_error():
    with pytest.raises(ValueError, match="set_distilled_training"):
        DistillationLoss()(torch.randn(2, 4), torch.tensor([0, 1]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="teacher logits"):
        DistillationLoss()((torch.randn(2, 4), torch.randn(2, 4)), torch.tensor([0, 1]), torch.randn(2, 5))
    with pytest.raises(ValueError, match="kind"):
        DistillationLoss(kind="medium")


def test_soft_targets_with_smoothing_folded_in_equal_label_smoothing_on_hard_labels():
    from tessera.losses import classification_loss

    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    eps = 0.1
    soft = torch.full((6, 5), eps / 5).scatter_(1, labels[:, None], 1 - eps + eps / 5)
    hard = classification_loss(logits, labels, label_smoothing=eps)
    torch.testing.assert_close(classification_loss(logits, soft), hard)
    # and a bf16 logit is scored in float32
    assert classification_loss(logits.bfloat16(), labels).dtype == torch.float32
