"""What the semantic segmentation models have in common.

A segmentation model maps images ``(B, C_in, H, W)`` to per-pixel class logits
``(B, num_classes, H, W)`` at the input's resolution (bilinear, ``align_corners=False``, as
mmseg's ``encode_decode``). In training mode a model with auxiliary heads returns a dict of
such logits, ``{"out": ..., "aux": ...}``, every head's map resized to the input, and
``loss_weights`` says how much each one counts in the loss (mmseg's ``loss_weight``);
in eval mode it returns the main logits only, so that exported graphs have one output.

The head/features API follows the classifiers': ``forward_features(x)`` gives what the
decoder reads (a feature pyramid), ``forward_head(features)`` the main logits at the
decoder's own stride, ``get_classifier()`` the last 1x1 convolutions (re-initialised when
a checkpoint has another class count) and ``reset_classifier(num_classes)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ...layers.helpers import check_input
from ..base import TesseraModel


def resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resizing of ``(B, C, H, W)`` maps to ``size`` (mmseg's ``resize``); a no-op
    when the size already matches."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


class SegmentationModel(TesseraModel):
    """Base class of the segmentation models (see the module docstring).

    Subclasses set ``num_classes``, ``in_chans``, ``loss_weights`` and implement
    :meth:`forward_features`, :meth:`decode` (features to a dict of head logits at their
    strides) and :meth:`get_classifier` / :meth:`reset_classifier`.
    """

    task = "segmentation"
    #: the weight of each output of :meth:`decode` in the training loss
    loss_weights: dict[str, float] = {"out": 1.0}
    align_corners: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.default_cfg.update(crop_pct=1.0, interpolation="bilinear")

    #: the smallest input side (the backbone's first patch)
    min_input_size: int = 1

    def _check(self, x: torch.Tensor) -> None:
        side = self.min_input_size
        check_input(x, rank=4, channels=self.in_chans, layout=f"(B, {self.in_chans}, H, W)", min_size=(side, side))

    def decode(self, features: Any) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: Any, pre_logits: bool = False) -> torch.Tensor:
        """The main head's logits at its own stride (``pre_logits`` is not supported)."""
        if pre_logits:
            raise ValueError(f"{type(self).__name__} has no pre-logits features")
        return self.decode(features)["out"]

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """``(B, C_in, H, W) -> (B, num_classes, H, W)``; in training mode with auxiliary
        heads, a dict of such maps (``out``, ``aux``)."""
        self._check(x)
        outputs = self.decode(self.forward_features(x))
        size = tuple(x.shape[-2:])
        if self.training and len(outputs) > 1:
            return {k: resize(v, size, self.align_corners) for k, v in outputs.items()}
        return resize(outputs["out"], size, self.align_corners)

    def no_weight_decay(self) -> set[str]:
        # the tables and embeddings of the backbone, by their last name (matched that way by
        # tessera.train.optim whatever the prefix)
        return {"relative_position_bias_table", "absolute_pos_embed"}
