"""See what a model sees: Grad-CAM and Grad-CAM++ (every image family and Video Swin),
attention rollout (the class-token families), the attention of a query in its Swin window,
drawings of Swin's windows made from the model's own window core, and the pointing game
that checks an explanation against known evidence. Every function returns tensors at the
input's resolution; :mod:`tessera.explain.overlay` draws them."""

from .attention import WindowAttentionMap, window_attention
from .cam import Explanation, grad_cam
from .capture import AttentionCapture, AttentionRecord, capture_attention, evaluation, reference_path
from .pointing import PointingResult, moving_digits_pointing_game, pointing_game_clips, pointing_game_images
from .pointing import scenes_pointing_game
from .rollout import attention_rollout
from .targets import ExplainError, default_layer, family_of, resolve_layer
from .windows import WindowLayout, draw_windows, window_layout

__all__ = [
    "AttentionCapture", "AttentionRecord", "ExplainError", "Explanation", "PointingResult", "WindowAttentionMap",
    "WindowLayout", "attention_rollout", "capture_attention", "default_layer", "draw_windows", "evaluation",
    "family_of", "grad_cam", "moving_digits_pointing_game", "pointing_game_clips", "pointing_game_images",
    "reference_path", "resolve_layer", "scenes_pointing_game", "window_attention", "window_layout",
]
