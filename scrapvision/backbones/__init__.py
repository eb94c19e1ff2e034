"""Backbones: any timm model in ``features_only`` mode, plus the ones registered in ``BACKBONES``."""

from . import clip, tiny  # noqa: F401  (register the CLIP image towers and tiny_cnn; open_clip loads on use)
from .factory import backbone_channels, backbone_strides, create_backbone, load_backbone_weights

__all__ = ["backbone_channels", "backbone_strides", "create_backbone", "load_backbone_weights"]
