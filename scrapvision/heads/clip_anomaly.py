"""``clip_anomaly``: CLIP-prompted impurity segmentation in steel scrap (Tanaka et al., 2025).

An open_clip image encoder gives patch tokens at several blocks; each goes through a trainable adapter
into the joint space, where its cosine similarity to the text embedding of every class prompt, times a
learned temperature, is the class logit ("object which is made of steel" for the normal class, "object
which is not steel but {name}" per impurity, each averaged over a template ensemble). Logits are summed
over scales and upsampled. Modes:

* ``supervised``: focal + Dice on class-index masks; the image encoder is fine-tuned (``full``, the last
  k blocks, or ``frozen``, the setting the paper shows failing on niche objects);
* ``few_shot``: training-free; prompt scores mixed with memory-bank patch matching against k reference
  images of the training split (WinCLIP+/APRIL-GAN style); normal or labelled references;
* ``zero_shot``: training-free prompt matching on the last block's tokens (the only ones CLIP's projection
  aligns with text). Only meaningful with pretrained CLIP weights given as a local file
  (``model.weights``); none ship with scrapvision and nothing is downloaded.

Defaults are the CPU recipe: a 0.5 M-parameter ViT (``scrap-vit-tiny``, 128 px, patch 8) trained from
scratch on the built-in synthetic scrap scenes. ``tasks/clip_anomaly-paper.yaml`` is the paper scale.
Images larger than the ViT input (``data.resolution`` above ``model.image_size``) are tiled: training on
crops, inference by overlapping tiles stitched back at the working size (:mod:`.clip_anomaly_parts.tiles`);
the KolektorSDD recipe (``tasks/clip_anomaly-kolektor.yaml``, run by ``benchmarks/clip_anomaly_kolektor.py``)
is 128x104 tiles of the image at 512x208, dilated training masks, and best.pt by validation pixel AP.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..backbones import load_backbone_weights
from ..backbones.clip import ClipPatchTokens, build_clip, clip_tokenizer, even_blocks, is_image_tower_file
from ..catalog import TASK_SUMMARIES
from ..checkpoint import atomic_write
from ..data.class_masks import read_class_list
from ..data.folder import is_folder_layout, is_mvtec_layout
from ..data.images import read_image
from ..data.sampling import balanced_order
from ..data.splits import ALL_TEST, refuse_all_test
from ..data.synthetic.scrap_anomaly import SCRAP_CLASSES
from ..errors import ConfigError, ScrapvisionError
from ..models.clip_anomaly import ClipAnomalySegmenter, FocalDiceLoss, encode_prompts, set_trainable
from ..registry import TASKS
from ..task import Task, model_device
from ..tta import tta_average
from .clip_anomaly_parts.config import (
    ClipAnomalyConfig,
)
from .clip_anomaly_parts.data import (
    KOLEKTOR_CLASSES,
    ClipImageFiles,
    SegDataset,
    class_mask_sets,
    folder_sets,
    kolektor_sets,
    reference_batch,
    synthetic_sets,
)
from .clip_anomaly_parts.metrics import SegAnomalyMeter
from .clip_anomaly_parts.overlay import save_overlay
from .clip_anomaly_parts.post import ThresholdStats, class_map
from .clip_anomaly_parts.tiles import crop_tiles, tiled_probabilities


@TASKS.register("clip_anomaly")
class ClipAnomalyTask(Task):
    name = "clip_anomaly"
    Config = ClipAnomalyConfig
    monitor = ("miou", "max")
    supports_tta = True
    eval_all_overrides = ("data.fold=-1",)  # kolektor, folder and MVTec layouts (class_masks: its validation split)
    summary = TASK_SUMMARIES["clip_anomaly"]
    smoke_overrides = ("model.image_size=[32,32]", "data.n_train=8", "data.n_val=4", "few_shot.k=2",
                       "train.batch_size=4")

    def __init__(self, cfg: ClipAnomalyConfig) -> None:
        super().__init__(cfg)
        self.monitor = (cfg.monitor, "max")
        # the data and few_shot sections check themselves (their __post_init__): `scrapvision config` runs them
        self._sets: tuple[SegDataset, SegDataset, tuple[str, ...]] | None = None
        self._test: SegDataset | None = None
        self._class_names: tuple[str, ...] | None = None
        self.loss_fn = FocalDiceLoss(cfg.loss.focal_gamma, cfg.loss.focal_weight, cfg.loss.dice_weight)

    # ----------------------------------------------------------------- classes, prompts, data
    def class_names(self) -> tuple[str, ...]:
        """Class 0 = normal material. From the config, a checkpoint, or the data."""
        if self.cfg.model.class_names:
            return tuple(self.cfg.model.class_names)
        if self._class_names is None:
            data = self.cfg.data
            if not data.root:
                self._class_names = SCRAP_CLASSES
            elif self.data_format() == "kolektor":
                self._class_names = KOLEKTOR_CLASSES
            elif self.data_format() in ("folder", "mvtec"):
                self._class_names = self._datasets()[2]
            else:
                self._class_names = read_class_list(data.root)
        return self._class_names

    def prompts(self) -> list[list[str]]:
        prompt_cfg = self.cfg.prompts
        templates = prompt_cfg.templates
        if not templates or any("{}" not in t for t in templates) or "{}" not in prompt_cfg.anomaly:
            raise ConfigError("config key 'prompts': every template and 'anomaly' need a {} placeholder")
        names = self.class_names()
        texts = [prompt_cfg.normal] + [prompt_cfg.anomaly.format(n) for n in names[1:]]
        return [[t.format(text) for t in prompt_cfg.templates] for text in texts]

    def working_size(self) -> tuple[int, int]:
        """(H, W) of the images the head scores and predicts: ``data.resolution``, else the model input."""
        tile, size = tuple(self.cfg.model.image_size), tuple(self.cfg.data.resolution or self.cfg.model.image_size)
        if len(size) != 2 or size[0] < tile[0] or size[1] < tile[1]:
            raise ConfigError(f"config key 'data.resolution': {list(size)} must be [H, W], at least "
                              f"model.image_size {list(tile)}")
        if not 0 <= self.cfg.data.tile_overlap < 1:
            raise ConfigError(f"config key 'data.tile_overlap': {self.cfg.data.tile_overlap} is not in [0, 1)")
        return size

    def _datasets(self) -> tuple[SegDataset, SegDataset, tuple[str, ...]]:
        if self._sets is None:
            data_cfg, size, seed = self.cfg.data, self.working_size(), self.cfg.train.seed
            if not data_cfg.root:
                self._sets = synthetic_sets(size, data_cfg.n_train, data_cfg.n_val, data_cfg.synthetic_seed,
                                            data_cfg.clean_fraction, seed)
            elif self.data_format() == "kolektor":
                train, val, self._test, names = kolektor_sets(data_cfg.root, size, data_cfg.fold, data_cfg.n_folds,
                                                              data_cfg.val_fraction, data_cfg.split_seed, seed)
                self._sets = (train, val, names)
            elif self.data_format() in ("folder", "mvtec"):
                train, val, self._test, names = folder_sets(data_cfg.root, size, data_cfg.fold, data_cfg.n_folds,
                                                            data_cfg.val_fraction, data_cfg.split_seed, seed,
                                                            self.layout_classes())
                self._sets = (train, val, names)
            else:
                self._sets = class_mask_sets(data_cfg.root, size, data_cfg.val_fraction, data_cfg.split_seed, seed)
            self._sets[0].crop = None if size == tuple(self.cfg.model.image_size) else tuple(self.cfg.model.image_size)
            self._sets[0].dilate = data_cfg.dilate
            if len(self._sets[2]) != len(self.class_names()):
                raise ConfigError(f"config key 'model.class_names': {len(self.class_names())} names, the data "
                                  f"has {len(self._sets[2])} classes ({', '.join(self._sets[2])})")
        return self._sets

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        refuse_all_test(self.cfg.data.fold)
        train, val, _ = self._datasets()
        return train, val

    def build_eval_dataset(self) -> Dataset:
        """The held-out fold of KolektorSDD and the folder / MVTec layouts (never used to choose a checkpoint);
        the validation split of the other formats."""
        train, val, _ = self._datasets()
        return self._test if self._test is not None and len(self._test) else val

    def data_format(self) -> str:
        """``data.format``, except that the default ``class_masks`` gives way to MVTec AD when ``root`` holds
        train/good/, and to the generic folder layout when it holds images/ but no classes.txt."""
        data_cfg = self.cfg.data
        root = Path(data_cfg.root) if data_cfg.root else None
        if data_cfg.format == "class_masks" and root is not None:
            if is_mvtec_layout(root):
                return "mvtec"
            if is_folder_layout(root) and not (root / "classes.txt").is_file():
                return "folder"
        return data_cfg.format

    def layout_classes(self) -> int | None:
        names = self.cfg.model.class_names
        return len(names) if names else None

    def epoch_indices(self, dataset: Dataset, epoch: int, generator: torch.Generator) -> Sequence[int]:
        if self.cfg.data.sampling == "balanced" and isinstance(dataset, SegDataset):
            return balanced_order(dataset.anomalous(), epoch, self.cfg.train.seed, generator, dataset_length=True)
        return super().epoch_indices(dataset, epoch, generator)

    # ----------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        tower = model_cfg.weights if is_image_tower_file(model_cfg.weights) else ""  # e.g. a pretrain run's image tower
        clip = build_clip(model_cfg.clip_name, "" if tower else model_cfg.weights, model_cfg.image_size,
                          model_cfg.patch_size)
        tokenizer = clip_tokenizer(model_cfg.clip_name, clip, model_cfg.weights)
        text = encode_prompts(clip, tokenizer, self.prompts())
        ln_post, proj = clip.visual.ln_post, clip.visual.proj
        n_layers = len(clip.visual.transformer.resblocks)
        # untrained adapters = CLIP's own projection, which only the last block's tokens are aligned with
        default = (n_layers - 1,) if model_cfg.mode == "zero_shot" else even_blocks(n_layers, model_cfg.n_scales)
        encoder = ClipPatchTokens(clip.visual, model_cfg.blocks or default)
        if tower:
            load_backbone_weights(encoder, tower)
        model = ClipAnomalySegmenter(encoder, text, int(text.shape[1]), 1.0 / model_cfg.temperature, model_cfg.mode,
                                     self.cfg.few_shot.memory_weight, self.cfg.few_shot.max_patches)
        for adapter in model.adapters:
            adapter.init_from_clip(ln_post, proj)
        set_trainable(model, model_cfg.finetune, model_cfg.last_k)
        return model

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.zeros(batch_size, 3, *self.cfg.model.image_size)

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names())}

    def load_extras(self, extras: dict[str, Any]) -> None:
        if extras.get("class_names") and not self.cfg.model.class_names:
            self._class_names = tuple(extras["class_names"])

    def torch_only(self) -> str:
        return "model.mode=few_shot keeps its memory bank outside the exported graph" if self.cfg.model.mode == "few_shot" else ""

    # ----------------------------------------------------------------- training and evaluation
    def compute_loss(self, model: nn.Module, batch: Any, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        if self.cfg.model.mode != "supervised":
            raise ConfigError(f"config key 'model.mode': {self.cfg.model.mode} is training-free; evaluate or "
                              "predict with it, or train with model.mode=supervised")
        loss, logs = self.loss_fn(model(batch["image"]), batch["mask"])
        return loss, logs

    def prepare_memory(self, model: nn.Module) -> None:
        """Few-shot: fill the memory bank from the reference images (a no-op in the other modes)."""
        if self.cfg.model.mode != "few_shot":
            return
        if not isinstance(model, ClipAnomalySegmenter):
            raise ScrapvisionError(f"{self.torch_only()}: it needs --engine torch")
        few_shot_cfg = self.cfg.few_shot
        if self.cfg.data.root and self.cfg.data.fold == ALL_TEST:
            raise ConfigError("model.mode=few_shot takes its references from the training part of data.root, and "
                              "data.fold=-1 leaves none; score one held-out fold (eval --split held-out)")
        images, masks = reference_batch(self._datasets()[0], few_shot_cfg.k, few_shot_cfg.references == "normal")
        if tuple(images.shape[-2:]) != tuple(self.cfg.model.image_size):  # tiled: the bank holds every tile
            tile = self.cfg.model.image_size  # edge to edge: overlapping tiles would only repeat patches
            images, masks = crop_tiles(images, tile, 0.0), crop_tiles(masks, tile, 0.0)
        device = model_device(model)
        model.eval()
        model.set_memory(images.to(device), masks.to(device))

    def probabilities(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, K, H, W] under ``self.tta`` (flips averaged in probability space), by
        overlapping tiles when the images are larger than the model input (:mod:`.clip_anomaly_parts.tiles`)."""
        tile, overlap = self.cfg.model.image_size, self.cfg.data.tile_overlap

        def predict(x: torch.Tensor) -> torch.Tensor:
            return tiled_probabilities(lambda t: model(t).float().softmax(1), x, tile, overlap)

        return tta_average(predict, images.to(model_device(model)), self.tta)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        model.eval()
        self.prepare_memory(model)
        meter = SegAnomalyMeter(self.class_names())
        total, count = 0.0, 0
        for batch in loader:
            probs = self.probabilities(model, batch["image"])
            target = batch["mask"].to(probs.device)
            # the loss takes logits; log p is one (softmax(log p) = p), so it scores the averaged probabilities
            logits = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
            total += float(self.loss_fn(logits, target)[0]) * target.shape[0]
            count += target.shape[0]
            meter.update(probs.cpu().numpy(), target.cpu().numpy(), self.cfg.post.anomaly_threshold)
        metrics = meter.compute()
        metrics["loss"] = total / max(1, count)
        return metrics

    def write_report(self, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
        from .clip_anomaly_parts.report import write_clip_anomaly_report

        return write_clip_anomaly_report(self, model, loader, out)

    @torch.no_grad()
    def tune(self, model: nn.Module, loader: DataLoader) -> dict[str, Any]:
        """``post.anomaly_threshold`` of the best validation mIoU (:mod:`.clip_anomaly_parts.post`)."""
        model.eval()
        self.prepare_memory(model)
        current = self.cfg.post.anomaly_threshold
        stats = ThresholdStats(len(self.class_names()), current)
        for batch in loader:
            stats.update(self.probabilities(model, batch["image"]).cpu().numpy(), batch["mask"].numpy())
        found = stats.search(current)
        return {"config": {"post": {"anomaly_threshold": found.pop("anomaly_threshold")}},
                "validation": {"images": len(loader.dataset), **found}}

    # ----------------------------------------------------------------- prediction
    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--overlays", type=int, default=50, metavar="N",
                            help="write overlay PNGs (input | impurities + legend | anomaly map) for the first N "
                                 "images (default 50; 0 = none)")

    def predict(self, model: nn.Module, inputs: Path, out: Path, args: argparse.Namespace) -> Path:
        self.prepare_memory(model)
        return super().predict(model, inputs, out, args)

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        return ClipImageFiles.from_inputs(inputs, self.working_size(),
                                          allow_outside=getattr(args, "allow_outside_root", False))

    def predict_batch(self, model: nn.Module, batch: dict, out: Path, args: argparse.Namespace) -> list[dict]:
        """Per image: ``masks/NAME.png`` (class indices at the image's own size), an overlay for the first
        ``--overlays`` images, and a row with the image anomaly score and per-class area fractions."""
        names = self.class_names()
        probs = self.probabilities(model, batch["image"])
        rows = []
        for j, key in enumerate(batch["file"]):
            size = (int(batch["height"][j]), int(batch["width"][j]))
            p = F.interpolate(probs[j: j + 1], size=size, mode="bilinear", align_corners=False)[0].cpu().numpy()
            pred, anomaly = class_map(p[None], self.cfg.post.anomaly_threshold)[0].astype(np.uint8), 1.0 - p[0]
            name = Path(key).with_suffix(".png")
            (out / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(out / "masks" / name) as handle:
                Image.fromarray(pred).save(handle, format="PNG")
            if int(batch["index"][j]) < getattr(args, "overlays", 50):
                save_overlay(out / "overlays" / name, read_image(batch["path"][j]), pred, anomaly, names, key)
            row: dict[str, Any] = {"file": key, "anomaly_score": round(float(anomaly.max()), 6),
                                   "impurity_fraction": round(float((pred > 0).mean()), 6)}
            row.update({f"frac_{n.replace(' ', '_')}": round(float((pred == i).mean()), 6) for i, n in enumerate(names)})
            rows.append(row)
        return rows
