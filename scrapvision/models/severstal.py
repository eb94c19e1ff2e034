"""Pure ``nn.Module`` of the ``severstal`` head: a timm encoder with a segmentation_models_pytorch U-Net or FPN
decoder, 4 mask logits and 4 image-level logits (Severstal Kaggle defect classes)."""

from __future__ import annotations

import torch
from segmentation_models_pytorch.base.heads import ClassificationHead, SegmentationHead
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn
from torch.nn import functional as F

from ..backbones import backbone_channels, backbone_strides, create_backbone
from ..errors import ScrapvisionError


class SeverstalNet(nn.Module):
    """Backbone -> U-Net/FPN decoder -> 4 mask logits, plus 4 image-level logits.

    ``forward`` returns ``(mask_logits [B,4,H,W], label_logits [B,4])``. Without the classifier the
    image-level logits are the per-class maximum of the mask logits.
    """

    def __init__(self, backbone: str = "resnet18", arch: str = "unet", weights: str | None = None,
                 decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16), fpn_channels: int = 128,
                 classifier: bool = True, num_classes: int = 4, in_chans: int = 3) -> None:
        super().__init__()
        self.encoder = create_backbone(backbone, weights=weights or None, in_chans=in_chans)
        strides = backbone_strides(self.encoder)
        if strides != [2, 4, 8, 16, 32]:
            raise ScrapvisionError(f"severstal needs a backbone with 5 stages of strides 2..32; {backbone!r} has {strides}")
        channels = [in_chans, *backbone_channels(self.encoder)]
        if arch == "unet":
            self.decoder = UnetDecoder(channels, tuple(decoder_channels), n_blocks=len(decoder_channels))
            self.seg_head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)
        elif arch == "fpn":
            if fpn_channels % 32:
                raise ScrapvisionError(f"model.fpn_channels={fpn_channels}: must be a multiple of 32 (GroupNorm)")
            self.decoder = FPNDecoder(channels, encoder_depth=5, pyramid_channels=fpn_channels,
                                      segmentation_channels=fpn_channels, dropout=0.0)
            self.seg_head = SegmentationHead(fpn_channels, num_classes, kernel_size=1, upsampling=4)
        else:
            raise ScrapvisionError(f"severstal arch {arch!r}: expected 'unet' or 'fpn'")
        self.cls_head = ClassificationHead(channels[-1], num_classes, dropout=0.2) if classifier else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = [x, *self.encoder(x)]
        masks = self.seg_head(self.decoder(features))
        if masks.shape[-2:] != x.shape[-2:]:
            masks = F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)
        labels = self.cls_head(features[-1]) if self.cls_head is not None else masks.amax(dim=(-2, -1))
        return masks, labels
