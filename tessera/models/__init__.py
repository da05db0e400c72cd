"""Model families. Importing this package registers every model."""

from .base import TesseraModel
from .ceit import CeiT
from .cvt import CvT
from .levit import LeViT
from .pvt import PyramidVisionTransformer
from .pvt_v2 import PyramidVisionTransformerV2
from .shuffle import ShuffleTransformer
from .swin import SwinTransformer, VideoSwinTransformer

__all__ = [
    "TesseraModel", "SwinTransformer", "VideoSwinTransformer", "CvT", "CeiT", "LeViT",
    "PyramidVisionTransformer", "PyramidVisionTransformerV2", "ShuffleTransformer",
]
