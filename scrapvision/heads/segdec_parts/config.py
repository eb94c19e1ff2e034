"""The ``segdec`` head's configuration: model, data, loss, optimiser and training sections (frozen, strict), kept
free of torch so that `scrapvision config` prints it without importing torch or timm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config import OptimConfig, TrainConfig
from ...data.splits import ALL_TEST
from ...errors import ConfigError

#: output channels of conv1..conv10 in the paper network (scrapvision.models.segdec)
PAPER_WIDTHS = (32, 32, 64, 64, 64, 64, 64, 64, 64, 1024)
#: smallest side of the stride-8 map: three ceil-mode pools must leave >= 2 pixels, or per-image normalisation
#: of a 1x1 map zeroes the decision features (so inputs need sides >= 8x this)
MIN_DECISION_INPUT = 9


@dataclass(frozen=True)
class SegDecModelConfig:
    backbone: str = "segdec"  # "segdec" = the paper network from scratch; else a timm / registered name
    weights: str = ""  # local weights file for the encoder (paper network or registry backbone); never downloaded
    in_chans: int = 1  # KolektorSDD is grayscale
    widths: tuple[int, ...] = PAPER_WIDTHS  # conv1..conv10 of the paper network
    decision_widths: tuple[int, ...] = (8, 16, 32)
    attention: bool = True  # SE after conv3..conv10 (Bi et al.)
    atrous: bool = True  # 3x3 dilated convs instead of 5x5 / 15x15 (Bi et al.)
    # per-image normalisation: instance divides by the std (the default the recorded KolektorSDD figures used);
    # feature is the reference code's FeatureNorm (divides by sqrt(std)); with this recipe's AdamW its activations
    # shrink and the decision stays at chance (benchmarks/results/segdec_transfer.md): kept to compare, not to use
    norm: Literal["instance", "feature", "batch"] = "instance"
    stop_gradient: bool = True  # full supervision: no decision-loss gradient into the segmentation net (never in weak / mixed)


@dataclass(frozen=True)
class SegDecDataConfig:
    root: str = ""  # data folder; "" = built-in synthetic parts
    # KolektorSDD layout, Severstal as defect / no defect, or the generic folder layout (images/ + masks/ +
    # labels.csv) / MVTec AD, both also picked automatically when root holds images/ or train/good/
    dataset: Literal["kolektor", "severstal", "folder", "mvtec"] = "kolektor"
    height: int = 128  # working resolution (multiples of 8, >= 72); KolektorSDD is ~1250 x 500
    width: int = 80
    fold: int = 0  # cross-validation: this fold is the test fold, the others train and validate; -1 (eval only): every image is the test set
    n_folds: int = 3
    val_fraction: float = 0.2  # share of the training folds' items held out to pick best.pt and the threshold
    split_seed: int = 0  # fold and validation assignment, and the choice of mixed-supervision positives
    supervision: Literal["full", "weak", "mixed"] = "full"
    n_positives: int = 0  # mixed: N_all defective training images used (0 = all)
    n_labelled: int = 10  # mixed: L_p of them keep their masks
    # stretch: each axis to height x width; letterbox: keep the aspect ratio and pad (sets of mixed sizes);
    # pad: keep the native scale on a height x width canvas (shrink only larger images), so small defects keep
    # their pixels; pair it with crop to train on windows of that canvas
    resize: Literal["stretch", "letterbox", "pad"] = "stretch"
    crop: int = 0  # train on crop x crop windows of the canvas (a defect in each defective one); 0 = whole canvas
    flip: bool = True  # random left-right / up-down flips
    photometric: bool = False  # random contrast, brightness, gamma and noise of the grey levels
    rotate90: bool = False  # random quarter turns (square inputs only): tiles and textures have no "up"
    synthetic_items: int = 16  # synthetic data: items x parts images, split by item like KolektorSDD
    synthetic_parts: int = 8
    synthetic_defect_rate: float = 0.3

    def __post_init__(self) -> None:  # here, not in the task: `scrapvision config` checks them too
        side = min(self.height, self.width)
        if self.height % 8 or self.width % 8 or side < 8 * MIN_DECISION_INPUT:
            raise ConfigError(f"config keys 'data.height'/'data.width': {self.height}x{self.width} must be multiples "
                              f"of 8 and at least {8 * MIN_DECISION_INPUT}")
        if not (0 <= self.fold < self.n_folds or self.fold == ALL_TEST):
            raise ConfigError(f"config key 'data.fold': {self.fold} is not in 0..{self.n_folds - 1} (or -1: "
                              "every image as the test set, for eval)")
        if self.crop and not (self.crop % 8 == 0 and 8 * MIN_DECISION_INPUT <= self.crop <= side):
            raise ConfigError(f"config key 'data.crop': {self.crop} must be a multiple of 8 from "
                              f"{8 * MIN_DECISION_INPUT} to the canvas's shorter side {side}")
        if self.crop and self.supervision != "full":
            raise ConfigError("config key 'data.crop': crops need every defective image's mask to keep its label "
                              f"(data.supervision=full), not {self.supervision!r}")
        if self.rotate90 and not self.crop and self.height != self.width:
            raise ConfigError(f"config key 'data.rotate90': quarter turns need a square input, not "
                              f"{self.height}x{self.width} (set data.height = data.width, a data.crop, or "
                              "rotate90=false)")
        if not 0 < self.val_fraction <= 0.5:
            raise ConfigError(f"config key 'data.val_fraction': {self.val_fraction} is not in (0, 0.5]")


@dataclass(frozen=True)
class SegDecLossConfig:
    seg_loss: Literal["bce", "mse"] = "bce"  # mse on sigmoid = Tabernik et al.; bce = Bozic et al.
    schedule: Literal["constant", "dynamic", "decay"] = "decay"
    seg_weight: float = 0.5  # w_seg of the constant schedule
    decay_beta: float = 0.15  # decay schedule: w_seg *= (1 - beta) per epoch
    delta: float = 1.0  # weight of the decision loss
    dilate: int = 5  # square dilation of positive masks, in working-resolution pixels (1 = off)
    weighted: bool = False  # distance-transform weighting of positive pixels (Bozic et al.; off in the CPU recipe)
    weight_p: float = 2.0
    weight_max: float = 1.0
    balanced_sampling: bool = True  # each epoch: all positives + as many negatives
    # weight of defect pixels in the segmentation loss (1 = plain). Small, faint defects cover a percent of the
    # pixels, so a plain pixel loss is minimised by "no defect anywhere", and the network can sit there for
    # many epochs (benchmarks/results/segdec_transfer.md, ground tiles). 0 = automatic: the ratio of clean to
    # defect pixels in the defective training images' targets, at most 100 (printed at the start of training)
    pos_weight: float = 1.0
    # weight of a soft Dice term added to the segmentation loss (0 = off): the overlap ratio of the batch's
    # labelled maps, which does not shrink with the defect's share of the image as a pixel mean does
    dice: float = 0.0


@dataclass(frozen=True)
class SegDecOptimConfig(OptimConfig):
    # learning-rate multiplier of the decision head (its convolutions and FC). Under AdamW every weight moves
    # about lr per step, and the FC inputs the per-image feature normalisation leaves vary little between
    # images, so at the base lr the decision logit grows slowly and its loss sits near chance for hundreds of
    # steps even when the segmentation already separates the images (benchmarks/results/segdec_transfer.md)
    decision_lr_scale: float = 1.0


@dataclass(frozen=True)
class SegDecConfig:
    model: SegDecModelConfig = field(default_factory=SegDecModelConfig)
    data: SegDecDataConfig = field(default_factory=SegDecDataConfig)
    loss: SegDecLossConfig = field(default_factory=SegDecLossConfig)
    optim: SegDecOptimConfig = field(default_factory=lambda: SegDecOptimConfig(lr=1e-3, weight_decay=1e-4, grad_clip=5.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=8, batch_size=2, eval_batch_size=16))
