"""Segmentation-decision network (Tabernik et al. 2019, Bozic et al. 2021) with Bi et al.'s SE and atrous changes.

Pure ``nn.Module``s with explicit constructor arguments; no config objects. Layer table (Bi et al., Table 2),
numbering the convolutions 1..11 of the segmentation subnetwork::

    conv1 32, conv2 32, pool, conv3 64, conv4 64, conv5 64, pool, conv6..conv9 64, pool, conv10 1024, conv11 1x1->1

* ``atrous=True``: conv1..conv9 are 3x3 with dilation 2 (5x5 receptive field, fewer weights), conv10 is 3x3
  with dilation 7 (15x15 field). ``atrous=False``: the original 5x5 and 15x15 kernels.
* ``attention=True``: an SE block follows conv3..conv9 and conv10.
* conv1..conv10 are each followed by feature normalisation (per-image, per-channel over space, with a learned
  scale and bias) and ReLU; conv11 is the bare segmentation logit. ``norm="instance"`` is
  ``InstanceNorm2d(affine=True)`` (divides by the standard deviation); ``norm="feature"`` is the reference
  code's "FeatureNorm", which divides by its square root (:class:`FeatureNorm`); ``"batch"`` is BatchNorm.

The decision subnetwork takes the 1024 features and the 1-channel segmentation logit (1025 channels), applies
three rounds of max-pool + conv (8, 16, 32 channels; 3x3 dilation 2 when atrous, else 5x5), then global max
and average pooling of its 32 channels and of the segmentation logit (66 values) and one FC layer to 1 logit.

``stop_gradient`` (Bozic et al.'s gradient-flow adjustment) detaches the decision head's inputs from the
segmentation subnetwork during training, for the whole batch: the decision loss then trains only the decision
head. It is all or nothing on purpose: detaching only the pixel-labelled images (all negatives) leaves the
unlabelled positives as the only decision gradient into the encoder, which then only ever hears "score
higher" (weak supervision on KolektorSDD ranked worse than chance that way; see the segdec head).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import SEModule
from torch import nn

from ..heads.segdec_parts.config import MIN_DECISION_INPUT, PAPER_WIDTHS  # defined there, free of torch

#: a 2x2 max-pool follows these convolutions (1-based: conv2, conv5, conv9)
POOL_AFTER = (2, 5, 9)
#: SE blocks follow these convolutions (1-based)
SE_AFTER = (3, 4, 5, 6, 7, 8, 9, 10)


class FeatureNorm(nn.Module):
    """The reference code's per-image normalisation: ``scale * (x - mean) / sqrt(std + eps) + bias`` over each
    channel's spatial map. Dividing by the square root of the standard deviation, not by the deviation as
    ``InstanceNorm2d`` does, keeps part of each image's response strength (the output spread is
    ``sqrt(std)``), which the decision head's global max / mean pooling can read; full instance norm leaves
    every image's channels with the same spread."""

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True)
        return self.scale * (x - mean) / (std + self.eps).sqrt() + self.bias


def _norm(channels: int, norm: str) -> nn.Module:
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True, eps=1e-3)
    if norm == "feature":
        return FeatureNorm(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {norm!r} (instance | feature | batch)")


def conv_block(cin: int, cout: int, kernel: int, dilation: int, norm: str) -> nn.Sequential:
    """conv ('same' padding) + feature normalisation + ReLU."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False),
        _norm(cout, norm),
        nn.ReLU(inplace=True),
    )


def _kernel(atrous: bool, big: bool) -> tuple[int, int]:
    """(kernel, dilation): 3x3 d2 / 3x3 d7 when atrous, else the original 5x5 / 15x15."""
    if atrous:
        return (3, 7) if big else (3, 2)
    return (15, 1) if big else (5, 1)


class SegEncoder(nn.Module):
    """conv1..conv10 with the three pools: image -> features at stride 8 (``out_channels`` = widths[-1])."""

    def __init__(self, in_chans: int = 1, widths: Sequence[int] = PAPER_WIDTHS, atrous: bool = True,
                 attention: bool = True, norm: str = "instance") -> None:
        super().__init__()
        if len(widths) != 10:
            raise ValueError(f"segdec encoder needs 10 widths (conv1..conv10), got {len(widths)}")
        layers: list[nn.Module] = []
        cin = in_chans
        for number, cout in enumerate(widths, start=1):
            kernel, dilation = _kernel(atrous, big=number == 10)
            layers.append(conv_block(cin, cout, kernel, dilation, norm))
            if attention and number in SE_AFTER:
                layers.append(SEModule(cout, rd_ratio=1 / 16))
            if number in POOL_AFTER:
                layers.append(nn.MaxPool2d(2))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin
        self.stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class BackboneEncoder(nn.Module):
    """A registry backbone (timm or registered) cut at its stride-8 stage, as a drop-in ``SegEncoder``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_channels = int(backbone.feature_info.channels()[-1])
        self.stride = int(backbone.feature_info.reduction()[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[-1]


class DecisionHead(nn.Module):
    """features (C) + segmentation logit (1) -> 3x (pool, conv 8/16/32) -> global max/avg (66) -> FC -> logit."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (8, 16, 32), atrous: bool = True,
                 norm: str = "instance") -> None:
        super().__init__()
        kernel, dilation = (3, 2) if atrous else (5, 1)
        layers: list[nn.Module] = []
        cin = in_channels + 1
        for cout in widths:
            layers += [nn.MaxPool2d(2, ceil_mode=True), conv_block(cin, cout, kernel, dilation, norm)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(2 * cin + 2, 1)

    def forward(self, features: torch.Tensor, seg_logit: torch.Tensor) -> torch.Tensor:
        if min(features.shape[-2:]) < MIN_DECISION_INPUT:
            raise ValueError(f"segdec decision head: feature map {tuple(features.shape[-2:])} is too small; after "
                             f"its three pools it must keep >= 2x2 (input sides >= {8 * MIN_DECISION_INPUT} px)")
        x = self.layers(torch.cat([features, seg_logit], dim=1))
        pooled = [x.amax(dim=(2, 3)), x.mean(dim=(2, 3)), seg_logit.amax(dim=(2, 3)), seg_logit.mean(dim=(2, 3))]
        return self.fc(torch.cat(pooled, dim=1)).squeeze(1)


class SegDecNet(nn.Module):
    """encoder -> 1x1 segmentation logit; decision head on (features, logit). Returns (decision, seg) logits.

    ``seg`` has the encoder's stride (8 for the paper network); ``decision`` is one logit per image.
    """

    def __init__(self, encoder: nn.Module, decision_widths: Sequence[int] = (8, 16, 32), atrous: bool = True,
                 norm: str = "instance", stop_gradient: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.seg_head = nn.Conv2d(encoder.out_channels, 1, kernel_size=1)
        self.decision = DecisionHead(encoder.out_channels, decision_widths, atrous, norm)
        self.stop_gradient = stop_gradient

    @property
    def stride(self) -> int:
        return int(self.encoder.stride)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        seg = self.seg_head(features)
        if self.stop_gradient and self.training:
            return self.decision(features.detach(), seg.detach()), seg
        return self.decision(features, seg), seg
