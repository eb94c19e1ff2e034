"""``severstal``: 4-class steel-strip defect segmentation (Severstal Kaggle) with a U-Net or FPN.

Any registry backbone (timm ``features_only`` or ``tiny_cnn``) feeds segmentation_models_pytorch's U-Net
or FPN decoder. An image-level classification head over the deepest features can gate the masks, as the
strong Kaggle solutions did (a mask only survives if the classifier also believes in the class).
Scoring is Kaggle's: mean Dice over every (image, class) pair at the original resolution.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from ..catalog import TASK_SUMMARIES
from ..checkpoint import atomic_write
from ..data.folder import is_folder_layout, read_layout, split_items
from ..data.images import read_image
from ..data.inference import ImageFiles, overlay_masks, write_png
from ..data.rle import rle_encode
from ..data.sampling import balanced_order, rarest_label
from ..data.severstal import (
    NUM_CLASSES,
    SeverstalDataset,
    SeverstalRecord,
    folder_records,
    load_image_labelled,
    load_records,
    split_records,
)
from ..data.synthetic.steel_strip import generate_records
from ..errors import ConfigError
from ..metrics import KaggleDiceMeter, kaggle_dice_pairs
from ..models.severstal import SeverstalNet
from ..plots import collate_items, save_grid, save_pr_curve, to_rgb, worst
from ..registry import TASKS
from ..task import Task, model_device
from ..tta import tta_average
from .severstal_parts.config import (
    SeverstalConfig,
)
from .severstal_parts.post import THRESHOLDS, PostStats, postprocess, search, upsample


# ---------------------------------------------------------------------------- data
class WithFullMasks(Dataset):
    """Adds the original-resolution masks, so Dice is scored as Kaggle scores it, not on resized masks."""

    def __init__(self, dataset: SeverstalDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        item["full_mask"] = torch.from_numpy(self.dataset.records[index].masks())
        return item


# ---------------------------------------------------------------------------- task
@TASKS.register("severstal")
class SeverstalTask(Task):
    name = "severstal"
    Config = SeverstalConfig
    monitor = ("dice", "max")
    supports_tta = True
    eval_all_overrides = ()  # eval --data DIR scores every fully-labelled image of DIR already
    summary = TASK_SUMMARIES["severstal"]
    smoke_overrides = ("model.backbone=tiny_cnn", "model.decoder_channels=[16,16,8,8,8]", "data.image_size=[32,192]",
                       "data.synthetic_shape=[64,384]", "data.synthetic_train=8", "data.synthetic_val=4",
                       "train.batch_size=4")

    def __init__(self, cfg: SeverstalConfig) -> None:
        super().__init__(cfg)
        self.dice_loss = DiceLoss("multilabel", from_logits=True)
        self.tta = cfg.post.tta

    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        return SeverstalNet(model_cfg.backbone, model_cfg.arch, model_cfg.weights, model_cfg.decoder_channels,
                            model_cfg.fpn_channels, model_cfg.classifier, num_classes=NUM_CLASSES)

    def _records(self):
        data_cfg = self.cfg.data
        if data_cfg.image_labels and (not data_cfg.root or is_folder_layout(data_cfg.root)):
            raise ConfigError("config key 'data.image_labels': needs --data in the Kaggle layout (train.csv + "
                              "train_images/, where its images are)")
        if not data_cfg.root:
            seed, shape = data_cfg.synthetic_seed, data_cfg.synthetic_shape
            train = generate_records(data_cfg.synthetic_train, seed=seed, shape=shape)
            val = generate_records(data_cfg.synthetic_val, seed=seed + 1, shape=shape)
            return train, val
        if is_folder_layout(data_cfg.root):
            train, val, _ = self._folder_parts()
            return train, val
        weak = load_image_labelled(data_cfg.root, data_cfg.image_labels) if data_cfg.image_labels else []
        records = load_records(data_cfg.root, coverage=data_cfg.coverage or None,
                               image_labelled=[r.image_id for r in weak])
        train, val = split_records(records, data_cfg.val_fraction, seed=self.cfg.train.seed)
        return train + weak, val

    def _folder_parts(self) -> tuple[list[SeverstalRecord], ...]:
        """(train, validation, test) records of the generic layout (labels.csv ``split`` or a grouped,
        stratified validation share; test only from a ``split`` column)."""
        scan = read_layout(self.cfg.data.root, NUM_CLASSES + 1)
        parts = split_items(scan.items, self.cfg.data.val_fraction, self.cfg.train.seed)
        return tuple(folder_records(part, NUM_CLASSES) for part in parts)

    def layout_classes(self) -> int | None:
        return NUM_CLASSES + 1

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        data_cfg, seed = self.cfg.data, self.cfg.train.seed
        train, val = self._records()
        return (SeverstalDataset(train, data_cfg.image_size, augment=data_cfg.augment, seed=seed),
                WithFullMasks(SeverstalDataset(val, data_cfg.image_size, augment=False, seed=seed)))

    def build_eval_dataset(self) -> Dataset:
        """``eval --data DIR`` scores every fully-labelled image of DIR; synthetic: the validation split."""
        data_cfg = self.cfg.data
        if data_cfg.root and is_folder_layout(data_cfg.root):  # the test split when labels.csv has one, else all
            train, val, test = self._folder_parts()
            records = test or train + val
        elif data_cfg.root:
            records = load_records(data_cfg.root, coverage=data_cfg.coverage or None)
        else:
            records = self._records()[1]
        return WithFullMasks(SeverstalDataset(records, data_cfg.image_size, augment=False))

    def epoch_indices(self, dataset: Dataset, epoch: int, generator: torch.Generator) -> list[int]:
        if self.cfg.data.sampling != "balanced" or not isinstance(dataset, SeverstalDataset):
            return super().epoch_indices(dataset, epoch, generator)  # type: ignore[return-value]
        groups = rarest_label([r.labels for r in dataset.records])
        return balanced_order(groups, epoch, self.cfg.train.seed, generator, dataset_length=True)

    def compute_loss(self, model, batch, progress):
        all_masks, labels = model(batch["image"])
        masks, target = all_masks, batch["mask"]
        # images with image-level labels only (data.image_labels) have unknown masks: no mask loss from them
        pixel = batch["pixel_labelled"].to(masks.device) > 0.5
        if not bool(pixel.all()):
            masks, target = masks[pixel], target[pixel]
        if len(masks):
            seg_bce = F.binary_cross_entropy_with_logits(masks, target)
            seg_dice = self.dice_loss(masks, target)
        else:  # image-labelled images only: zero, through the decoder still (DDP expects a gradient for each weight)
            seg_bce = seg_dice = all_masks.sum() * 0.0
        loss = self.cfg.loss.bce * seg_bce + self.cfg.loss.dice * seg_dice
        logs = {"bce": seg_bce.item(), "dice_loss": seg_dice.item()}
        if self.cfg.model.classifier and self.cfg.loss.classifier > 0:
            present = batch["present"].to(labels.device)  # SeverstalDataset: from the full-resolution labels
            cls = F.binary_cross_entropy_with_logits(labels, present)
            loss = loss + self.cfg.loss.classifier * cls
            logs["cls_bce"] = cls.item()
        return loss, logs

    def probabilities(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [B,4,h,w], image-level [B,4]) probabilities at the network's resolution, under ``self.tta``."""
        def probs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            masks, labels = model(x)
            return torch.sigmoid(masks.float()), torch.sigmoid(labels.float())

        return tta_average(probs, images.to(model_device(model)), self.tta)

    def post_inputs(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask logits, image-level probabilities) for :func:`postprocess`: the model's logits, or with TTA
        the logit of the mean probability (``logit(sigmoid(x))`` would lose the precision near 0.5)."""
        if self.tta == "none":
            masks, labels = model(images.to(model_device(model)))
            return masks.float(), torch.sigmoid(labels.float())
        masks, labels = self.probabilities(model, images)
        return torch.logit(masks, eps=1e-7), labels

    def _scored_batches(self, model: nn.Module, loader: DataLoader):
        """(mask logits, image-level probabilities, truth at the original resolution) per batch."""
        for batch in loader:
            masks, labels = self.post_inputs(model, batch["image"])
            full = batch["full_mask"].to(masks.device)
            yield masks, labels, full

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        post = self.cfg.post
        meter, raw = KaggleDiceMeter(), KaggleDiceMeter()
        for masks, labels, full in self._scored_batches(model, loader):
            size = tuple(full.shape[-2:])
            meter.update(postprocess(masks, labels, size, post.threshold, post.min_area, post.cls_threshold), full)
            raw.update(postprocess(masks, labels, size, (0.5,) * NUM_CLASSES, (0,) * NUM_CLASSES, 0.0), full)
        per_class = meter.per_class()
        return {"dice": meter.value(), "dice_raw": raw.value(),
                **{f"dice_c{c + 1}": v for c, v in enumerate(per_class)}, "images": float(len(loader.dataset))}

    @torch.no_grad()
    def write_report(self, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
        """The images of lowest Kaggle Dice (input | truth | prediction) and the image-level PR curve of
        "has a defect" scored by the classifier branch."""
        post = self.cfg.post
        errors, scores, labels = [], [], []
        for masks, probs, full in self._scored_batches(model, loader):  # as evaluate scores them (TTA included)
            pred = postprocess(masks, probs, tuple(full.shape[-2:]), post.threshold, post.min_area, post.cls_threshold)
            errors.append(1 - kaggle_dice_pairs(pred, full).mean(1).cpu())
            scores.append(probs.amax(1).cpu())
            labels.append(full.flatten(1).any(1).cpu())
        error = torch.cat(errors).numpy()
        picks = worst(error, self.report_items)
        batch = collate_items(loader, picks)
        masks, probs = self.post_inputs(model, batch["image"])
        pred = postprocess(masks, probs, tuple(batch["image"].shape[-2:]), post.threshold, post.min_area,
                           post.cls_threshold).cpu().numpy()
        images = [to_rgb(x) for x in batch["image"]]
        rows = [[image, overlay_masks(image, truth.numpy() > 0.5, CLASS_COLORS, CLASS_NAMES),
                 overlay_masks(image, p, CLASS_COLORS, CLASS_NAMES)] for image, truth, p in zip(images, batch["mask"], pred)]
        titles = [f"{batch['image_id'][j]}  dice {1 - error[i]:.3f}" for j, i in enumerate(picks)]
        return [save_grid(rows, titles, out / "worst_images.png", ("input", "truth", "prediction"),
                          "lowest Kaggle Dice first"),
                save_pr_curve(torch.cat(labels).numpy(), torch.cat(scores).numpy(), out / "pr_curve.png",
                              "image has a defect (classifier branch)")]

    @torch.no_grad()
    def tune(self, model: nn.Module, loader: DataLoader) -> dict[str, Any]:
        """Per-class threshold, minimum area and classifier gate maximising Kaggle Dice on ``loader``
        (:mod:`.severstal_parts.post`); the current values are candidates, so the result never scores lower."""
        post = self.cfg.post
        stats = PostStats(THRESHOLDS + tuple(post.threshold))
        for masks, labels, full in self._scored_batches(model, loader):
            stats.update(upsample(masks, tuple(full.shape[-2:])), full.bool(), labels)
        found = search(stats, {"threshold": post.threshold, "min_area": post.min_area,
                               "cls_threshold": post.cls_threshold})
        mean = {key: float(np.mean(found[key])) for key in ("dice", "dice_current", "dice_empty")}  # over classes
        return {"config": {"post": {"threshold": found["threshold"], "min_area": found["min_area"],
                                    "cls_threshold": found["cls_threshold"], "tta": self.tta}},
                "validation": {"images": len(loader.dataset), "dice_tuned": mean["dice"],
                               "dice_before": mean["dice_current"], "dice_empty": mean["dice_empty"],
                               "per_class_tuned": found["dice"], "per_class_before": found["dice_current"],
                               "per_class_empty": found["dice_empty"]}}

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, 3, *self.cfg.data.image_size)

    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--overlays", type=int, default=50, metavar="N",
                            help="write overlay PNGs for the first N images (default 50; 0 = none)")

    predict_columns = ("file", "class_id", "encoded_pixels", "area")

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        return ImageFiles.from_inputs(inputs, self.cfg.data.image_size,
                                     allow_outside=getattr(args, "allow_outside_root", False))

    def predict_batch(self, model: nn.Module, batch: dict, out: Path, args: argparse.Namespace) -> list[dict]:
        """Four rows per image (one per class) with the RLE at the image's own resolution; overlays for
        the first ``--overlays`` inputs."""
        masks, labels = self.post_inputs(model, batch["image"])
        post, rows = self.cfg.post, []
        for j, key in enumerate(batch["file"]):
            size = (int(batch["height"][j]), int(batch["width"][j]))
            pred = postprocess(masks[j : j + 1], labels[j : j + 1], size, post.threshold, post.min_area,
                               post.cls_threshold)[0].cpu().numpy()
            rows += [{"file": key, "class_id": c + 1, "encoded_pixels": rle_encode(pred[c]),
                      "area": int(pred[c].sum())} for c in range(NUM_CLASSES)]
            if int(batch["index"][j]) < getattr(args, "overlays", 50):
                image = read_image(batch["path"][j])
                write_png(out / "overlays" / f"{Path(key).stem}.png", overlay_masks(image, pred, CLASS_COLORS, CLASS_NAMES))
        return rows

    def finish_predictions(self, predictions: Path, out: Path, args: argparse.Namespace) -> Path:
        """Kaggle ``submission.csv``: ImageId,EncodedPixels,ClassId with every image x 4 classes."""
        target = out / "submission.csv"
        with open(predictions, newline="", encoding="utf-8") as src, atomic_write(target, "w") as dst:
            dst.write("ImageId,EncodedPixels,ClassId\n")
            dst.writelines(f"{Path(r['file']).name},{r['encoded_pixels']},{r['class_id']}\n" for r in csv.DictReader(src))
        return target


CLASS_NAMES = ("class 1", "class 2", "class 3", "class 4")
CLASS_COLORS = np.array([[255, 200, 0], [0, 120, 255], [255, 0, 0], [0, 230, 0]], dtype=np.uint8)  # RGB
