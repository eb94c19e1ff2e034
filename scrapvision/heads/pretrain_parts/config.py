"""The ``pretrain`` head's configuration (frozen, strict), kept free of torch so that `scrapvision config`
prints it without importing torch or timm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config import OptimConfig, TrainConfig
from ...errors import ConfigError


@dataclass(frozen=True)
class PretrainModelConfig:
    backbone: str = "tinynet_e"  # any registered or timm backbone; tinynet_e = scrap_cls's default
    weights: str = ""  # start from these backbone weights (e.g. an earlier pretraining); "" = random init
    # simclr: two views of an image pulled together, other images pushed away (needs images that differ);
    # simmim: hidden square units of one view reconstructed from the rest (suits near-identical surfaces)
    method: Literal["simclr", "simmim"] = "simclr"
    proj_hidden: int = 512  # projection head (dropped after pretraining)
    proj_dim: int = 128
    temperature: float = 0.2  # NT-Xent temperature (simclr)
    patch_size: int = 0  # timm ViTs only: patch size (0 = the model's own)
    vit_depth: int = 0  # timm ViTs only: number of blocks (0 = the model's own)


@dataclass(frozen=True)
class PretrainDataConfig:
    root: str = ""  # unlabeled image folder(s), comma-separated, read recursively; "" = synthetic scrap
    crop_size: int = 112  # side of the random resized crops (the network input)
    min_scale: float = 0.2  # crops cover min_scale..1 of the image area
    # colour distortion between the two views (SimCLR's strength s): scales the colour jitter and the grey
    # probability; 1 = SimCLR's recipe, 0 = none. The views teach invariance to what differs between them, so
    # lower it where colour is the signal (copper against brass; rust)
    color_strength: float = 1.0
    mask_unit: int = 16  # simmim: side in pixels of the square units hidden (a multiple of the backbone's stride)
    mask_ratio: float = 0.6  # simmim: share of the units hidden
    keep_size: int = 256  # images are kept in memory with their shorter side at keep_size (never enlarged)
    unreadable: Literal["skip", "fail"] = "skip"  # truncated / broken images: skip (counted) | fail
    val_fraction: float = 0.1  # images held out to score the loss on fixed views (0 = none)
    split_seed: int = 0
    synthetic_images: int = 96
    synthetic_seed: int = 0

    def __post_init__(self) -> None:  # here, not in the task: `scrapvision config` checks them too
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"config key 'data.val_fraction': {self.val_fraction} is not in [0, 1)")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"config key 'data.mask_ratio': {self.mask_ratio} is not in (0, 1)")
        if self.mask_unit < 1:
            raise ConfigError(f"config key 'data.mask_unit': {self.mask_unit} must be a positive number of pixels")
        if not 0 <= self.color_strength <= 5:  # 5: the hue shift reaches its limit, half the colour circle
            raise ConfigError(f"config key 'data.color_strength': {self.color_strength} is not in [0, 5]")


@dataclass(frozen=True)
class PretrainConfig:
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=1e-4, warmup_epochs=2.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=100, batch_size=64, log_every=10))
