"""tessera: hierarchical vision transformers (Swin, Video Swin and the ViT family) on PyTorch."""

from .labels import label_names
from .registry import create_model, is_model, list_models, register_model
from .stats import model_stats
from .weights import LoadReport, from_pretrained, load_checkpoint, save_pretrained
from .weights.resolve import resolve_model
from .weights.zoo import get_pretrained, list_pretrained

__version__ = "0.1.0"

_LAZY = {"data_config", "eval_transform", "train_transform"}


def __getattr__(name: str):
    # the preprocessing helpers bring in the data pipeline (kornia, PyAV): imported on first use
    if name in _LAZY:
        from .data import preprocess

        return getattr(preprocess, name)
    raise AttributeError(f"module 'tessera' has no attribute {name!r}")

__all__ = [
    "create_model", "is_model", "list_models", "register_model", "list_pretrained", "get_pretrained", "model_stats",
    "load_checkpoint", "LoadReport", "save_pretrained", "from_pretrained", "resolve_model", "data_config",
    "eval_transform", "train_transform", "label_names", "__version__",
]
