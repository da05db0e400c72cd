"""What the training loop needs to know about the problem it trains for: a :class:`Task`.

The loop (:class:`tessera.train.Trainer`) is the same for every task: data, steps,
checkpoints, resuming. A task supplies the loss, the batch mixing, the validation and test
scores, the score that picks ``best.safetensors``, the columns of the epoch summary and
the curves. ``recipe.task`` selects it:

* :class:`ClassificationTask`: cross-entropy (soft targets with mixup/cutmix), top-1/top-5,
  video-level and clip-level scores for several views per sample;
* :class:`SegmentationTask`: per-pixel cross-entropy (plus Dice) over every output of the
  model, mIoU, pixel accuracy and Dice from the pixel confusion matrix, with whole-image or
  sliding-window inference and multi-scale + flip testing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.loader import SkippedSamples
from ..data.mixup import Mixup
from ..errors import ConfigError
from ..losses import classification_loss, segmentation_loss
from .distributed import DistInfo
from .evaluation import clip_scores, evaluate
from .metrics import ClassificationMeter
from .plots import plot_curves
from .recipe import Recipe


class Task:
    """The interface (see the module docstring). ``metric_keys`` are the validation scores
    (written ``val_<key>`` to ``metrics.jsonl``), ``best_metric`` the one whose highest value
    (ties: the lowest loss) picks the best weights."""

    name: str
    metric_keys: tuple[str, ...]
    best_metric: str
    #: the columns of the epoch summary line
    summary_keys: tuple[str, ...]

    def criterion(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mixup(self, recipe: Recipe) -> Mixup:
        """The batch mixing of training (inactive for tasks that do not mix)."""
        return Mixup(0.0, 0.0, num_classes=self.num_classes)

    def prepare_model(self, model: nn.Module, info: DistInfo) -> nn.Module:
        """The model as it trains (on the device already)."""
        return model

    def validate(self, model: nn.Module, loader: DataLoader, transform: nn.Module, info: DistInfo,
                 amp_dtype: torch.dtype | None, skipped: SkippedSamples | None) -> dict[str, float]:
        """The ``metric_keys`` scores of ``model`` on ``loader``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def test(self, model: nn.Module, loader: DataLoader, transform: nn.Module, info: DistInfo,
             amp_dtype: torch.dtype | None, skipped: SkippedSamples | None) -> dict[str, Any]:
        """Everything ``test.json`` holds."""
        raise NotImplementedError  # pragma: no cover - abstract

    def plot(self, history: Sequence[dict[str, Any]], path) -> None:
        plot_curves(history, path)


class ClassificationTask(Task):
    name = "classification"
    metric_keys = ("loss", "top1", "top5")
    best_metric = "top1"
    summary_keys = ("val_loss", "val_top1", "val_top5", "ema_val_top1")

    def __init__(self, recipe: Recipe, classes: Sequence[str], model: nn.Module | None = None) -> None:
        self.recipe, self.num_classes = recipe, len(classes)
        self.label_smoothing = recipe.augment.label_smoothing

    def criterion(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return classification_loss(logits, target, self.label_smoothing)

    def mixup(self, recipe: Recipe) -> Mixup:
        a = recipe.augment
        return Mixup(a.mixup, a.cutmix, a.mixup_prob, a.switch_prob, a.label_smoothing, self.num_classes)

    def validate(self, model, loader, transform, info, amp_dtype, skipped) -> dict[str, float]:
        res = evaluate(model, loader, transform, self.num_classes, info, amp_dtype, skipped, progress="validate",
                       max_views=self.recipe.data.max_testing_views).result()
        return {k: res[k] for k in self.metric_keys}

    def test(self, model, loader, transform, info, amp_dtype, skipped) -> dict[str, Any]:
        views = getattr(loader.dataset, "num_views", 1)
        clips = ClassificationMeter(self.num_classes, info.device) if views > 1 else None
        meter = evaluate(model, loader, transform, self.num_classes, info, amp_dtype, skipped, per_view=clips,
                         max_views=self.recipe.data.max_testing_views)
        res = meter.result()
        if clips is not None:  # video level above (softmax over the views averaged), clip level here
            res.update(clip_scores(clips, views))
        return res


class SegmentationTask(Task):
    name = "segmentation"
    metric_keys = ("loss", "miou", "acc", "mdice")
    best_metric = "miou"
    summary_keys = ("val_loss", "val_miou", "val_acc", "ema_val_miou")

    def __init__(self, recipe: Recipe, classes: Sequence[str], model: nn.Module | None = None) -> None:
        from .seg_inference import EvalProtocol

        self.recipe, self.classes, self.num_classes = recipe, list(classes), len(classes)
        self.ignore_index = recipe.data.ignore_index
        self.protocol = EvalProtocol.from_data(recipe.data)
        self.loss_weights = dict(getattr(model, "loss_weights", {"out": 1.0}))
        self.align_corners = bool(getattr(model, "align_corners", False))
        weights = recipe.loss.class_weight
        if weights is not None and len(weights) != self.num_classes:
            raise ConfigError(f"loss.class_weight has {len(weights)} weights but the data has {self.num_classes} "
                              f"classes")
        self.class_weight = None if weights is None else torch.tensor(weights, dtype=torch.float32)

    def prepare_model(self, model: nn.Module, info: DistInfo) -> nn.Module:
        """On several GPUs, BatchNorm becomes SyncBatchNorm (the official configs' SyncBN)."""
        if info.distributed and info.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def criterion(self, outputs, target: torch.Tensor) -> torch.Tensor:
        lc = self.recipe.loss
        return segmentation_loss(outputs, target, self.loss_weights, lc.ce_weight, lc.dice_weight, self.ignore_index,
                                 self.class_weight)

    def evaluate(self, model, loader, transform, info, amp_dtype, skipped, progress: str | None = None):
        from .seg_inference import evaluate_segmentation

        return evaluate_segmentation(model, loader, transform, self.protocol, self.num_classes, info, amp_dtype,
                                     skipped, progress, self.ignore_index, self.align_corners)

    def validate(self, model, loader, transform, info, amp_dtype, skipped) -> dict[str, float]:
        res = self.evaluate(model, loader, transform, info, amp_dtype, skipped, progress="validate").result()
        return {k: res[k] for k in self.metric_keys}

    def test(self, model, loader, transform, info, amp_dtype, skipped) -> dict[str, Any]:
        meter = self.evaluate(model, loader, transform, info, amp_dtype, skipped)
        return segmentation_report(meter, self.classes, self.protocol)

    def plot(self, history, path) -> None:
        plot_curves(history, path, scores=(("val_miou", "mIoU"), ("val_acc", "pixel accuracy"),
                                           ("ema_val_miou", "mIoU (EMA)")), title="validation scores", ylabel="%")


def segmentation_report(meter, classes: Sequence[str], protocol) -> dict[str, Any]:
    """The scores of a segmentation evaluation as one JSON-able dict: ``miou``, ``acc``,
    ``macc``, ``mdice``, ``loss``, counts, the per-class IoU / accuracy / Dice by class name
    and the test protocol."""
    res = meter.result()
    per_class = {name: {"iou": iou, "acc": acc, "dice": dice}
                 for name, iou, acc, dice in zip(classes, res.pop("iou"), res.pop("class_acc"), res.pop("dice"))}
    return {**res, "per_class": per_class, "protocol": protocol.describe()}


TASKS = {"classification": ClassificationTask, "segmentation": SegmentationTask}


def build_task(recipe: Recipe, classes: Sequence[str], model: nn.Module | None = None) -> Task:
    """The task of ``recipe`` (``recipe.task``) for the data's ``classes`` and ``model``."""
    return TASKS[recipe.task](recipe, classes, model)
