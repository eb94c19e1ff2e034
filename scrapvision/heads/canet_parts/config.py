"""The ``canet`` head's configuration (frozen, strict), kept free of torch so that `scrapvision config`
prints it without importing torch or timm."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ...config import OptimConfig, TrainConfig
from ...errors import ConfigError


@dataclass(frozen=True)
class CanetModelConfig:
    kind: Literal["canet", "direct"] = "canet"  # direct = the paper's direct-regression baseline
    backbone: str = "test_vit"  # CPU recipe; the paper uses DINO vit_small_patch8_224 / vit_base_patch8_224
    weights: str = ""  # local backbone weights file (.safetensors / .pth); nothing is downloaded
    img_size: int = 96  # photos are resized to img_size x img_size (96 = the CPU recipe's render size: no resize)
    patch_size: int = 6  # ViT patch size; 0 keeps the backbone's own. 6 -> a 16x16 grid (64 px lost the texture)
    vit_depth: int = 3  # ViT blocks; 0 keeps the backbone's own
    num_classes: int = 10  # I+1 latent material classes, class 0 = copper
    hidden: int = 128  # width of the patch MLP
    copper_density: float = 8.96  # g/cm^3
    # impurity densities start log-spaced here; effective (area-based) densities of thick granules exceed copper's
    init_density_range: tuple[float, float] = (0.1, 16.0)
    decoder_width: int = 64  # direct baseline only


@dataclass(frozen=True)
class CanetDataConfig:
    root: str = ""  # <root>/{train,val[,test]}/<sample>/{images,masks,sample.json}; "" = synthetic
    images_per_sample: int = 4  # N photos per sample in a batch
    # N at validation and at `scrapvision eval`; 0 = the training N at validation (cheap, comparable from epoch
    # to epoch) and every photo of each sample at eval, as predict uses them (more photos, less sampling error)
    eval_images_per_sample: int = 0
    synthetic_train: int = 640  # bags in the synthetic train split (content labels are the scarce signal)
    # synthetic train bags that keep their content label: the first ones, the exact bags of synthetic_train=assayed
    # (bags are i.i.d. draws, so the first k are a random choice); the rest are mask-only. 0 = every bag
    # With mask-only bags an epoch is every assayed bag once plus as many mask-only draws (see epoch_indices)
    assayed: int = 0
    synthetic_val: int = 48  # bags in the synthetic val and test splits
    synthetic_stirs: int = 8  # photos rendered per bag
    synthetic_render_size: int = 96  # rendered pixels per side (then resized to model.img_size)
    synthetic_field_mm: float = 20.0  # camera field of view per side (smaller = bigger granules, fewer per photo)
    synthetic_impurity_types: int = 9  # I of the generator (1..9): brass, aluminium, iron, plastic, rubber, glass, ...
    synthetic_content_range: tuple[float, float] = (0.60, 0.99)  # copper mass fraction, drawn uniformly
    synthetic_seed: int = 0

    def __post_init__(self) -> None:  # here, not in the task: `scrapvision config` checks them too
        lo, hi = self.synthetic_content_range
        if not 0 <= lo <= hi <= 1:
            raise ConfigError(f"data.synthetic_content_range {self.synthetic_content_range}: need 0 <= lo <= hi <= 1")
        if self.images_per_sample < 1:
            raise ConfigError("data.images_per_sample must be >= 1")
        if self.assayed < 0 or (not self.root and self.assayed > self.synthetic_train):
            raise ConfigError(f"data.assayed={self.assayed}: need 0 (every bag) up to data.synthetic_train="
                              f"{self.synthetic_train}")
        if self.assayed and self.root:
            raise ConfigError("data.assayed applies to synthetic data only; on disk a training sample without "
                              "copper_content in its sample.json is mask-only")


@dataclass(frozen=True)
class CanetLossConfig:
    lambda_a: float = 0.2  # weight of the per-photo copper-area term
    lambda_m: float = 0.8  # weight of the copper-content term
    # extension, not in the paper: per-patch copper fraction vs the pooled mask (0 = paper); benchmark (100 epochs,
    # 2 seeds): 1.86 pp content MAE with it, 2.56 pp without
    lambda_p: float = 1.0
    # extension, not in the paper: information maximisation over the impurity classes (each non-copper patch
    # commits to one class, the batch uses many; models/canet.py impurity_class_spread). 0 = off (issue 22's runs)
    lambda_i: float = 0.0


@dataclass(frozen=True)
class CanetOptimConfig(OptimConfig):
    # learning-rate multiplier of the I impurity-density weights: at the base lr they barely move in a CPU run
    density_lr_scale: float = 20.0


@dataclass(frozen=True)
class CanetConfig:
    model: CanetModelConfig = field(default_factory=CanetModelConfig)
    data: CanetDataConfig = field(default_factory=CanetDataConfig)
    loss: CanetLossConfig = field(default_factory=CanetLossConfig)
    # lr chosen on the val split (1e-3 left the latent impurity classes undertrained)
    optim: CanetOptimConfig = field(
        default_factory=lambda: CanetOptimConfig(lr=3e-3, weight_decay=0.01, warmup_epochs=1.0))
    # 8 bags of N photos per step; 60 epochs = 4800 steps, 15.1 min on 2 cores on 2026-12-02 (9.3 on 2026-11-24;
    # benchmarks/results/canet.md)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=60, batch_size=8, log_every=20))
