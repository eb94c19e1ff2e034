"""``pretrain``: self-supervised pretraining (SimCLR or SimMIM) of any registered backbone on unlabeled images.

A plant has thousands of unlabeled photos from its own cameras and no internet to fetch ImageNet or CLIP
weights. This head learns the backbone from those photos. ``model.method=simclr``: two random resized crops
of each image are pulled together and pushed away from the other images of the batch (NT-Xent, Chen et al.
2020). ``model.method=simmim``: square units of a crop are hidden and their pixels predicted from the rest
(Xie et al. 2022), which needs no difference between images (KolektorSDD's commutators all look alike). The
run folder gets ``backbone.safetensors`` beside the checkpoints, rewritten with every ``last.pt``; every
head loads it through its ``model.weights`` key. ``data.root`` takes several folders, comma-separated;
``""`` uses the synthetic scrap images.

SimCLR's loss and projection head come from lightly (the ``[pretrain]`` extra). SimMIM is written here: lightly's
masked-image modules take a timm ViT's tokens, and this head pretrains CNNs and open_clip towers as well, so it
masks in pixel space and reads the last feature map (:class:`scrapvision.models.ssl.MaskedImageNet`). The
augmentations are
albumentations seeded per sample and view, like every other head's, so a resumed run is bit-identical.
"""

from __future__ import annotations

import argparse
import inspect
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..backbones import create_backbone
from ..backbones.factory import is_timm_vit
from ..catalog import TASK_SUMMARIES
from ..checkpoint import atomic_write
from ..data.classification import predict_images
from ..data.synthetic.scrap_grades import generate_images
from ..data.unlabeled import MaskedViews, TwoViews, load_unlabeled
from ..errors import ConfigError, DataError
from ..registry import BACKBONES, TASKS
from ..task import Task, model_device
from .pretrain_parts.config import (
    PretrainConfig,
    PretrainModelConfig,
)

BACKBONE_FILE = "backbone.safetensors"


def build_pretrain_backbone(model_cfg: PretrainModelConfig, crop_size: int) -> nn.Module:
    """The backbone as the heads build it, sized for ``crop_size`` where the architecture fixes a size."""
    kwargs: dict[str, Any] = {}
    if is_timm_vit(model_cfg.backbone):
        kwargs = {"out_indices": (-1,), "img_size": crop_size}
        kwargs.update({"patch_size": model_cfg.patch_size} if model_cfg.patch_size else {})
        kwargs.update({"depth": model_cfg.vit_depth} if model_cfg.vit_depth else {})
    elif model_cfg.patch_size or model_cfg.vit_depth:
        raise ConfigError(f"model.patch_size / model.vit_depth only apply to timm ViTs, not {model_cfg.backbone!r}; set them to 0")
    elif model_cfg.backbone in BACKBONES and "image_size" in inspect.signature(BACKBONES.get(model_cfg.backbone)).parameters:
        kwargs["image_size"] = crop_size  # CLIP image towers: position embeddings for this size
    return create_backbone(model_cfg.backbone, weights=model_cfg.weights or None, **kwargs)


def save_backbone(backbone: nn.Module, path: Path, name: str) -> Path:
    """The backbone's own state dict (the keys ``create_backbone(name)`` has), written atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in backbone.state_dict().items()}
    with atomic_write(path) as handle:
        handle.write(save(tensors, metadata={"backbone": name, "format": "scrapvision-backbone/1"}))
    return path


@TASKS.register("pretrain")
class PretrainTask(Task):
    name = "pretrain"
    Config = PretrainConfig
    summary = TASK_SUMMARIES["pretrain"]
    smoke_overrides = ("model.backbone=tiny_cnn", "model.proj_hidden=16", "model.proj_dim=8", "data.crop_size=32",
                       "data.keep_size=40", "data.synthetic_images=10", "data.val_fraction=0.2", "train.batch_size=4")
    predict_columns = ("file", "features", "error")

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__(cfg)
        self._images: list | None = None
        self._loss: nn.Module | None = None
        self.masked = cfg.model.method == "simmim"
        if self.masked and cfg.data.crop_size % cfg.data.mask_unit:
            raise ConfigError(f"data.mask_unit={cfg.data.mask_unit} must divide data.crop_size={cfg.data.crop_size} "
                              "(model.method=simmim hides whole units)")

    # ------------------------------------------------------------------ data
    def images(self) -> list:
        if self._images is None:
            data_cfg = self.cfg.data
            if data_cfg.root:
                self._images = load_unlabeled(data_cfg.root, data_cfg.unreadable, data_cfg.keep_size)
            else:
                per_class = math.ceil(data_cfg.synthetic_images / 6)
                self._images = generate_images(per_class, data_cfg.keep_size, data_cfg.synthetic_seed, 6)[0][: data_cfg.synthetic_images]
        return self._images

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        data_cfg, seed = self.cfg.data, self.cfg.train.seed
        images = self.images()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(data_cfg.split_seed)).tolist()
        n_val = int(round(data_cfg.val_fraction * len(images)))
        if len(images) - n_val < 2:
            raise DataError(f"pretraining needs at least 2 training images (each needs another as a negative); "
                            f"{len(images)} readable, {n_val} held out by data.val_fraction")
        train = [images[i] for i in sorted(order[n_val:])]
        val = [images[i] for i in sorted(order[:n_val])]
        views = {"crop_size": data_cfg.crop_size, "min_scale": data_cfg.min_scale, "color_strength": data_cfg.color_strength}
        if self.masked:
            masks = {"mask_unit": data_cfg.mask_unit, "mask_ratio": data_cfg.mask_ratio}
            return MaskedViews(train, seed=seed, **views, **masks), MaskedViews(val, seed=seed + 1, fixed=True, **views, **masks)
        return TwoViews(train, seed=seed, **views), TwoViews(val, seed=seed + 1, fixed=True, **views)

    def epoch_indices(self, dataset: Dataset, epoch: int, generator: torch.Generator) -> list[int]:
        """Whole batches only: a last batch of one image has no negative and breaks BatchNorm."""
        order = torch.randperm(len(dataset), generator=generator).tolist()  # type: ignore[arg-type]
        batch = self.cfg.train.batch_size
        return order[: len(order) - len(order) % batch] if len(order) >= batch else order

    # ------------------------------------------------------------------ model and loss
    def build_model(self) -> nn.Module:
        from ..models.ssl import ContrastiveNet, MaskedImageNet

        model_cfg, data_cfg = self.cfg.model, self.cfg.data
        backbone = build_pretrain_backbone(model_cfg, data_cfg.crop_size)
        if not self.masked:
            return ContrastiveNet(backbone, model_cfg.proj_hidden, model_cfg.proj_dim)
        model = MaskedImageNet(backbone)
        if data_cfg.mask_unit % model.stride or data_cfg.crop_size % model.stride:
            raise ConfigError(f"model.method=simmim: {model_cfg.backbone}'s last feature map has stride {model.stride}; "
                              f"data.mask_unit ({data_cfg.mask_unit}) and data.crop_size ({data_cfg.crop_size}) must be "
                              "multiples of it")
        return model

    def compute_loss(self, model: nn.Module, batch: Any, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        from ..models.ssl import masked_l1, nt_xent_loss

        if self.masked:
            return masked_l1(model(batch["view1"], batch["mask"])["reconstruction"], batch["view1"], batch["mask"]), {}
        if self._loss is None:
            self._loss = nt_xent_loss(self.cfg.model.temperature)
        # one forward over both views: DDP allows a single forward per backward
        z1, z2 = model(torch.cat([batch["view1"], batch["view2"]]))["projection"].chunk(2)
        return self._loss(z1, z2), {}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """NT-Xent over fixed views (rank 0 alone: no gathering across ranks); SimMIM: the masked L1 of fixed
        views and masks."""
        from ..models.ssl import lightly, masked_l1

        device = model_device(model)
        total, count = 0.0, 0
        if self.masked:
            for batch in loader:
                view, mask = batch["view1"].to(device), batch["mask"].to(device)
                total += float(masked_l1(model(view, mask)["reconstruction"].float(), view, mask)) * len(view)
                count += len(view)
            return {"loss": total / max(1, count), "images": float(count)}
        loss_fn = lightly().loss.NTXentLoss(temperature=self.cfg.model.temperature)
        for batch in loader:
            z1 = model(batch["view1"].to(device))["projection"].float().cpu()
            z2 = model(batch["view2"].to(device))["projection"].float().cpu()
            total += float(loss_fn(z1, z2)) * len(z1)
            count += len(z1)
        return {"loss": total / max(1, count), "images": float(count)}

    @torch.no_grad()
    def write_report(self, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
        """The image pairs (two fixed views of one image) whose embeddings agree least: what the backbone
        does not yet see as the same scene. SimMIM: the worst reconstructions beside their input."""
        from ..plots import collate_items, save_grid, to_rgb, worst

        device = model_device(model)
        if self.masked:
            return self._masked_report(model, loader, out, device)
        similarity = torch.cat([F.cosine_similarity(model(b["view1"].to(device))["projection"].float(),
                                                    model(b["view2"].to(device))["projection"].float()).cpu()
                                for b in loader]).numpy()
        picks = worst(-similarity, self.report_items)
        batch = collate_items(loader, picks)
        rows = [[to_rgb(v1), to_rgb(v2)] for v1, v2 in zip(batch["view1"], batch["view2"])]
        titles = [f"#{i}: cosine {similarity[i]:.3f}" for i in picks]
        return [save_grid(rows, titles, out / "worst_pairs.png", ("view 1", "view 2"),
                          "least similar embeddings of two views of one image first")]

    def _masked_report(self, model: nn.Module, loader: DataLoader, out: Path, device: torch.device) -> list[Path]:
        from ..models.ssl import masked_l1, unit_mask
        from ..plots import collate_items, save_grid, to_rgb, worst

        errors = []
        for batch in loader:
            view, mask = batch["view1"].to(device), batch["mask"].to(device)
            rebuilt = model(view, mask)["reconstruction"].float()
            errors += [float(masked_l1(r[None], v[None], m[None])) for r, v, m in zip(rebuilt, view, mask)]
        picks = worst(np.array(errors), self.report_items)
        batch = collate_items(loader, picks)
        view, mask = batch["view1"].to(device), batch["mask"].to(device)
        rebuilt = model(view, mask)["reconstruction"].float()
        hidden = unit_mask(mask, view.shape[-2:])
        rows = [[to_rgb(v.cpu()), to_rgb((v * (1 - h)).cpu()), to_rgb((v * (1 - h) + r * h).cpu())]
                for v, h, r in zip(view, hidden, rebuilt)]
        titles = [f"#{i}: masked L1 {errors[i]:.3f}" for i in picks]
        return [save_grid(rows, titles, out / "worst_reconstructions.png", ("view", "input (hidden units black)",
                                                                         "hidden units rebuilt"),
                          "largest reconstruction error first")]

    def model_input(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        return (batch["view1"],)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        size = self.cfg.data.crop_size
        return torch.randn(batch_size, 3, size, size)

    def after_checkpoint(self, model: nn.Module, run_dir: Path, final: bool) -> None:
        save_backbone(model.backbone, run_dir / BACKBONE_FILE, self.cfg.model.backbone)

    # ------------------------------------------------------------------ predict: one embedding per image
    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--unreadable", choices=("skip", "fail"), default=None,
                            help="unreadable images: skip (row with an error) or fail (default: data.unreadable)")

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        return predict_images(inputs, args, self.cfg.data.crop_size, self.cfg.data.unreadable)

    def predict_batch(self, model: nn.Module, batch: dict, out: Path, args: argparse.Namespace) -> list[dict]:
        """The pooled backbone features of each image (space-separated), for retrieval or clustering."""
        import sys

        features = model(batch["image"].to(model_device(model)))["features"].float().cpu()
        rows = []
        for key, error, vector in zip(batch["file"], batch["error"], features):
            if error:
                print(f"pretrain: skipped {error}", file=sys.stderr)
            text = "" if error else " ".join(f"{v:.5g}" for v in vector.tolist())
            rows.append({"file": key, "features": text, "error": error})
        return rows


__all__ = ["BACKBONE_FILE", "PretrainConfig", "PretrainTask", "build_pretrain_backbone", "save_backbone"]
