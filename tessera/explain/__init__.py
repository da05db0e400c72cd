"""See what a model sees: Grad-CAM, attention rollout, Swin window attention, window
drawings, and the pointing game that checks an explanation against known evidence."""

from .capture import AttentionCapture, AttentionRecord, capture_attention, evaluation, reference_path
from .cam import Explanation, grad_cam
from .targets import ExplainError, default_layer, family_of, resolve_layer

__all__ = [
    "AttentionCapture", "AttentionRecord", "ExplainError", "Explanation", "capture_attention", "default_layer",
    "evaluation", "family_of", "grad_cam", "reference_path", "resolve_layer",
]
