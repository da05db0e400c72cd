"""Model families. Importing this package registers every model."""

from .base import TesseraModel
from .swin import SwinTransformer, VideoSwinTransformer
from .vit import VisionTransformer
from .deit import DistilledVisionTransformer
from .cait import CaiT
from .deepvit import DeepViT
from .cpvt import CPVT

__all__ = [
    "TesseraModel", "SwinTransformer", "VideoSwinTransformer", "VisionTransformer", "DistilledVisionTransformer",
    "CaiT", "DeepViT", "CPVT",
]
