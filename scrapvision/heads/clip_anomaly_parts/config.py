"""The ``clip_anomaly`` head's configuration (frozen, strict), kept free of torch so that `scrapvision config`
prints it without importing torch or timm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config import OptimConfig, TrainConfig
from ...errors import ConfigError

TEMPLATES = ("a photo of an {}.", "a close-up photo of an {}.", "a photo of an {} in a scrap pile.",
             "a cropped photo of an {}.", "a bright photo of an {}.", "a dark photo of an {}.")


@dataclass(frozen=True)
class ClipModelConfig:
    clip_name: str = "scrap-vit-tiny"  # open_clip name (ViT-B-16, ViT-L-14-336...) or scrapvision's small one
    weights: str = ""  # local open_clip weights file or folder, or an image tower (pretrain's backbone.safetensors)
    image_size: tuple[int, int] = (128, 128)  # (H, W) input; fixes the ViT position grid (the tile size when tiled)
    patch_size: int = 0  # ViT patch size; 0 keeps the CLIP config's own (scrap-vit-tiny: 8); random init only
    blocks: tuple[int, ...] = ()  # image-tower blocks giving patch tokens; () = n_scales evenly spaced (zero_shot: last)
    n_scales: int = 4
    finetune: Literal["full", "last_k", "frozen"] = "full"  # image encoder; adapters + temperature always train
    last_k: int = 2  # blocks trained when finetune=last_k
    # few_shot and zero_shot train nothing; zero_shot needs real CLIP weights
    mode: Literal["supervised", "few_shot", "zero_shot"] = "supervised"
    class_names: tuple[str, ...] = ()  # () = from the data (classes.txt, or the built-in set's list)
    temperature: float = 0.07  # initial softmax temperature; logits = cos / temperature (learned)


@dataclass(frozen=True)
class PromptConfig:
    normal: str = "object which is made of steel"
    anomaly: str = "object which is not steel but {}"  # {} = impurity class name
    templates: tuple[str, ...] = TEMPLATES  # {} = the prompt above; the ensemble is averaged


@dataclass(frozen=True)
class LossConfig:
    focal_gamma: float = 2.0
    focal_weight: float = 1.0
    dice_weight: float = 1.0


@dataclass(frozen=True)
class FewShotConfig:
    k: int = 4  # reference images, the first k of the training split
    references: Literal["normal", "labelled"] = "normal"  # defect-free images only, or any with their masks
    memory_weight: float = 0.5  # share of the memory-bank probabilities in the mix
    # bank size bound: a larger bank (many or large references; KolektorSDD at k=16 holds 26,624 patches per
    # scale) is cut to this many patches by greedy coreset selection, keeping each class's share; 0 = keep all
    max_patches: int = 8192

    def __post_init__(self) -> None:  # here, not in the task: `scrapvision config` checks it too
        if self.max_patches < 0:
            raise ConfigError(f"config key 'few_shot.max_patches': {self.max_patches} must be >= 0 (0 = keep all)")


@dataclass(frozen=True)
class ClipDataConfig:
    root: str = ""  # "" = built-in synthetic scrap scenes
    format: Literal["class_masks", "kolektor", "folder", "mvtec"] = "class_masks"  # folder: images/ + masks/
    # synthetic only; chosen on the validation scenes (2026-12-02, 16 epochs, benchmarks/results/clip_anomaly.md):
    # final impurity mIoU 34.8 / 55.1 / 71.0 with 192 (and 8 epochs) / 384 / 768 scenes; 411 s at 1 thread
    n_train: int = 768
    n_val: int = 64  # synthetic only
    synthetic_seed: int = 0
    clean_fraction: float = 0.25  # synthetic scenes without impurity
    sampling: Literal["uniform", "balanced"] = "uniform"  # balanced: half the draws hold an anomaly
    val_fraction: float = 0.2  # class_masks without train/ and val/ folders; kolektor, folder, mvtec: of the training folds
    split_seed: int = 0
    fold: int = 0  # kolektor, folder, mvtec: held-out fold; -1 (eval only): every image is the test set
    n_folds: int = 3
    # (H, W) every image is resized to; () = model.image_size. Larger: training draws model.image_size crops
    # (holding a defect on defective images) and eval / predict stitch overlapping tiles back at this size
    resolution: tuple[int, ...] = ()
    tile_overlap: float = 0.25  # share of a tile that overlaps its neighbour in tiled inference
    # training masks only: each anomaly grows by a dilate x dilate square at the working size (1 = off); thin
    # labels (KolektorSDD's cracks) then hold the pixels around them too, as segdec's loss.dilate does
    dilate: int = 1

    def __post_init__(self) -> None:  # here, not in the task: `scrapvision config` checks it too
        if self.dilate < 1:
            raise ConfigError(f"config key 'data.dilate': {self.dilate} must be >= 1 (1 = off)")


@dataclass(frozen=True)
class ClipPostConfig:
    # > 0: a pixel is an impurity only when 1 - p(normal) exceeds this (then its most likely impurity);
    # 0 = the most likely class. `scrapvision tune` chooses it on the validation split (best mIoU)
    anomaly_threshold: float = 0.0


@dataclass(frozen=True)
class ClipAnomalyConfig:
    model: ClipModelConfig = field(default_factory=ClipModelConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    few_shot: FewShotConfig = field(default_factory=FewShotConfig)
    data: ClipDataConfig = field(default_factory=ClipDataConfig)
    post: ClipPostConfig = field(default_factory=ClipPostConfig)
    # validation metric that picks best.pt (higher is better); pixel_ap suits rare thin anomalies, where the
    # arg-max mIoU stays near the normal class's IoU
    monitor: Literal["miou", "pixel_ap", "aupro", "image_ap"] = "miou"
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=0.05, warmup_epochs=0.5))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=16, batch_size=16, log_every=5))
