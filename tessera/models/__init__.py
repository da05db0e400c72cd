"""Model families. Importing this package registers every model."""

from .base import TesseraModel
from .cait import CaiT
from .ceit import CeiT
from .cpvt import CPVT
from .cvt import CvT
from .deepvit import DeepViT
from .deit import DistilledVisionTransformer
from .levit import LeViT
from .pvt import PyramidVisionTransformer
from .pvt_v2 import PyramidVisionTransformerV2
from .seg import SegmentationModel, SwinUnet, UperNet
from .shuffle import ShuffleTransformer
from .swin import SwinTransformer, VideoSwinTransformer
from .swin_v2 import SwinTransformerV2
from .vit import VisionTransformer

__all__ = [
    "TesseraModel", "SwinTransformer", "VideoSwinTransformer", "SwinTransformerV2", "VisionTransformer", "DistilledVisionTransformer",
    "CaiT", "DeepViT", "CPVT", "CvT", "CeiT", "LeViT", "PyramidVisionTransformer", "PyramidVisionTransformerV2",
    "ShuffleTransformer", "SegmentationModel", "UperNet", "SwinUnet",
]
