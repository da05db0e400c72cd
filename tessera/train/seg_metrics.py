"""Segmentation metrics from a confusion matrix over pixels, as mmseg computes them.

Over the whole data set (not averaged per image), with pixels labelled ``ignore_index``
left out: per class ``c``, ``intersect = C[c, c]``, ``label = sum_j C[c, j]`` (pixels of
class ``c``), ``pred = sum_i C[i, c]`` (pixels predicted ``c``),
``union = label + pred - intersect``:

* IoU ``= intersect / union``, accuracy ``= intersect / label``, Dice
  ``= 2 intersect / (label + pred)``; NaN for a class that neither occurs nor is predicted
  (IoU, Dice) or does not occur (accuracy);
* ``miou``, ``macc``, ``mdice``: their means over the classes that are not NaN;
* ``acc`` (mmseg's ``aAcc``): correct pixels over labelled pixels.

Scores are percentages, as the classification accuracies.
"""

from __future__ import annotations

import math

import torch

from ..errors import DataError
from .distributed import DistInfo, all_reduce_sum


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = 255) -> torch.Tensor:
    """``(num_classes, num_classes)`` pixel counts, rows the true class, columns the
    predicted one, over the pixels whose label is not ``ignore_index``. Raises a DataError
    for a label that is neither a class nor ``ignore_index``."""
    target = target.long()
    valid = target != ignore_index
    t, p = target[valid], pred[valid].long()
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        bad = int(t.max()) if int(t.max()) >= num_classes else int(t.min())
        raise DataError(f"a label map holds label {bad}, but there are {num_classes} classes (0..{num_classes - 1}) "
                        f"and the ignore index is {ignore_index}")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).view(num_classes, num_classes)


def scores_from_confusion(confusion: torch.Tensor) -> dict[str, object]:
    """The scores of the module docstring from a confusion matrix: ``miou``, ``macc``,
    ``mdice``, ``acc`` (percent) and the per-class lists ``iou``, ``class_acc``, ``dice``."""
    c = confusion.double().cpu()
    intersect = c.diag()
    label, pred = c.sum(1), c.sum(0)
    union = label + pred - intersect
    nan = torch.tensor(math.nan, dtype=torch.float64)
    iou = torch.where(union > 0, intersect / union, nan)
    class_acc = torch.where(label > 0, intersect / label, nan)
    dice = torch.where(label + pred > 0, 2 * intersect / (label + pred), nan)

    def mean(v: torch.Tensor) -> float:
        v = v[~v.isnan()]
        return 100.0 * float(v.mean()) if v.numel() else math.nan

    total = float(label.sum())
    return {
        "miou": mean(iou), "macc": mean(class_acc), "mdice": mean(dice),
        "acc": 100.0 * float(intersect.sum()) / total if total else math.nan,
        "iou": [100.0 * float(v) for v in iou], "class_acc": [100.0 * float(v) for v in class_acc],
        "dice": [100.0 * float(v) for v in dice],
    }


class SegmentationMeter:
    """Accumulates the pixel confusion matrix and the loss (summed over labelled pixels);
    ``reduce`` sums over processes, ``result`` gives the scores."""

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu") -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, labelled pixels, images

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, loss_sum: torch.Tensor | float = 0.0) -> None:
        """``pred`` and ``target`` ``(B, H, W)`` (or one image ``(H, W)``); ``loss_sum`` the
        summed per-pixel loss of the labelled pixels."""
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index).to(self.confusion.device)
        pixels = (target != self.ignore_index).sum()
        images = target.shape[0] if target.dim() == 3 else 1
        self.sums += torch.stack([torch.as_tensor(loss_sum, dtype=torch.float64).to(self.sums.device).reshape(()),
                                  pixels.to(self.sums), torch.tensor(float(images), dtype=torch.float64,
                                                                     device=self.sums.device)])

    def reduce(self, info: DistInfo) -> SegmentationMeter:
        all_reduce_sum(self.confusion, info)
        all_reduce_sum(self.sums, info)
        return self

    def result(self) -> dict[str, object]:
        """``loss`` (per labelled pixel), ``num_samples`` (images), ``num_pixels``, and
        :func:`scores_from_confusion`."""
        loss, pixels, images = self.sums.tolist()
        return {"loss": loss / pixels if pixels else math.nan, "num_samples": int(images), "num_pixels": int(pixels),
                **scores_from_confusion(self.confusion)}
