"""AdamW with the parameter groups of the official Swin recipe.

No weight decay on: every bias, every 1-D parameter (the norms' weights), and the names
the model lists in ``no_weight_decay()`` (relative-position bias tables, absolute position
embeddings, class tokens). For fine-tuning, every parameter outside the classifier head can
get a smaller learning rate (``backbone_lr_mult``).
"""

from __future__ import annotations

import torch
from torch import nn

from .recipe import Recipe


def scaled_lr(lr: float, recipe: Recipe) -> float:
    """The official linear scaling: ``lr * batch_size / lr_base_batch`` (the step's batch,
    over every process and accumulation step)."""
    base = recipe.optim.lr_base_batch
    return lr if not base else lr * recipe.data.batch_size / base


def _head_names(model: nn.Module) -> set[str]:
    get = getattr(model, "get_classifier", None)
    heads = get() if get is not None else None
    if heads is None:
        return set()
    heads = heads if isinstance(heads, (list, tuple)) else [heads]
    ids = {id(p) for h in heads for p in h.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def is_no_decay(name: str, param: torch.Tensor, skip: set[str]) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or name in skip or name.split(".")[-1] in skip


def param_groups(model: nn.Module, weight_decay: float, backbone_lr_mult: float = 1.0) -> list[dict]:
    """Split the trainable parameters into groups with and without weight decay (and, when
    ``backbone_lr_mult != 1``, head and backbone). Each group carries ``lr_mult`` and a
    ``name`` for the logs."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    heads = _head_names(model) if backbone_lr_mult != 1.0 else set()
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay, is_head = is_no_decay(name, p, skip), name in heads
        key = (no_decay, is_head or backbone_lr_mult == 1.0)
        if key not in groups:
            part = "head" if is_head else ("backbone" if backbone_lr_mult != 1.0 else "all")
            groups[key] = {
                "name": f"{part}_{'no_decay' if no_decay else 'decay'}",
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_mult": 1.0 if key[1] else backbone_lr_mult,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW (betas, eps and weight decay of the recipe) over :func:`param_groups`; the
    learning rates are set by the schedule at every step."""
    o = recipe.optim
    groups = param_groups(model, o.weight_decay, o.backbone_lr_mult)
    for g in groups:
        g.pop("param_names")
    return torch.optim.AdamW(groups, lr=scaled_lr(o.lr, recipe), betas=o.betas, eps=o.eps,
                             weight_decay=o.weight_decay)
