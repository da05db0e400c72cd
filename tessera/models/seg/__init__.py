"""Semantic segmentation: UperNet on a feature-pyramid backbone (the official Swin
segmentation models) and Swin-Unet."""

from .base import SegmentationModel
from .swin_unet import SwinUnet
from .upernet import UperNet

__all__ = ["SegmentationModel", "SwinUnet", "UperNet"]
