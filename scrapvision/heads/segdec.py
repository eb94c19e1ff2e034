"""``segdec``: segmentation-decision surface-defect detector (Tabernik 2019, Bozic 2021, Bi et al.).

Loss per image: ``L = w_seg * gamma * L_seg + (1 - w_seg) * delta * L_dec`` where ``gamma`` is 1 when the
image's pixel label may be used (every defect-free image; defective ones per the supervision mode),
``L_seg`` is the pixel BCE or MSE at the output stride (optionally weighted by the distance-transform map,
``loss.weighted``), ``L_dec`` is BCE on the decision logit; both are averaged over the batch.
``w_seg`` follows ``loss.schedule``, with ``n`` = epochs elapsed (fractional, from the Trainer's progress)
and ``n_ep`` = ``train.epochs``:

* ``constant``: ``w_seg = loss.seg_weight``.
* ``dynamic`` (Bozic et al.): ``w_seg = 1 - n / n_ep``.
* ``decay`` (our reading of Bi et al.'s ``theta_t <- (1 - beta) * theta_{t-1} - alpha * g_t``): the balance
  ``theta = w_seg`` starts at 1 and is multiplied by ``(1 - beta)`` every epoch, ``w_seg = (1 - beta) ** n``
  (``loss.decay_beta``). ``w_seg`` is a schedule, not a learned parameter, so its gradient term ``alpha * g_t``
  is zero; the same rule applied to the network weights is decoupled weight decay, which the shared AdamW
  already does (``optim.weight_decay``). Unlike ``dynamic`` it never reaches 0: late epochs keep a little
  pixel supervision.

Supervision (``data.supervision``): ``full`` keeps every mask, ``weak`` none, ``mixed`` uses ``n_positives``
defective training images (0 = all) of which ``n_labelled`` keep their masks (chosen by ``data.split_seed``).
Stop-gradient (``model.stop_gradient``, Bozic et al.'s gradient-flow adjustment) detaches the decision head's
inputs in ``full`` supervision only. With weak or mixed supervision the decision loss is the only signal the
unlabelled positives give, so it must reach the encoder, for every image alike: the earlier per-image rule
(detach the pixel-labelled images, i.e. every negative) let only positives push the encoder, and weak training
on KolektorSDD then ranked test images worse than chance (``benchmarks/results/segdec.md``, method notes).

Data: ``data.root`` empty = synthetic cracked parts; else KolektorSDD (``kosNN/PartK``, 3-fold split by
item) or, with ``data.dataset=severstal``, Severstal images as defect / no defect (union of the 4 classes).
Fold ``data.fold`` is the test fold; validation (``data.val_fraction`` of the other folds' items, never an item
of the test fold) picks ``best.pt`` and the decision threshold, and ``eval`` scores the test fold at that threshold.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..backbones import create_backbone, load_backbone_weights
from ..catalog import TASK_SUMMARIES
from ..data.folder import (
    FolderItem,
    is_folder_layout,
    is_mvtec_layout,
    read_folder_mask,
    read_layout,
    split_items,
)
from ..data.images import sample_rng
from ..data.inference import input_files, input_keys
from ..data.kolektor import item_group, list_kolektor
from ..data.sampling import balanced_order
from ..data.severstal import SeverstalRecord, load_records
from ..data.splits import fold_split, refuse_all_test
from ..data.synthetic.surface_defects import generate_parts
from ..distributed import init_distributed
from ..errors import ConfigError, DataError
from ..models.segdec import BackboneEncoder, SegDecNet, SegEncoder
from ..registry import TASKS
from ..task import Task, model_device
from ..tta import tta_average
from .segdec_parts.config import (  # noqa: F401  (every section stays importable from the head's module)
    SegDecConfig,
    SegDecDataConfig,
    SegDecLossConfig,
    SegDecModelConfig,
    SegDecOptimConfig,
)
from .segdec_parts.data import GrayFiles, Sample, SegDecDataset, auto_pos_weight
from .segdec_parts.loss import decision_at_chance, seg_weight, segdec_loss  # noqa: F401  (importable from the head)
from .segdec_parts.metrics import decision_metrics, overlay, pixel_ap, write_labelled_report


def _severstal_sample(record: SeverstalRecord) -> Sample:
    """A Severstal image as binary defect / no defect: the union of its four class masks, decoded lazily."""
    return Sample(record.image_id, lambda: cv2.cvtColor(record.load_image(), cv2.COLOR_RGB2GRAY),
                  lambda: record.masks().any(axis=0), any(record.labels), True, record.image_id)


def _folder_sample(item: FolderItem) -> Sample:
    """An image of the generic folder layout or MVTec AD as defect / no defect (any class > 0 is defect)."""
    mask = (lambda: read_folder_mask(item.mask) > 0) if item.mask is not None else None
    return Sample(item.name, item.image, mask, item.label > 0, item.pixel_labelled, item.group)


def _choose_supervision(samples: list[Sample], cfg: SegDecDataConfig) -> list[Sample]:
    """Apply the supervision mode to training samples: drop / unlabel positives as the mode says."""
    if cfg.supervision == "full":
        return samples
    if cfg.supervision == "weak":
        return [replace(s, labelled=not s.defective) for s in samples]
    pos = [i for i, s in enumerate(samples) if s.defective]
    order = sample_rng(cfg.split_seed, 4242).permutation(len(pos))
    n_all = cfg.n_positives or len(pos)
    if n_all > len(pos) or cfg.n_labelled > n_all:
        raise ConfigError(f"data.n_positives={cfg.n_positives}, data.n_labelled={cfg.n_labelled}: the training "
                          f"split has {len(pos)} defective images (need n_labelled <= n_positives <= that)")
    used = {pos[k] for k in order[:n_all]}
    labelled = {pos[k] for k in order[: cfg.n_labelled]}
    return [replace(s, labelled=i in labelled) if s.defective else s
            for i, s in enumerate(samples) if not s.defective or i in used]


@TASKS.register("segdec")
class SegDecTask(Task):
    name = "segdec"
    Config = SegDecConfig
    monitor = ("val_ap", "max")
    supports_tta = True
    eval_all_overrides = ("data.fold=-1",)
    summary = TASK_SUMMARIES["segdec"]
    smoke_overrides = ("model.widths=[4,4,8,8,8,8,8,8,8,16]", "data.height=72", "data.width=72",
                       "data.synthetic_items=6", "data.synthetic_parts=4", "data.synthetic_defect_rate=0.5",
                       "data.val_fraction=0.5", "train.batch_size=4")

    def __init__(self, cfg: SegDecConfig) -> None:
        super().__init__(cfg)
        # the data section's own checks live in SegDecDataConfig.__post_init__ (`scrapvision config` runs them)
        self.threshold = 0.5  # the decision threshold of a loaded checkpoint (load_extras); 0.5 before training
        self.warned_chance = False  # epoch_end's warning is given once per run
        self.pos_weight = cfg.loss.pos_weight if cfg.loss.pos_weight > 0 else 1.0  # auto: set by build_datasets

    # ------------------------------------------------------------------ model
    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        if model_cfg.backbone == "segdec":
            encoder: nn.Module = SegEncoder(model_cfg.in_chans, model_cfg.widths, model_cfg.atrous, model_cfg.attention, model_cfg.norm)
            if model_cfg.weights:  # e.g. the encoder of an earlier segdec run; every layer must be in the file
                load_backbone_weights(encoder, model_cfg.weights)
        else:
            probe = create_backbone(model_cfg.backbone, in_chans=model_cfg.in_chans)
            strides = list(probe.feature_info.reduction())
            if 8 not in strides:
                raise ConfigError(f"config key 'model.backbone': {model_cfg.backbone!r} has no stride-8 feature map "
                                  f"(strides {strides})")
            encoder = BackboneEncoder(create_backbone(model_cfg.backbone, weights=model_cfg.weights or None,
                                                      out_indices=(strides.index(8),), in_chans=model_cfg.in_chans))
        detach = model_cfg.stop_gradient and self.cfg.data.supervision == "full"
        return SegDecNet(encoder, model_cfg.decision_widths, model_cfg.atrous, model_cfg.norm, stop_gradient=detach)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """The decision head at ``optim.decision_lr_scale`` times the lr (one group when the scale is 1, as
        before, so older runs resume), its weight decay divided by the same factor."""
        optim = self.cfg.optim
        if optim.decision_lr_scale == 1 or not isinstance(model, SegDecNet):
            return super().param_groups(model)
        head = list(model.decision.parameters())
        rest = [p for p in model.parameters() if all(p is not h for h in head)]
        return [{"params": rest}, {"params": head, "lr": optim.lr * optim.decision_lr_scale,
                                   "weight_decay": optim.weight_decay / optim.decision_lr_scale}]

    def channels(self, x: torch.Tensor) -> torch.Tensor:
        """Grayscale batches (Bx1xHxW) repeated to ``model.in_chans`` (3 for most timm backbones)."""
        return x if x.shape[1] == self.cfg.model.in_chans else x.expand(-1, self.cfg.model.in_chans, -1, -1)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        data_cfg = self.cfg.data
        return torch.zeros(batch_size, self.cfg.model.in_chans, data_cfg.height, data_cfg.width)

    # ------------------------------------------------------------------ data
    def all_samples(self) -> list[Sample]:
        """Every image of the data set with its fold-independent label (masks all usable)."""
        data_cfg = self.cfg.data
        if not data_cfg.root:
            parts = generate_parts(data_cfg.synthetic_items, data_cfg.synthetic_parts, data_cfg.synthetic_defect_rate, data_cfg.height,
                                   data_cfg.width, seed=self.cfg.train.seed)
            return [Sample(f"{p.item}/{p.part}", p.image, p.mask, p.defective, True, p.item) for p in parts]
        if data_cfg.dataset == "severstal":
            return [_severstal_sample(r) for r in load_records(data_cfg.root)]
        if self._uses_layout():
            return [_folder_sample(it) for it in read_layout(data_cfg.root).items]
        items = list_kolektor(data_cfg.root)
        return [Sample(f"{i.item}/{i.part}", i.image, i.mask, i.defective, True, i.item) for i in items]

    def _uses_layout(self) -> bool:
        data_cfg = self.cfg.data
        return bool(data_cfg.root) and (data_cfg.dataset in ("folder", "mvtec") or is_folder_layout(data_cfg.root) or is_mvtec_layout(data_cfg.root))

    def split(self) -> tuple[list[Sample], list[Sample], list[Sample]]:
        """(train, val, test) samples, grouped by item: fold ``data.fold`` is the test fold, and about
        ``data.val_fraction`` of the other folds' items (one of ``round(1 / val_fraction)`` stratified group
        folds) validate, so the test fold never picks a checkpoint or a threshold. A folder layout whose
        labels.csv has a ``split`` column uses it instead of folds."""
        data_cfg = self.cfg.data
        if self._uses_layout():
            items = read_layout(data_cfg.root).items
            parts = split_items(items, data_cfg.val_fraction, data_cfg.split_seed, data_cfg.n_folds, data_cfg.fold)
            train, val, test = ([_folder_sample(it) for it in part] for part in parts)
            return _choose_supervision(train, data_cfg), val, test
        samples = self.all_samples()
        train_ids, val_ids, test_ids = fold_split([s.defective for s in samples], [item_group(s.group) for s in samples],
                                                  data_cfg.n_folds, data_cfg.fold, data_cfg.val_fraction, data_cfg.split_seed)
        train, val, test = ([samples[i] for i in ids] for ids in (train_ids, val_ids, test_ids))
        return _choose_supervision(train, data_cfg), val, test

    def _dataset(self, samples: list[Sample], train: bool) -> SegDecDataset:
        data_cfg, loss_cfg = self.cfg.data, self.cfg.loss
        return SegDecDataset(samples, data_cfg.height, data_cfg.width, 8, loss_cfg.dilate if train else 1, loss_cfg.weighted and train,
                             loss_cfg.weight_p, loss_cfg.weight_max, flip=data_cfg.flip and train, seed=self.cfg.train.seed,
                             resize=data_cfg.resize, photometric=data_cfg.photometric and train,
                             rotate90=data_cfg.rotate90 and train, crop=data_cfg.crop if train else 0)

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        refuse_all_test(self.cfg.data.fold)
        train, val, _ = self.split()
        train_set = self._dataset(train, True)
        if self.cfg.loss.pos_weight <= 0:
            self.pos_weight = auto_pos_weight(train_set)
            print(f"segdec: defect pixels weighted x{self.pos_weight:.1f} in the segmentation loss (loss.pos_weight=0: "
                  "clean / defect pixel ratio of the defective training images)", file=sys.stderr)
        return train_set, self._dataset(val, False)

    def build_eval_dataset(self) -> Dataset:
        """The test fold ``data.fold`` (validation only chooses; ``eval`` reports this fold)."""
        return self._dataset(self.split()[2], False)

    def epoch_indices(self, dataset: Dataset, epoch: int, generator: torch.Generator) -> list[int]:
        if not self.cfg.loss.balanced_sampling or not isinstance(dataset, SegDecDataset):
            return super().epoch_indices(dataset, epoch, generator)  # type: ignore[return-value]
        return balanced_order(dataset.labels, epoch, self.cfg.train.seed, generator, anchor=1)

    # ------------------------------------------------------------------ training
    def compute_loss(self, model: nn.Module, batch: Any, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        loss_cfg = self.cfg.loss
        decision, seg = model(self.channels(batch["image"]))
        w = seg_weight(loss_cfg.schedule, progress, self.cfg.train.epochs, loss_cfg.seg_weight, loss_cfg.decay_beta)
        loss, l_seg, l_dec = segdec_loss(decision, seg, batch, w, loss_cfg.delta, loss_cfg.seg_loss, self.pos_weight,
                                         loss_cfg.dice)
        return loss, {"loss_seg": float(l_seg.detach()), "loss_dec": float(l_dec.detach()), "w_seg": w}

    def epoch_end(self, record: Mapping[str, Any]) -> list[str]:
        """The decision-at-chance warning (:func:`decision_at_chance`), once per run."""
        if self.warned_chance or not self.cfg.loss.balanced_sampling:
            return []  # without balanced batches chance is the prior's entropy, not ln 2
        message = decision_at_chance(record)
        self.warned_chance = message is not None
        return [message] if message else []

    def probabilities(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decision [B], segmentation [B,1,h,w]) probabilities under ``self.tta`` (flips of the gray image)."""
        def probs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            decision, seg = model(self.channels(x))
            return torch.sigmoid(decision.float()), torch.sigmoid(seg.float())

        return tta_average(probs, images.to(model_device(model)), self.tta)

    @torch.no_grad()
    def score(self, model: nn.Module, loader: DataLoader) -> dict[str, np.ndarray]:
        """Decision probabilities, labels, segmentation probabilities and targets of a whole loader."""
        model.eval()
        out: dict[str, list] = {"score": [], "label": [], "seg": [], "target": []}
        for batch in loader:
            decision, seg = self.probabilities(model, batch["image"])
            out["score"].append(decision.cpu())
            out["seg"].append(seg.cpu())
            out["label"].append(batch["label"])
            out["target"].append(batch["target"])
        return {k: torch.cat(v).numpy() for k, v in out.items()}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """AP, AUROC, pixel AP; F1 / FP / FN at the task's threshold (a checkpoint's, 0.5 before one was
        chosen); ``best_threshold`` / ``best_f1``, the best-F point of these scores, which training keeps as
        the checkpoint's threshold when the loader is the validation split (:meth:`validation_extras`)."""
        r = self.score(model, loader)
        metrics = decision_metrics(r["label"] > 0.5, r["score"], threshold=self.threshold)
        metrics["pixel_ap"] = pixel_ap(r["target"], r["seg"])
        return metrics

    def write_report(self, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
        from .segdec_parts.report import write_segdec_report

        return write_segdec_report(self, model, loader, out)

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold)}

    def validation_extras(self, metrics: Mapping[str, float]) -> dict[str, Any]:
        """The decision threshold: the best-F threshold of this epoch's validation scores."""
        value = metrics.get("val_best_threshold")
        return {"threshold": float(value)} if value is not None and math.isfinite(value) else {}

    def tune(self, model: nn.Module, loader: DataLoader) -> dict[str, Any]:
        """The decision threshold: the best-F point of the validation scores at ``self.tta`` (training keeps
        the one without TTA; this one goes with the flips eval and predict will then run)."""
        metrics = self.evaluate(model, loader)
        if not math.isfinite(metrics["best_f1"]):
            raise DataError(f"tune: the validation split ({len(loader.dataset)} images) holds one class only; "
                            "a decision threshold cannot be chosen on it")
        return {"extras": {"threshold": float(metrics["best_threshold"])},
                "validation": {"images": len(loader.dataset), "f1_before": float(metrics["f1"]),
                               "f1_tuned": float(metrics["best_f1"]), "ap": float(metrics["ap"])}}

    def load_extras(self, extras: dict[str, Any]) -> None:
        self.threshold = float(extras.get("threshold", self.threshold))

    # ------------------------------------------------------------------ predict
    predict_key = "image"
    predict_columns = ("image", "score", "decision")

    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--threshold", type=float, default=None,
                            help="decision threshold (default: the checkpoint's, the best-F threshold of its validation split)")
        parser.add_argument("--no-overlays", action="store_true", help="write only the scores CSV")

    @staticmethod
    def predict_files(inputs: Path, args: argparse.Namespace) -> dict[str, Path]:
        """``{key: file}`` of every image under ``inputs`` except ``*_label.*`` masks."""
        files = [f for f in input_files(inputs, getattr(args, "allow_outside_root", False)) if not f.stem.endswith("_label")]
        if not files:
            raise DataError(f"predict input {inputs}: holds no images besides masks")
        return dict(zip(input_keys(inputs, files), files))

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        """Every image of :meth:`predict_files`, gray, resized to the working resolution."""
        files = self.predict_files(inputs, args)
        return GrayFiles(list(files.values()), list(files), self.cfg.data.height, self.cfg.data.width, self.cfg.data.resize)

    def _threshold(self, args: argparse.Namespace) -> float:
        value = getattr(args, "threshold", None)
        return self.threshold if value is None else float(value)

    def predict_batch(self, model: nn.Module, batch: dict, out: Path, args: argparse.Namespace) -> list[dict]:
        """One row per image (decision score, 0/1 decision) and an overlay PNG of its segmentation map."""
        decision, seg = self.probabilities(model, batch["image"])
        scores, probs = decision.cpu().numpy(), seg[:, 0].cpu().numpy()
        threshold, rows = self._threshold(args), []
        for j, key in enumerate(batch["image_key"]):
            rows.append({"image": key, "score": f"{scores[j]:.6f}", "decision": int(scores[j] >= threshold)})
            if not getattr(args, "no_overlays", False):
                gray = (batch["image"][j, 0].numpy() * 255).round().astype(np.uint8)
                target = out / "overlays" / (key.replace("/", "__").rsplit(".", 1)[0] + ".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(target), overlay(gray, probs[j], float(scores[j]), threshold))
        return rows

    def predict(self, model: nn.Module, inputs: Path, out: Path, args: argparse.Namespace) -> Path:
        """``predictions.csv`` and overlays; then, on the main process, ``metrics.csv`` and ``pr_curve.png`` when
        every input has a ``_label`` mask beside it (:func:`write_labelled_report`)."""
        predictions = super().predict(model, inputs, out, args)
        if init_distributed(torch.device("cpu")).is_main:
            write_labelled_report(predictions, self.predict_files(inputs, args), out, self._threshold(args))
        return predictions
