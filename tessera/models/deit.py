"""DeiT (Touvron et al., 2021): the ViT trained data-efficiently, and its distilled form.

DeiT-Ti/S/B are ViTs (the same :class:`~tessera.models.vit.VisionTransformer`); the distilled
models add a second learned token, the *distillation token*, which goes through the blocks
next to the class token and has its own head, ``head_dist``. Training pulls the class head
towards the labels and the distillation head towards a teacher's predictions
(:class:`tessera.losses.DistillationLoss`); at inference the two heads are averaged.

Names are timm's (``dist_token``, ``head_dist``; the position embedding covers both prefix
tokens), so timm's and the official DeiT checkpoints load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers.helpers import prod
from ..registry import register_model
from .vit import VisionTransformer, vit_size

__all__ = ["DistilledVisionTransformer"]


class DistilledVisionTransformer(VisionTransformer):
    """DeiT with a distillation token and head.

    Args: those of :class:`~tessera.models.vit.VisionTransformer` (timm's names);
    ``global_pool`` must be ``"token"`` and there is a class token.

    ``forward`` returns the average of the class head and the distillation head, in eval
    and, by default, in training. After ``set_distilled_training(True)`` a model in training
    mode returns the pair ``(cls_logits, dist_logits)`` instead, for
    :class:`tessera.losses.DistillationLoss`.

    Shape: ``(B, in_chans, H, W) -> (B, num_classes)``; ``forward_features`` gives
    ``(B, 2 + N, C)`` with the class token at 0 and the distillation token at 1.
    """

    def __init__(self, **kwargs: Any) -> None:
        if kwargs.get("global_pool", "token") != "token" or not kwargs.get("class_token", True):
            raise ValueError("a distilled ViT pools its class and distillation tokens: global_pool must be 'token'")
        if kwargs.get("no_embed_class") or kwargs.get("pos_embed", "learn") != "learn":
            raise ValueError("a distilled ViT has a learned position embedding over its prefix tokens")
        super().__init__(**kwargs)
        dim = self.embed_dim
        self.num_prefix_tokens = self.pos_embed_prefix_tokens = 2
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 2 + prod(self.patch_grid), dim))
        self.head_dist = nn.Linear(dim, self.num_classes) if self.num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if isinstance(self.head_dist, nn.Linear):
            nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
            nn.init.zeros_(self.head_dist.bias)
        self.distilled_training = False

    def set_distilled_training(self, enable: bool = True) -> None:
        """In training mode, return ``(cls_logits, dist_logits)`` instead of their average."""
        self.distilled_training = enable

    def _prefix_tokens(self) -> list[torch.Tensor]:
        return [self.cls_token, self.dist_token]

    def get_classifier(self) -> tuple[nn.Module, nn.Module]:
        return self.head, self.head_dist

    def reset_classifier(self, num_classes: int) -> None:
        """Replace both heads (``0`` removes them: ``forward`` returns the averaged tokens)."""
        super().reset_classifier(num_classes)
        self.head_dist = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head_dist, nn.Linear):
            nn.init.trunc_normal_(self.head_dist.weight, std=0.02)
            nn.init.zeros_(self.head_dist.bias)

    def forward_head(
        self, x: torch.Tensor, pre_logits: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, 2 + N, C) -> (B, num_classes)``: the average of the two heads, or the pair
        ``(cls_logits, dist_logits)`` in distilled training; ``pre_logits`` gives the average
        of the two tokens ``(B, C)``."""
        cls, dist = self.head_drop(x[:, 0]), self.head_drop(x[:, 1])
        if pre_logits:
            return (cls + dist) / 2
        cls, dist = self.head(cls), self.head_dist(dist)
        if self.distilled_training and self.training:
            return cls, dist
        return (cls + dist) / 2


# ---------------------------------------------------------------------------------------
# Registered variants: timm's deit_{tiny,small,base}[_distilled]_patch16_224
# ---------------------------------------------------------------------------------------


@register_model
def deit_t(**kwargs) -> VisionTransformer:
    """DeiT-Ti: ViT-Ti/16 (C192, 12 blocks, 3 heads)."""
    return VisionTransformer(**vit_size("t", **kwargs))


@register_model
def deit_s(**kwargs) -> VisionTransformer:
    """DeiT-S: ViT-S/16 (C384, 12 blocks, 6 heads)."""
    return VisionTransformer(**vit_size("s", **kwargs))


@register_model
def deit_b(**kwargs) -> VisionTransformer:
    """DeiT-B: ViT-B/16 (C768, 12 blocks, 12 heads)."""
    return VisionTransformer(**vit_size("b", **kwargs))


@register_model
def deit_t_distilled(**kwargs) -> DistilledVisionTransformer:
    """DeiT-Ti with a distillation token."""
    return DistilledVisionTransformer(**vit_size("t", **kwargs))


@register_model
def deit_s_distilled(**kwargs) -> DistilledVisionTransformer:
    """DeiT-S with a distillation token."""
    return DistilledVisionTransformer(**vit_size("s", **kwargs))


@register_model
def deit_b_distilled(**kwargs) -> DistilledVisionTransformer:
    """DeiT-B with a distillation token."""
    return DistilledVisionTransformer(**vit_size("b", **kwargs))
