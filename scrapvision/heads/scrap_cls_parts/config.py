"""The ``scrap_cls`` head's configuration (frozen, strict), kept free of torch so that `scrapvision config`
prints it without importing torch or timm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config import OptimConfig, TrainConfig
from ...errors import ConfigError


@dataclass(frozen=True)
class ScrapClsModelConfig:
    backbone: str = "tinynet_e"  # timm EfficientNet family; the paper uses efficientnet_b5
    weights: str = ""  # local .safetensors / state-dict file for the backbone; "" = from scratch
    # probe: frozen backbone, pooled `stages` -> standardised -> linear (for a pretrained model.weights)
    variant: Literal["baseline", "clf", "sef", "clfsef", "probe"] = "clfsef"
    stages: tuple[int, ...] = (2, 3, 4)  # backbone stages (strides 8, 16, 32) fused by CLF; last = deep
    fuse_channels: int = 96  # width of the fused (CLF) / enhanced (SEF) features
    sef_groups: int = 8  # SEF channel groups (fuse_channels must divide by it)
    dropout: float = 0.2
    # probe only: also classify hand-made colour (HSV histogram, L*a*b* statistics) and texture (Gabor energy,
    # gradient orientation) statistics of each photo, which need no training (scrapvision/models/image_stats.py)
    image_stats: bool = False
    # with image_stats: also local binary pattern histograms (fine texture: rotation-invariant uniform LBP, 3 radii)
    image_stats_lbp: bool = False
    # probe only: how the linear layer is fitted. epochs: by the Trainer's gradient epochs (optim, train.epochs);
    # logreg: before them, as an L2 logistic regression (L-BFGS) whose strength is chosen by 5-fold accuracy on the
    # training photos, then frozen (scrapvision/models/linear_probe.py); needs data.augment=none
    probe_fit: Literal["epochs", "logreg"] = "epochs"

    def __post_init__(self) -> None:
        for key, value, default in (("image_stats", self.image_stats, False), ("probe_fit", self.probe_fit, "epochs")):
            if value != default and self.variant != "probe":
                raise ConfigError(f"config key 'model.{key}': {value!r} needs model.variant=probe (got "
                                  f"{self.variant!r}); it concerns a frozen backbone's linear probe")
        if self.image_stats_lbp and not self.image_stats:
            raise ConfigError("config key 'model.image_stats_lbp': true needs model.image_stats=true; the patterns are "
                              "part of the photo statistics")


@dataclass(frozen=True)
class ScrapClsDataConfig:
    root: str = ""  # ImageFolder (root/<class>/...) or root/<csv> with image,class; "" = synthetic
    layout: Literal["auto", "folder", "csv"] = "auto"  # auto: the CSV if it exists, else ImageFolder
    csv: str = "labels.csv"
    image_size: int = 96  # network input; images are kept in memory with shorter side image_size * 8/7
    augment: Literal["none", "light", "strong"] = "strong"  # strong: crops, flips, rotation, colour, blur, cut-out
    sampling: Literal["uniform", "balanced"] = "uniform"  # balanced: draw classes equally often
    unreadable: Literal["skip", "fail"] = "skip"  # truncated / broken images: leave out (reported) or stop
    val_fraction: float = 0.2  # stratified hold-out when folds == 0; 0 = train on every image (no validation)
    folds: int = 0  # > 1: stratified k-fold, validating on fold `fold`
    fold: int = 0
    split_seed: int = 0
    eval_split: Literal["val", "all"] = "val"  # what `scrapvision eval` scores
    synthetic_classes: int = 6
    synthetic_train_per_class: int = 48
    synthetic_val_per_class: int = 16
    synthetic_seed: int = 0


@dataclass(frozen=True)
class ScrapClsLossConfig:
    aux_weight: float = 1.0  # cross-entropy on the enhanced (CLF/SEF) branch alone
    kd_weight: float = 0.5  # knowledge distillation; 0 disables
    kd_temperature: float = 4.0
    teacher: str = ""  # scrap_cls checkpoint to distil from; "" = self-distillation into the branch
    entropy_weight: float = 0.1  # maximum-entropy regulariser; 0 disables


@dataclass(frozen=True)
class ScrapClsEvalConfig:
    # if set, every evaluation (each validation epoch too) rewrites per_class.csv / .png and confusion_matrix.png
    # here; `scrapvision eval --report DIR` writes the same once, with the worst-classified images
    report_dir: str = ""
    # test-time flips, averaged in probability space (--tta overrides); training's strong augmentation flips
    # horizontally only, so hvflip and d4 (also the 90-degree rotations; inputs are square) show the model views
    # it never trained on
    tta: Literal["none", "hflip", "hvflip", "d4"] = "none"
    # input size of eval / predict / export; 0 = data.image_size. Random resized crops make objects look larger in
    # training than in a centre crop at the same size, so a somewhat larger test size can match them (FixRes)
    image_size: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 0:
            raise ConfigError(f"config key 'eval.image_size': {self.image_size}; expected 0 (= data.image_size) "
                              "or a size in px")


@dataclass(frozen=True)
class ScrapClsConfig:
    model: ScrapClsModelConfig = field(default_factory=ScrapClsModelConfig)
    data: ScrapClsDataConfig = field(default_factory=ScrapClsDataConfig)
    loss: ScrapClsLossConfig = field(default_factory=ScrapClsLossConfig)
    eval: ScrapClsEvalConfig = field(default_factory=ScrapClsEvalConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-3, weight_decay=0.05, warmup_epochs=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=12, batch_size=32))

    def __post_init__(self) -> None:
        if self.model.probe_fit == "logreg" and self.data.augment != "none":
            raise ConfigError(f"config key 'model.probe_fit': logreg fits the probe once on each training photo as it "
                              f"is, so it needs data.augment=none (got {self.data.augment!r})")
