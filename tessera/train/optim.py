"""AdamW with the parameter groups of the official Swin recipes.

``standard`` groups (the official image recipe): no weight decay on every bias, every 1-D
parameter (the norms' weights), and the names the model lists in ``no_weight_decay()``
(relative-position bias tables, absolute position embeddings, class tokens). For
fine-tuning, every parameter outside the classifier head can get a smaller learning rate
(``backbone_lr_mult``).

``official_video`` groups: what the official Video Swin code really trained with. Its
config asks mmcv for ``custom_keys``: no decay for ``relative_position_bias_table``,
``absolute_pos_embed`` and ``norm``, and ``lr_mult=0.1`` for ``backbone``. mmcv applies only
the first key found in a parameter's name, longest key first, so the effect differs from
the intent: the relative-position tables get no decay but the full learning rate (not
0.1 of it); every other backbone parameter, norms and biases included, gets 0.1 of the
rate and full decay; the head gets the full rate and full decay. The published Kinetics
and Something-Something numbers were obtained this way, so the shipped video recipes use
it; ``optim.param_groups=standard`` gives what the config meant (plus no decay on biases).

``official_seg`` groups: the official Swin segmentation configs ask mmcv for
``decay_mult=0`` on the keys ``absolute_pos_embed``, ``relative_position_bias_table`` and
``norm``: every parameter whose name contains one of them (the LayerNorms, the pyramid's
``norm{i}``) has no decay; everything else, biases and the heads' BatchNorms (``.bn.``)
included, has the full decay. ``all`` decays every parameter (Swin-Unet's SGD).

AdamW runs PyTorch's fused kernel (one pass over each parameter for the whole update) where
it has one for the parameters' device and dtype; else its for-loop implementation, which
makes about ten passes (:func:`tessera.backends.optim.adamw`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..backends.optim import adamw

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


#: the official Swin segmentation configs' keys without weight decay
OFFICIAL_SEG_NO_DECAY = ("absolute_pos_embed", "relative_position_bias_table", "norm")


def _group_key(name: str, param: torch.Tensor, skip: set[str], heads: set[str], mult: float,
               rule: str) -> tuple[str, bool, float]:
    """``(part, no_decay, lr_mult)`` of one parameter."""
    is_head = name in heads
    if rule in ("official_seg", "all"):
        # official_seg: mmcv's custom keys, each matched as a substring of the name
        no_decay = rule == "official_seg" and any(k in name for k in OFFICIAL_SEG_NO_DECAY)
        if mult == 1.0:
            return "all", no_decay, 1.0
        return ("head", no_decay, 1.0) if is_head else ("backbone", no_decay, mult)
    if rule == "official_video":  # mmcv's first matching custom key, longest first
        if "relative_position_bias_table" in name or "absolute_pos_embed" in name:
            return "backbone_table", True, 1.0
        return ("head", False, 1.0) if is_head else ("backbone", False, mult)
    no_decay = is_no_decay(name, param, skip)
    if mult == 1.0:
        return "all", no_decay, 1.0
    return ("head", no_decay, 1.0) if is_head else ("backbone", no_decay, mult)


def param_groups(model: nn.Module, weight_decay: float, backbone_lr_mult: float = 1.0,
                 rule: str = "standard") -> list[dict]:
    """Split the trainable parameters into groups with and without weight decay (and, when
    ``backbone_lr_mult != 1`` or with the ``official_video`` rule, head and backbone; see the
    module docstring). Each group carries ``lr_mult`` and a ``name`` for the logs."""
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    heads = _head_names(model) if backbone_lr_mult != 1.0 or rule == "official_video" else set()
    groups: dict[tuple[str, bool, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = _group_key(name, p, skip, heads, backbone_lr_mult, rule)
        part, no_decay, lr_mult = key
        if key not in groups:
            groups[key] = {
                "name": f"{part}_{'no_decay' if no_decay else 'decay'}",
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_mult": lr_mult,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """AdamW (betas, eps and weight decay of the recipe), or SGD with momentum
    (``optim.name=sgd``), over :func:`param_groups`; the learning rates are set by the
    schedule at every step."""
    o = recipe.optim
    groups = param_groups(model, o.weight_decay, o.backbone_lr_mult, o.param_groups)
    for g in groups:
        g.pop("param_names")
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=scaled_lr(o.lr, recipe), momentum=o.momentum, weight_decay=o.weight_decay)
    return adamw(groups, lr=scaled_lr(o.lr, recipe), betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
