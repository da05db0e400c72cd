"""Model families. Importing this package registers every model."""

from .base import TesseraModel
from .pvt import PyramidVisionTransformer
from .pvt_v2 import PyramidVisionTransformerV2
from .shuffle import ShuffleTransformer
from .swin import SwinTransformer, VideoSwinTransformer

__all__ = [
    "TesseraModel", "SwinTransformer", "VideoSwinTransformer", "PyramidVisionTransformer",
    "PyramidVisionTransformerV2", "ShuffleTransformer",
]
