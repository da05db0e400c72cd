"""Grad-CAM (Selvaraju et al., 2017), Grad-CAM++ (Chattopadhay et al., 2018) and LayerCAM
(Jiang et al., 2021).

A class's score (its logit) is differentiated with respect to the output ``A`` of one
layer, laid out as a map ``(B, C, *grid)``; each channel is weighted by its gradient and the
weighted sum, through a ReLU, is the CAM:

* Grad-CAM: ``w_c = mean over the grid of dS/dA_c``;
* Grad-CAM++: ``w_c = sum over the grid of a_c * relu(dS/dA_c)`` with
  ``a_c = g^2 / (2 g^2 + sum(A_c) g^3)`` (``g = dS/dA_c``; zero where ``g`` is), the closed
  form for an exponential of the score;
* LayerCAM: a weight per channel *and position*, ``w_c(p) = relu(dS/dA_c(p))``. A channel
  then counts only where raising it raises the score, which keeps the fine maps of early
  layers on the object: one averaged weight per channel (Grad-CAM) also lights up whatever
  else that channel responds to, such as clutter that looks like a stroke.

The model is not changed: it runs in eval mode on its reference path (both restored after),
the gradient is taken with respect to the layer's output only (no parameter's ``.grad`` is
touched), and the one forward hook that reads the layer is removed before the function
returns. Every sample is explained by its own score, so a sample's CAM does not depend on
the batch it comes in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .capture import evaluation, reference_path
from .targets import ExplainError, family_of, layout_of, resolve_layer, to_map, upsample

METHODS = ("gradcam", "gradcam++", "layercam")


@dataclass
class Explanation:
    """An explanation of a batch.

    Attributes:
        maps: ``(B, H, W)`` (``(B, T, H, W)`` for video) at the input's resolution, not
            normalised (zero where nothing speaks for the class).
        raw: the same at the layer's resolution, ``(B, *grid)``.
        target: ``(B,)`` the class explained for each sample.
        probs: ``(B, classes)`` the model's softmax.
        method: ``gradcam``, ``gradcam++``, ``rollout`` or ``attention``.
        layer: the layer (or module) the explanation was read from.
    """

    maps: torch.Tensor
    raw: torch.Tensor
    target: torch.Tensor
    probs: torch.Tensor
    method: str
    layer: str

    @property
    def score(self) -> torch.Tensor:
        """``(B,)`` the probability of the class explained."""
        return self.probs.gather(1, self.target[:, None])[:, 0]

    def peaks(self) -> torch.Tensor:
        """``(B, ndim)`` the position of each map's maximum in input pixels, ``(y, x)`` or
        ``(t, y, x)`` (the first one where several are equal)."""
        flat = self.maps.flatten(1).argmax(1)
        coords = torch.unravel_index(flat, self.maps.shape[1:])
        return torch.stack(coords, dim=1)

    def normalised(self) -> torch.Tensor:
        """``maps`` scaled to ``[0, 1]`` per sample (over the whole clip for video)."""
        top = self.maps.flatten(1).amax(1).clamp_min(1e-12)
        return self.maps / top.view(-1, *[1] * (self.maps.dim() - 1))


def _targets(logits: torch.Tensor, target) -> torch.Tensor:
    """``(B,)`` classes: the top-1 for ``None``, else an int or one per sample."""
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, device=logits.device, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(logits.shape[0])
    if t.numel() != logits.shape[0]:
        raise ExplainError(f"{t.numel()} targets for a batch of {logits.shape[0]}")
    if (t < 0).any() or (t >= logits.shape[1]).any():
        raise ExplainError(f"target class {t.tolist()} outside the model's {logits.shape[1]} classes")
    return t


def prepare_input(x: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` made outside inference mode, needing no gradient (an inference tensor
    could not take part in the graph)."""
    with torch.inference_mode(False):
        return x.detach().clone()


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    layer: str | None = None,
    method: str = "gradcam",
) -> Explanation:
    """Grad-CAM or Grad-CAM++ of ``model`` for the input ``x``.

    Args:
        model: a tessera image or video classifier.
        x: ``(B, C, H, W)`` images or ``(B, C, T, H, W)`` clips, normalised as the model
            expects.
        target: the class to explain, one for all or one per sample; default each
            sample's top-1 class.
        layer: the layer to read (negative indices allowed); default the family's for this
            input size (:func:`tessera.explain.targets.default_layer`).
        method: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"``.

    Returns: an :class:`Explanation` whose ``maps`` are ``(B, H, W)`` or ``(B, T, H, W)``.
    """
    if method not in METHODS:
        raise ExplainError(f"unknown CAM method {method!r}; expected one of {', '.join(METHODS)}")
    family = family_of(model)
    name, module = resolve_layer(model, layer or family.default_layer(model, tuple(x.shape[2:])))
    seen: list[torch.Tensor] = []

    def keep(mod, args, output):
        if seen:
            raise ExplainError(f"layer {name} runs more than once in a forward pass; choose another layer")
        rest = ()
        if isinstance(output, tuple):  # (tokens, grid) of a stage
            output, *rest = output
        if not isinstance(output, torch.Tensor):
            raise ExplainError(f"layer {name} gives no tensor")
        # the rest of the forward pass starts from a leaf, so the gradient stops here
        leaf = output.detach().requires_grad_(True)
        seen.append(leaf)
        return (leaf, *rest) if rest else leaf

    x = prepare_input(x)
    with torch.inference_mode(False), torch.enable_grad(), evaluation(model), reference_path(model):
        handle = module.register_forward_hook(keep)
        try:
            logits = model(x)
        finally:
            handle.remove()
        if not seen:
            raise ExplainError(f"layer {name} did not run in the forward pass")
        activation = seen[0]
        targets = _targets(logits, target)
        score = logits.gather(1, targets[:, None]).sum()
        if not score.requires_grad:
            raise ExplainError(f"the class scores do not depend on layer {name}")
        (grads,) = torch.autograd.grad(score, activation)
    size = tuple(x.shape[2:])
    spatial = size[-2:]
    stride = family.stride(model, name)
    layout = layout_of(model, module, activation)
    acts = to_map(activation.detach(), layout, spatial, stride).float()
    grads = to_map(grads, layout, spatial, stride).float()
    if tuple(acts.shape[2:]) != tuple(grads.shape[2:]) or acts.dim() != x.dim():
        raise ExplainError(f"layer {name} gives no map of the input (output {tuple(activation.shape)})")
    raw = torch.relu((_weights(acts, grads, method) * acts).sum(1))
    maps = upsample(raw, size, stride)
    return Explanation(maps, raw, targets.detach(), logits.detach().float().softmax(1), method, name)


def _weights(acts: torch.Tensor, grads: torch.Tensor, method: str) -> torch.Tensor:
    """The weights of the maps ``acts`` from their gradients (both ``(B, C, *grid)``):
    ``(B, C, *grid)`` for LayerCAM, ``(B, C, 1, ...)`` (one per channel) otherwise."""
    if method == "layercam":
        return torch.relu(grads)
    dims = tuple(range(2, acts.dim()))
    if method == "gradcam":
        return grads.mean(dims, keepdim=True)
    g2, g3 = grads.pow(2), grads.pow(3)
    total = acts.sum(dims, keepdim=True)
    denominator = 2 * g2 + total * g3
    alpha = torch.where(denominator != 0, g2 / denominator.where(denominator != 0, torch.ones_like(g2)), 0.0)
    return (alpha * torch.relu(grads)).sum(dims, keepdim=True)
