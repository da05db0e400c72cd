"""tessera: hierarchical vision transformers (Swin, Video Swin and the ViT family) on PyTorch."""

from .registry import create_model, is_model, list_models, register_model
from .stats import model_stats
from .weights import LoadReport, from_pretrained, load_checkpoint, save_pretrained

__version__ = "0.1.0"

__all__ = [
    "create_model", "is_model", "list_models", "register_model", "model_stats",
    "load_checkpoint", "LoadReport", "save_pretrained", "from_pretrained", "__version__",
]
