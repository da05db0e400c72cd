"""Classification metrics (loss, top-1, top-5, confusion matrix), summed over processes,
and the per-epoch log ``metrics.jsonl``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_text_atomic
from .distributed import DistInfo, all_reduce_sum


class ClassificationMeter:
    """Accumulates log-probabilities against labels; ``reduce`` sums over processes.

    Accuracies are percentages (as the official logs). Top-5 is reported only for more than
    five classes (``None`` otherwise: with five classes or fewer it is 100 % by definition).
    """

    def __init__(self, num_classes: int, device: torch.device | str = "cpu") -> None:
        self.num_classes = num_classes
        self.k = min(5, num_classes)
        self.sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, n, top1, top5
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, log_probs: torch.Tensor, target: torch.Tensor) -> None:
        """``log_probs (B, C)`` (log-softmax of logits, or the log of averaged probabilities)."""
        log_probs = log_probs.float()
        loss = -log_probs.gather(1, target.view(-1, 1)).sum()
        topk = log_probs.topk(self.k, dim=1).indices
        hits = topk == target.view(-1, 1)
        self.sums += torch.stack([loss.double(), torch.tensor(float(target.numel()), dtype=torch.float64,
                                  device=self.sums.device), hits[:, 0].sum().double(), hits.any(1).sum().double()])
        idx = target * self.num_classes + topk[:, 0]
        self.confusion += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def reduce(self, info: DistInfo) -> ClassificationMeter:
        all_reduce_sum(self.sums, info)
        all_reduce_sum(self.confusion, info)
        return self

    def result(self) -> dict[str, float]:
        loss, n, top1, top5 = self.sums.tolist()
        has_top5 = self.num_classes > 5
        if n == 0:
            return {"loss": math.nan, "top1": math.nan, "top5": math.nan if has_top5 else None, "num_samples": 0}
        return {"loss": loss / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n if has_top5 else None,
                "num_samples": int(n)}

    def per_class_accuracy(self) -> list[float]:
        """Top-1 per true class, in percent (NaN for a class without samples)."""
        c = self.confusion.double()
        totals = c.sum(1)
        return [100.0 * float(c[i, i] / t) if t > 0 else math.nan for i, t in enumerate(totals)]


def significant(value: float, digits: int = 3) -> str:
    """A rate for people: ``digits`` significant digits (``0.0123``, ``4.56``, ``78.9``),
    whole numbers from ``10 ** (digits - 1)`` up (``123``, ``1234``)."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    return f"{value:#.{digits}g}"  # '#' keeps trailing zeros: 0.970, not 0.97


def write_metrics(path: str | os.PathLike, history: Sequence[Mapping[str, Any]]) -> None:
    """Write ``metrics.jsonl`` (one JSON object per epoch) from the whole history, atomically:
    a resumed run rewrites it from its saved history, so it never holds an epoch twice."""
    write_text_atomic(path, "".join(json.dumps(dict(h)) + "\n" for h in history))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []
