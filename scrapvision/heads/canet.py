"""``canet``: copper content (mass fraction) of a stirred sample of copper-scrap granules from N photos.

Follows the Content-Aware Network of Zhao et al.: patch classes -> area proportions -> a physics head
that weighs areas by learnt material densities (see :mod:`scrapvision.models.canet`). Training needs the
binary copper mask of every photo and each sample's copper content. ``data.root = ""`` trains on the
physics-grounded synthetic granules of :mod:`scrapvision.data.synthetic.copper_granules`.

Batches are dicts: ``images`` [B, N, 3, H, W] float in [0, 1], ``area`` [B, N] (copper share of each
photo's mask) and ``content`` [B]. ``model.kind = "direct"`` trains the paper's direct-regression baseline
with the same data and metrics.
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from sklearn.metrics import r2_score
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from ..backbones import backbone_channels, create_backbone
from ..backbones.factory import is_timm_vit
from ..checkpoint import atomic_write
from ..config import OptimConfig, TrainConfig
from ..data.copper_samples import (
    CopperSetDataset,
    FolderStore,
    SamplePhotosDataset,
    SampleStore,
    list_samples,
)
from ..data.images import IMAGE_SUFFIXES, subfolders
from ..data.synthetic.copper_granules import GeneratorSpec, render_split
from ..errors import ConfigError, DataError
from ..models.canet import CANet, DirectRegression, canet_loss
from ..registry import TASKS
from ..task import Task, model_device


@dataclass(frozen=True)
class CanetModelConfig:
    kind: Literal["canet", "direct"] = "canet"  # direct = the paper's direct-regression baseline
    backbone: str = "test_vit"  # CPU recipe; the paper uses DINO vit_small_patch8_224 / vit_base_patch8_224
    weights: str = ""  # local backbone weights file (.safetensors / .pth); nothing is downloaded
    img_size: int = 96  # photos are resized to img_size x img_size
    patch_size: int = 6  # ViT patch size; 0 keeps the backbone's own
    vit_depth: int = 3  # ViT blocks; 0 keeps the backbone's own
    num_classes: int = 10  # I+1 latent material classes, class 0 = copper
    hidden: int = 128  # width of the patch MLP
    copper_density: float = 8.96  # g/cm^3
    # impurity densities start log-spaced here; effective (area-based) densities of thick granules exceed copper's
    init_density_range: tuple[float, float] = (0.1, 16.0)
    density_step_scale: float = 20.0  # learning-rate multiplier of the density weights (see models/canet.py)
    decoder_width: int = 64  # direct baseline only


@dataclass(frozen=True)
class CanetDataConfig:
    root: str = ""  # <root>/{train,val[,test]}/<sample>/{images,masks,sample.json}; "" = synthetic
    images_per_sample: int = 4  # N photos per sample in a batch
    eval_images_per_sample: int = 0  # N at validation / eval; 0 = images_per_sample
    synthetic_train: int = 640  # bags in the synthetic train split (content labels are the scarce signal)
    synthetic_val: int = 48  # bags in the synthetic val and test splits
    synthetic_stirs: int = 8  # photos rendered per bag
    synthetic_render_size: int = 96  # rendered pixels per side (then resized to model.img_size)
    synthetic_field_mm: float = 20.0  # camera field of view per side (smaller = bigger granules, fewer per photo)
    synthetic_impurity_types: int = 9  # I of the generator (1..9)
    synthetic_content_range: tuple[float, float] = (0.60, 0.99)
    synthetic_seed: int = 0


@dataclass(frozen=True)
class CanetLossConfig:
    lambda_a: float = 0.2  # weight of the per-photo copper-area term
    lambda_m: float = 0.8  # weight of the copper-content term
    lambda_p: float = 1.0  # extension, not in the paper: per-patch copper fraction vs the pooled mask (0 = paper)


@dataclass(frozen=True)
class CanetConfig:
    model: CanetModelConfig = field(default_factory=CanetModelConfig)
    data: CanetDataConfig = field(default_factory=CanetDataConfig)
    loss: CanetLossConfig = field(default_factory=CanetLossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-3, weight_decay=0.01, warmup_epochs=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=60, batch_size=8, log_every=20))


def build_canet_backbone(cfg: CanetModelConfig) -> nn.Module:
    """The registry backbone; ViTs are built for ``img_size`` (and ``patch_size``/``vit_depth``, so a
    smaller CPU variant of a named ViT can be trained from scratch)."""
    kwargs = {}
    if is_timm_vit(cfg.backbone):
        # only the last block feeds the neck; timm's default (the last 3) fails for ViTs shallower than 3
        kwargs["out_indices"] = (-1,)
        kwargs["img_size"] = cfg.img_size
        if cfg.patch_size:
            kwargs["patch_size"] = cfg.patch_size
        if cfg.vit_depth:
            kwargs["depth"] = cfg.vit_depth
    elif cfg.patch_size or cfg.vit_depth:
        raise ConfigError(f"model.patch_size / model.vit_depth only apply to ViT backbones, not {cfg.backbone!r}; "
                          "set them to 0")
    return create_backbone(cfg.backbone, weights=cfg.weights or None, **kwargs)


@TASKS.register("canet")
class CanetTask(Task):
    name = "canet"
    Config = CanetConfig
    monitor = ("content_mae_pp", "min")
    summary = ("Copper content (mass fraction) of a sample of copper-scrap granules from N photos: ViT patch "
               "classes -> area proportions -> density-weighted content (CANet, Zhao et al.).")
    smoke_overrides = ("model.backbone=test_vit", "model.img_size=32", "model.patch_size=8", "model.vit_depth=2",
                       "model.hidden=16", "data.images_per_sample=2", "data.synthetic_train=8",
                       "data.synthetic_val=4", "data.synthetic_stirs=2", "data.synthetic_render_size=48",
                       "train.batch_size=4")

    def __init__(self, cfg: CanetConfig) -> None:
        super().__init__(cfg)
        lo, hi = cfg.data.synthetic_content_range
        if not 0 <= lo <= hi <= 1:
            raise ConfigError(f"data.synthetic_content_range {cfg.data.synthetic_content_range}: need 0 <= lo <= hi <= 1")
        if cfg.data.images_per_sample < 1:
            raise ConfigError("data.images_per_sample must be >= 1")
        if cfg.model.kind == "direct" and cfg.data.eval_images_per_sample not in (0, cfg.data.images_per_sample):
            raise ConfigError("model.kind=direct takes a fixed N: data.eval_images_per_sample must be 0 or "
                              "equal to data.images_per_sample")

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        backbone = build_canet_backbone(m)
        channels = backbone_channels(backbone)[-1]
        if m.kind == "direct":
            return DirectRegression(backbone, channels, self.cfg.data.images_per_sample, m.decoder_width)
        return CANet(backbone, channels, m.num_classes, m.hidden, m.copper_density, m.init_density_range,
                     density_step_scale=m.density_step_scale)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        size = self.cfg.model.img_size
        return torch.rand(batch_size, self.cfg.data.images_per_sample, 3, size, size)

    # ------------------------------------------------------------------ data
    def _spec(self) -> GeneratorSpec:
        d = self.cfg.data
        return GeneratorSpec(image_size=d.synthetic_render_size, field_mm=d.synthetic_field_mm, stirs=d.synthetic_stirs,
                             impurity_types=d.synthetic_impurity_types, content_range=d.synthetic_content_range)

    def _store(self, split: str) -> SampleStore:
        d = self.cfg.data
        if not d.root:
            count = d.synthetic_train if split == "train" else d.synthetic_val
            rendered = render_split(self._spec(), d.synthetic_seed, split, count, self.cfg.model.img_size)
            return SampleStore(list(rendered.images), list(rendered.masks), list(rendered.areas), list(rendered.contents))
        return FolderStore(list_samples(Path(d.root) / split), self.cfg.model.img_size)

    def _eval_n(self) -> int:
        return self.cfg.data.eval_images_per_sample or self.cfg.data.images_per_sample

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        seed = self.cfg.train.seed
        train = CopperSetDataset(self._store("train"), self.cfg.data.images_per_sample, train=True, seed=seed)
        return train, CopperSetDataset(self._store("val"), self._eval_n(), train=False)

    def build_eval_dataset(self) -> Dataset:
        """The test split (synthetic: held-out bags; on disk: ``<root>/test`` when present, else val)."""
        root = self.cfg.data.root
        split = "test" if not root or (Path(root) / "test").is_dir() else "val"
        return CopperSetDataset(self._store(split), self._eval_n(), train=False)

    # ------------------------------------------------------------------ training
    def compute_loss(self, model: nn.Module, batch: dict, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = model(batch["images"])
        loss = self.cfg.loss
        return canet_loss(outputs, batch["area"], batch["content"], loss.lambda_a, loss.lambda_m,
                          batch["mask"], loss.lambda_p)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        device = model_device(model)
        true_c, pred_c, true_a, pred_a, losses = [], [], [], [], []
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = model(batch["images"])
            cfg = self.cfg.loss
            loss, _ = canet_loss(outputs, batch["area"], batch["content"], cfg.lambda_a, cfg.lambda_m,
                                 batch["mask"], cfg.lambda_p)
            losses.append(float(loss) * len(batch["content"]))
            true_c.append(batch["content"].cpu())
            pred_c.append(outputs["content"].float().cpu())
            true_a.append(batch["area"].cpu())
            if "area" in outputs:
                pred_a.append(outputs["area"].float().cpu())
        return content_metrics(torch.cat(true_c).numpy(), torch.cat(pred_c).numpy(), torch.cat(true_a).numpy(),
                               torch.cat(pred_a).numpy() if pred_a else None, sum(losses))

    # ------------------------------------------------------------------ predict
    predict_key = "sample"
    predict_columns = ("sample", "photos", "copper_content", "true_copper_content", "abs_error_pp", "photo_areas")

    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--images-per-sample", type=int, default=0,
                            help="use the first N photos of each sample (0: all; the direct baseline needs its N)")

    def collate_fn(self):
        return _collate

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        """One item per sample folder: ``inputs`` is a sample (``images/`` or photos directly) or a folder
        of samples. The direct baseline takes exactly its training N photos."""
        limit = getattr(args, "images_per_sample", 0) or 0
        if self.cfg.model.kind == "direct":
            limit = self.cfg.data.images_per_sample
        return SamplePhotosDataset(_sample_folders(Path(inputs)), self.cfg.model.img_size, limit,
                                   exact=self.cfg.model.kind == "direct")

    def predict_batch(self, model: nn.Module, batch: list[dict], out: Path, args: argparse.Namespace) -> list[dict]:
        """Prints each sample's copper content and per-photo copper area; one CSV row per sample."""
        device, rows = model_device(model), []
        for item in batch:
            outputs = model(item["images"].unsqueeze(0).to(device))
            content = float(outputs["content"][0])
            names = item["photos"]
            areas = outputs["area"][0].tolist() if "area" in outputs else [float("nan")] * len(names)
            truth = item["true_copper_content"]
            rows.append({"sample": item["sample"], "photos": len(names), "copper_content": round(content, 6),
                         "true_copper_content": "" if truth is None else truth,
                         "abs_error_pp": "" if truth is None else round(100 * abs(content - truth), 4),
                         "photo_areas": ";".join(f"{n}={a:.6f}" for n, a in zip(names, areas))})
            shown = ", ".join(f"{n} {100 * a:.1f} %" for n, a in zip(names, areas))
            print(f"{item['sample']}: copper content {100 * content:.2f} % | copper area per photo: {shown}")
        return rows

    def finish_predictions(self, predictions: Path, out: Path, args: argparse.Namespace) -> Path:
        """``canet_samples.csv`` (one row per sample) and ``canet_images.csv`` (one row per photo)."""
        with open(predictions, newline="", encoding="utf-8") as handle:
            samples = list(csv.DictReader(handle))
        images = []
        for row in samples:
            for pair in filter(None, row.pop("photo_areas").split(";")):
                name, area = pair.rsplit("=", 1)
                images.append({"sample": row["sample"], "image": name, "copper_area_proportion": area})
        _write_csv(out / "canet_images.csv", images, ("sample", "image", "copper_area_proportion"))
        return _write_csv(out / "canet_samples.csv", samples, self.predict_columns[:-1])


def _collate(items: list[dict]) -> Any:
    """Training batches stack as usual; prediction items stay a list, since samples differ in photo count."""
    return items if "sample" in items[0] else default_collate(items)


def content_metrics(true_c: np.ndarray, pred_c: np.ndarray, true_a: np.ndarray, pred_a: np.ndarray | None,
                    loss_sum: float = 0.0) -> dict[str, float]:
    """Content errors in percentage points (pp) of mass fraction, R^2, and per-photo copper-area errors.
    ``trivial_mae_pp`` scores the "copper area fraction of the masks = content" estimate on the same photos."""
    err = 100 * (pred_c - true_c)
    metrics = {
        "loss": loss_sum / max(1, len(true_c)),
        "content_mae_pp": float(np.abs(err).mean()),
        "content_rmse_pp": float(np.sqrt((err**2).mean())),
        "content_r2": float(r2_score(true_c, pred_c)) if len(true_c) > 1 else float("nan"),
        "content_max_err_pp": float(np.abs(err).max()),
        "within_1pp": float((np.abs(err) <= 1).mean()),
        "trivial_mae_pp": float(100 * np.abs(true_a.mean(1) - true_c).mean()),
    }
    if pred_a is not None:
        area_err = 100 * (pred_a - true_a)
        metrics["area_mae_pp"] = float(np.abs(area_err).mean())
        metrics["area_rmse_pp"] = float(np.sqrt((area_err**2).mean()))
    return metrics


def _sample_folders(inputs: Path) -> list[Path]:
    if not inputs.is_dir():
        raise DataError(f"--input {inputs}: expected a sample folder or a folder of sample folders")
    if (inputs / "images").is_dir() or any(p.suffix.lower() in IMAGE_SUFFIXES for p in inputs.iterdir()):
        return [inputs]
    folders = subfolders(inputs)
    if not folders:
        raise DataError(f"--input {inputs}: holds no photos and no sample folders")
    return folders


def _write_csv(path: Path, rows: list[dict], columns: Sequence[str]) -> Path:
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
