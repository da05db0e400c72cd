"""Attention rollout (Abnar & Zuidema, 2020) for the class-token families.

Each block's attention, fused over heads, has the residual connection added as an identity
and its rows renormalised: ``Â = (A + I) / 2``. The product of these over the blocks says
how much of each input token reaches each output token; the rows of the tokens the head
reads (the class token; with DeiT's distillation token the mean of both, as the two heads
are averaged; the patch tokens' mean for average pooling) give the map over the patches.

The families differ in where the class token meets the patches:

* ViT, DeiT, DeepViT, CPVT (``"vit"``): the class token goes through every block. CPVT's
  positional convolution and the MLPs mix no tokens through attention and count as identity.
* CaiT (``"cait"``): the patches attend to each other alone; the class token joins in the
  class-attention layers, where only it is updated: its relevance ``v`` to the input
  patches follows ``v <- Â[cls] v + Â[patches] R`` with ``R`` the patches' rollout.
* CeiT (``"ceit"``): the head reads the layer-wise class attention over the class tokens of
  all blocks; the map is the sum of each block's class-token rollout weighted by the
  (residual-added) weights of that attention.

Talking heads (CaiT) and re-attention (DeepViT) mix the heads' softmax before it meets the
values; the rollout uses the weights as applied (the model's own mixing), negative weights
set to zero and rows renormalised. Rollout does not depend on a class: the explanation
names the top-1 class (or the one asked for) with its score.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .cam import Explanation, _targets, prepare_input
from .capture import AttentionRecord, capture_attention, evaluation, reference_path
from .targets import ExplainError, family_of, token_grid, upsample

HEAD_FUSIONS = ("mean", "max", "min")


def applied_weights(record: AttentionRecord) -> torch.Tensor:
    """The attention weights a module applies to its values, from the softmax it computed:
    the softmax itself, or after the heads are mixed (talking heads, re-attention)."""
    from ..models.cait import TalkingHeadAttention
    from ..models.deepvit import ReAttention

    module, probs = record.module, record.probs
    if isinstance(module, TalkingHeadAttention):
        return module._mix_heads(probs, module.proj_w)
    if isinstance(module, ReAttention):
        return module.var_norm(module.reatten_matrix(probs)) * module.reatten_scale
    return probs


def fuse_heads(weights: torch.Tensor, head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """``(B, h, Nq, Nk) -> (B, Nq, Nk)``: the heads fused, negative weights dropped, the
    smallest ``discard_ratio`` of each map set to zero."""
    if head_fusion == "mean":
        fused = weights.mean(1)
    elif head_fusion == "max":
        fused = weights.amax(1)
    elif head_fusion == "min":
        fused = weights.amin(1)
    else:
        raise ExplainError(f"unknown head fusion {head_fusion!r}; expected one of {', '.join(HEAD_FUSIONS)}")
    fused = fused.float().clamp_min(0)
    if discard_ratio > 0:
        flat = fused.flatten(1)
        k = int(flat.shape[1] * discard_ratio)
        if k:
            low = flat.topk(k, dim=1, largest=False).indices
            fused = flat.scatter(1, low, 0.0).view_as(fused)
    return fused


def with_residual(attn: torch.Tensor, query_start: int = 0) -> torch.Tensor:
    """``(A + I) / 2`` with rows summing to one, for ``(B, Nq, Nk)`` maps whose queries are
    the keys ``query_start, ..., query_start + Nq - 1`` (all of them for square maps)."""
    b, nq, nk = attn.shape
    eye = torch.zeros_like(attn)
    eye[:, torch.arange(nq), torch.arange(nq) + query_start] = 1.0
    attn = attn / attn.sum(-1, keepdim=True).clamp_min(1e-12)
    out = (attn + eye) / 2
    return out / out.sum(-1, keepdim=True)


def rollout(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The product ``Â_L ... Â_1`` of residual-added maps ``(B, N, N)``."""
    result = None
    for attn in maps:
        attn = with_residual(attn)
        result = attn if result is None else attn @ result
    return result


def _records(captured, prefix: str) -> list[AttentionRecord]:
    return [r for r in captured.records if r.name.startswith(prefix)]


def attention_rollout(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
) -> Explanation:
    """Attention rollout of a class-token model for the images ``x`` ``(B, C, H, W)``.

    Args:
        target: only named in the result (rollout does not depend on a class); default
            each image's top-1 class.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over the heads.
        discard_ratio: fraction of the smallest weights of every map set to zero.

    Returns: an :class:`~tessera.explain.cam.Explanation` with ``maps`` ``(B, H, W)``.
    """
    family = family_of(model)
    if family.rollout is None:
        raise ExplainError(f"attention rollout needs a class-token model (ViT, DeiT, DeepViT, CaiT, CPVT, CeiT); "
                           f"{family.name} has none: use gradcam")
    if not 0.0 <= discard_ratio < 1.0:
        raise ExplainError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    x = prepare_input(x)
    with torch.no_grad(), evaluation(model), reference_path(model), capture_attention(model) as captured:
        logits = model(x)

    def fused(prefix: str) -> list[torch.Tensor]:
        found = _records(captured, prefix)
        if not found:
            raise ExplainError(f"no attention recorded in {prefix}*")
        return [fuse_heads(applied_weights(r), head_fusion, discard_ratio) for r in found]

    if family.rollout == "vit":
        joint = rollout(fused("blocks."))  # (B, P + N, P + N)
        prefix = model.num_prefix_tokens
        if getattr(model, "global_pool", "token") == "avg" or prefix == 0:
            rows = joint[:, prefix:].mean(1)
        else:
            rows = joint[:, :prefix].mean(1)  # the class token, and the distillation token
        relevance = rows[:, prefix:]
    elif family.rollout == "cait":
        patches = rollout(fused("blocks."))  # (B, N, N): the class token is not there yet
        relevance = torch.zeros_like(patches[:, 0])
        for attn in fused("blocks_token_only."):  # (B, 1, 1 + N)
            row = with_residual(attn, query_start=0)[:, 0]
            relevance = row[:, :1] * relevance + (row[:, None, 1:] @ patches)[:, 0]
    else:  # ceit
        blocks = fused("blocks.")
        per_block, joint = [], None
        for attn in blocks:
            attn = with_residual(attn)
            joint = attn if joint is None else attn @ joint
            per_block.append(joint[:, 0, 1:])  # the class token's rollout after this block
        lca = fused("lca.")[0][:, -1:]  # (B, 1, L): the last class token's query
        weights = with_residual(lca, query_start=lca.shape[-1] - 1)[:, 0]
        relevance = (weights[:, :, None] * torch.stack(per_block, 1)).sum(1)
    size = tuple(x.shape[2:])
    stride = family.stride(model, "blocks.0")
    _, grid = token_grid(relevance.shape[1], size, stride, max_prefix=0)
    raw = relevance.reshape(-1, *grid)
    maps = upsample(raw, size, stride)
    return Explanation(maps, raw, _targets(logits, target), logits.float().softmax(1), "rollout",
                       f"{family.name} attention rollout ({head_fusion} over heads)")
