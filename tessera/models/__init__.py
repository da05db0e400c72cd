"""Model families. Importing this package registers every model."""

from .base import TesseraModel
from .pvt import PyramidVisionTransformer
from .swin import SwinTransformer, VideoSwinTransformer

__all__ = ["TesseraModel", "SwinTransformer", "VideoSwinTransformer", "PyramidVisionTransformer"]
