"""Backbones: any timm model in ``features_only`` mode, plus the ones registered in ``BACKBONES``."""

from . import tiny  # noqa: F401  (registers tiny_cnn)
from .factory import backbone_channels, backbone_strides, create_backbone, load_backbone_weights

__all__ = ["backbone_channels", "backbone_strides", "create_backbone", "load_backbone_weights"]
