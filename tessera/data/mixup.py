"""Batch mixup and cutmix with soft targets, as timm's ``Mixup`` in ``batch`` mode (the
official recipe: mixup 0.8, cutmix 1.0, switch 0.5, label smoothing 0.1 folded in).

Every image is mixed with the image at the mirrored position of the batch (``x.flip(0)``)
with one ratio ``lam`` for the whole batch; the targets are mixed by the same ratio (for
cutmix, the ratio of the pasted area after clipping the box). Each target row sums to one.
"""

from __future__ import annotations

import math

import torch


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """``(B,)`` class indices -> ``(B, C)``: ``1 - smoothing + smoothing / C`` on the class,
    ``smoothing / C`` elsewhere."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target.view(-1, 1), 1.0 - smoothing + off)


class Mixup:
    """``(x, target) -> (mixed x, soft targets (B, C))``.

    Args:
        mixup_alpha, cutmix_alpha: Beta parameters (0 turns that kind off).
        prob: probability of mixing a batch at all.
        switch_prob: probability of cutmix instead of mixup when both are on.
        label_smoothing: folded into the targets.
        num_classes: C.
    """

    def __init__(self, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1, num_classes: int = 1000) -> None:
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing, self.num_classes = label_smoothing, num_classes

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def _draw(self) -> tuple[float, bool]:
        """``(lam, use_cutmix)``, from the global torch generator (saved with the run)."""
        if torch.rand(()).item() >= self.prob:
            return 1.0, False
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or torch.rand(()).item() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        a = torch.tensor(float(alpha))
        return float(torch.distributions.Beta(a, a).sample()), use_cutmix

    @staticmethod
    def cutmix_box(lam: float, h: int, w: int) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` of a box of about ``1 - lam`` of the area, centred at
        a uniform position and clipped to the image."""
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(torch.randint(0, h, ()).item()), int(torch.randint(0, w, ()).item())
        return max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lam, use_cutmix = self._draw()
        if lam < 1.0:
            if use_cutmix:
                h, w = x.shape[-2:]
                t, b, l, r = self.cutmix_box(lam, h, w)
                x = x.clone()
                x[..., t:b, l:r] = x.flip(0)[..., t:b, l:r]
                lam = 1.0 - (b - t) * (r - l) / float(h * w)
            else:
                x = x * lam + x.flip(0) * (1.0 - lam)
        y = smooth_one_hot(target, self.num_classes, self.label_smoothing)
        return x, y * lam + y.flip(0) * (1.0 - lam)
