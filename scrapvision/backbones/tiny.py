"""A few-thousand-parameter CNN with the timm ``features_only`` interface, for fast tests and CPU smoke runs."""

from __future__ import annotations

import torch
from timm.models._features import FeatureInfo
from torch import nn

from ..registry import BACKBONES


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """Five stride-2 stages (strides 2..32); returns the maps picked by ``out_indices``."""

    def __init__(self, in_chans: int = 3, widths: tuple[int, ...] = (8, 16, 24, 32, 48),
                 out_indices: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.out_indices = tuple(range(len(widths))) if out_indices is None else tuple(out_indices)
        chans = (in_chans, *widths)
        self.stages = nn.ModuleList(_stage(chans[i], chans[i + 1]) for i in range(len(widths)))
        info = [dict(num_chs=w, reduction=2 ** (i + 1), module=f"stages.{i}") for i, w in enumerate(widths)]
        self.feature_info = FeatureInfo(info, self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                features.append(x)
        return features


@BACKBONES.register("tiny_cnn")
def tiny_cnn(in_chans: int = 3, out_indices: tuple[int, ...] | None = None, **kwargs) -> TinyCNN:
    return TinyCNN(in_chans=in_chans, out_indices=out_indices, **kwargs)
