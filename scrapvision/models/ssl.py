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

