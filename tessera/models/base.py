"""What every tessera model has in common: the head/features API of timm."""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

class TesseraModel(nn.Module):
    """Base class of the classification models.

    Subclasses implement :meth:`forward_features` (input to the final normalised features)
    and :meth:`forward_head` (features to logits) and keep ``num_classes``,
    ``num_features`` and ``head`` up to date; ``forward`` is always
    ``forward_head(forward_features(x))``.

    ``default_cfg`` describes the expected input (size, mean, std, crop ratio) for the data
    pipeline; the registry fills ``model_name`` and ``model_args`` (every constructor
    argument) so that a model can be rebuilt from its config.
    """

    num_classes: int
    num_features: int
    grad_checkpointing: bool = False
    model_name: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Record the arguments of the outermost constructor call (defaults filled in), so
        # that ``model_args`` can rebuild the model.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if "_model_args" not in self.__dict__:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = dict(bound.arguments)
                recorded.pop("self")
                for name, param in signature.parameters.items():
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        recorded.update(recorded.pop(name, {}))
                object.__setattr__(self, "_model_args", recorded)
            init(self, *args, **kw)

        cls.__init__ = recording_init

    @property
    def model_args(self) -> dict[str, Any]:
        """Every argument of the constructor call that built this model."""
        return dict(self.__dict__.get("_model_args", {}))

    def __init__(self) -> None:
        super().__init__()
        self.default_cfg: dict[str, Any] = {
            "input_size": (3, 224, 224),
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "crop_pct": 0.875,
            "interpolation": "bicubic",
        }

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # bf16 autocast on a CPU that would emulate bf16 products computes in fp32 instead
        # (tessera.backends.precision_policy); elsewhere this is nn.Module's call
        from .. import backends

        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        with backends.precision_policy(x.device if x is not None else "cpu"):
            return super().__call__(*args, **kwargs)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one for ``num_classes`` classes;
        ``0`` removes it, so that ``forward`` returns the pooled features."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.head, nn.Linear):
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass instead of storing them (less memory,
        same outputs and gradients)."""
        self.grad_checkpointing = enable
        for m in self.modules():
            if m is not self and hasattr(m, "grad_checkpointing"):
                m.grad_checkpointing = enable

    def adapt_checkpoint(self, state_dict: dict[str, torch.Tensor], report: Any) -> dict[str, torch.Tensor]:
        """Fit a checkpoint (already in tessera's names) to this model before it is loaded:
        by default, relative-position tables made for another window and absolute position
        embeddings made for another grid are resized (notes go to ``report``). Families
        override it for what only they have."""
        from ..weights.adapt import adapt_generic

        return adapt_generic(self, state_dict, report)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that the official recipes exclude from weight decay beyond the
        generic rule (every bias and every 1-D parameter)."""
        return set()


def maybe_checkpoint(module_or_fn, *args, enabled: bool):
    """Run ``module_or_fn(*args)``, recomputing it in the backward pass when ``enabled`` and
    gradients are needed."""
    if enabled and torch.is_grad_enabled() and not torch.jit.is_scripting():
        return checkpoint(module_or_fn, *args, use_reentrant=False)
    return module_or_fn(*args)
