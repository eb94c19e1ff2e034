"""The ``severstal`` head's configuration (frozen, strict), kept free of torch so that `scrapvision config`
prints it without importing torch or timm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config import OptimConfig, TrainConfig
from ...errors import ConfigError

NUM_CLASSES = 4  # Kaggle's defect classes 1-4


@dataclass(frozen=True)
class SeverstalModelConfig:
    arch: Literal["unet", "fpn"] = "unet"
    backbone: str = "resnet18"  # any timm name with 5 stages (strides 2..32), or tiny_cnn
    weights: str = ""  # local .safetensors / state-dict file for the backbone; "" = from scratch
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 16)  # U-Net, one per stage
    fpn_channels: int = 128  # FPN pyramid and segmentation width
    classifier: bool = True  # image-level head on the deepest features (used for gating)


@dataclass(frozen=True)
class SeverstalDataConfig:
    root: str = ""  # Kaggle layout (train.csv + train_images/) or the folder layout (images/ + masks/); "" = synthetic
    coverage: str = ""  # file listing fully-labelled ImageIds; default root/images_covered.csv if present
    # CSV (ImageId,ClassId; 0 = defect-free; relative to root) of more training images with image-level classes
    # only, no masks: they train the classifier branch (the gate), not the masks; never validation. "" = none
    image_labels: str = ""
    image_size: tuple[int, int] = (64, 400)  # (H, W) fed to the network; Kaggle's are 256 x 1600
    val_fraction: float = 0.2
    augment: bool = True  # horizontal + vertical flips
    # balanced: each epoch draws clean images and images of each defect class equally often (an image counts
    # for the rarest class it holds), as long as the training set; uniform: every image once
    sampling: Literal["uniform", "balanced"] = "uniform"
    synthetic_train: int = 256
    synthetic_val: int = 64
    synthetic_shape: tuple[int, int] = (128, 800)
    synthetic_seed: int = 0


@dataclass(frozen=True)
class SeverstalLossConfig:
    bce: float = 1.0
    dice: float = 1.0
    classifier: float = 0.5  # image-level BCE on "class present"


@dataclass(frozen=True)
class SeverstalPostConfig:
    threshold: tuple[float, ...] = (0.5, 0.5, 0.5, 0.5)  # per-class pixel probability threshold
    min_area: tuple[int, ...] = (0, 0, 0, 0)  # per-class minimum mask area in original-resolution pixels
    cls_threshold: float | tuple[float, ...] = 0.0  # > 0: drop a class whose image-level probability is below it (one or per class)
    # flip test-time augmentation of eval / predict / tune: probabilities averaged over the flipped passes (not d4:
    # its 90-degree rotations need square images, and steel strips are 256 x 1600)
    tta: Literal["none", "hflip", "hvflip"] = "none"


@dataclass(frozen=True)
class SeverstalConfig:
    model: SeverstalModelConfig = field(default_factory=SeverstalModelConfig)
    data: SeverstalDataConfig = field(default_factory=SeverstalDataConfig)
    loss: SeverstalLossConfig = field(default_factory=SeverstalLossConfig)
    post: SeverstalPostConfig = field(default_factory=SeverstalPostConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=2e-3, weight_decay=1e-4, warmup_epochs=0.5))
    # batch_size is the global batch, split across torchrun processes
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=8))

    def __post_init__(self) -> None:
        for key in ("threshold", "min_area"):
            if len(getattr(self.post, key)) != NUM_CLASSES:
                raise ConfigError(f"config key 'post.{key}': needs {NUM_CLASSES} values, one per class")
        gate = self.post.cls_threshold
        if isinstance(gate, tuple) and len(gate) != NUM_CLASSES:
            raise ConfigError(f"config key 'post.cls_threshold': one value or {NUM_CLASSES}, one per class")
        if self.data.image_labels and not (self.model.classifier and self.loss.classifier > 0):
            raise ConfigError("config key 'data.image_labels': image-level labels train only the classifier branch; "
                              "set model.classifier=true and loss.classifier > 0")
