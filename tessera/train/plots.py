"""Figures of a run: loss and accuracy curves per epoch, and a confusion matrix. Drawn on
matplotlib ``Figure`` objects rendered by Agg (no display, and no change to pyplot's
backend of the caller) and written atomically."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..atomic import atomic_path


def _save(fig: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(h["epoch"], h[key]) for h in history if h.get(key) is not None and not math.isnan(h[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


#: the validation scores of a classifier's curves: (metrics.jsonl key, legend)
ACCURACY_CURVES = (("val_top1", "top-1"), ("val_top5", "top-5"), ("ema_val_top1", "top-1 (EMA)"))


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | os.PathLike,
                scores: Sequence[tuple[str, str]] = ACCURACY_CURVES, title: str = "validation accuracy",
                ylabel: str = "accuracy (%)") -> None:
    """Two panels: training and validation loss; the validation ``scores`` in percent
    (top-1/top-5 and the EMA's by default)."""
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, label in (("train_loss", "train"), ("val_loss", "validation"), ("ema_val_loss", "validation (EMA)")):
        x, y = _series(history, key)
        if x:
            ax_loss.plot(x, y, marker=".", label=label)
    for key, label in scores:
        x, y = _series(history, key)
        if x:
            ax_acc.plot(x, y, marker=".", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel=ylabel, title=title)
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike,
                   title: str = "confusion matrix") -> None:
    """Rows: true class; columns: predicted class; cells coloured by the row's fraction."""
    import numpy as np

    m = np.asarray(confusion, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(classes)
    side = min(16.0, max(4.0, 0.45 * n + 2))
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if frac[i, j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    _save(fig, path)
