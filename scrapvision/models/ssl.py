"""SimCLR's network: any scrapvision backbone, its last feature map average-pooled, and lightly's
projection head (Linear-BN-ReLU-Linear). Only ``backbone`` is kept after pretraining; the projection
head exists to give the contrastive loss a space of its own (Chen et al. 2020, sec. 4.2)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ScrapvisionError


def lightly() -> Any:
    """lightly (losses and heads) is the ``[pretrain]`` extra; without it, one line says how to get it."""
    try:
        import lightly.loss
        import lightly.models.modules  # noqa: F401
    except ImportError:
        raise ScrapvisionError("self-supervised pretraining needs lightly: pip install 'scrapvision[pretrain]'") from None
    return lightly


class ContrastiveNet(nn.Module):
    """``forward(x)`` -> ``{"features": pooled backbone features, "projection": head output}``."""

    def __init__(self, backbone: nn.Module, hidden_dim: int = 512, out_dim: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        channels = int(backbone.feature_info.channels()[-1])
        self.projector = lightly().models.modules.SimCLRProjectionHead(channels, hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)[-1].mean(dim=(2, 3))
        return {"features": features, "projection": self.projector(features)}


def nt_xent_loss(temperature: float) -> nn.Module:
    """lightly's NT-Xent; ``gather_distributed`` takes the negatives of every rank under torchrun, so W
    processes see the same negatives as one process with the global batch."""
    return lightly().loss.NTXentLoss(temperature=temperature, gather_distributed=True)



def unit_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``B x g x g'`` grid of masked units -> ``B x 1 x H x W`` pixels (each unit a square of H/g pixels)."""
    rows, cols = size[0] // mask.shape[-2], size[1] // mask.shape[-1]
    return mask.float().repeat_interleave(rows, -2).repeat_interleave(cols, -1).unsqueeze(1)


class MaskedImageNet(nn.Module):
    """SimMIM (Xie et al. 2022): the backbone sees the image with random square units replaced by a learnt
    colour, and a linear head (a 1x1 convolution and pixel shuffle) predicts the hidden pixels from its last
    feature map. Masking happens in pixel space, so any backbone (CNN, timm ViT, CLIP image tower) learns this
    way; reconstruction asks for local texture and shape, which suits defect maps better than SimCLR's
    whole-image identity on near-identical surfaces. ``forward(x, mask)`` -> ``{"features", "reconstruction"}``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        channels = int(backbone.feature_info.channels()[-1])
        self.stride = int(backbone.feature_info.reduction()[-1])
        self.fill = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.decoder = nn.Sequential(nn.Conv2d(channels, 3 * self.stride ** 2, 1), nn.PixelShuffle(self.stride))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if mask is not None:
            hidden = unit_mask(mask, x.shape[-2:])
            x = x * (1 - hidden) + self.fill * hidden
        features = self.backbone(x)[-1]
        return {"features": features.mean(dim=(2, 3)), "reconstruction": self.decoder(features)}


def masked_l1(reconstruction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's loss: mean absolute error over the masked pixels only (the visible ones are given)."""
    hidden = unit_mask(mask, target.shape[-2:])
    return ((reconstruction - target).abs() * hidden).sum() / (3 * hidden.sum()).clamp_min(1)
