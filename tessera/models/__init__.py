"""Model families. Importing this package registers every model."""

from .base import TesseraModel
from .ceit import CeiT
from .cvt import CvT
from .levit import LeViT
from .swin import SwinTransformer, VideoSwinTransformer

__all__ = ["TesseraModel", "SwinTransformer", "VideoSwinTransformer", "CvT", "CeiT", "LeViT"]
