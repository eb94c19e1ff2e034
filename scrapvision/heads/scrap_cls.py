"""``scrap_cls``: scrap-grade classification with EfficientNet + CLFSEF, and yard-video preprocessing.

The model (``scrapvision.models.clfsef``) follows EfficientNetB5-CLFSEF: cross-layer fusion of several
EfficientNet stages (CLF), group-wise semantic enhancement (SEF), self-distillation (or distillation
from a teacher checkpoint) and a maximum-entropy regulariser. ``model.variant`` switches between the
paper's ablation rows: baseline, clf, sef, clfsef. ``prepare`` turns a yard video into crops of scrap
instances without moving objects (``scrapvision.data.video``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..catalog import TASK_SUMMARIES
from ..checkpoint import load_checkpoint
from ..config import from_dict
from ..data.classification import (
    LOAD_RATIO,
    ClassificationDataset,
    find_records,
    load_images,
    predict_images,
    resize_shorter,
    split_indices,
)
from ..data.sampling import balanced_order
from ..data.synthetic.scrap_grades import generate_images, grade_names
from ..errors import CheckpointError, DataError
from ..models.clfsef import ScrapClassifier, clfsef_loss
from ..models.linear_probe import fit_logistic_probe
from ..registry import TASKS
from ..task import Task, model_device
from ..tta import tta_average
from .scrap_cls_parts.config import (
    ScrapClsConfig,
    ScrapClsModelConfig,
)
from .scrap_cls_parts.report import classification_metrics, write_report, write_scrap_cls_report


def _warn(message: str) -> None:
    print(f"scrap_cls: {message}", file=sys.stderr)


def classifier(num_classes: int, m: ScrapClsModelConfig, weights: str | None, image_size: int) -> ScrapClassifier:
    """The model a ``model`` config section describes (``weights``: the backbone's file, if any)."""
    return ScrapClassifier(num_classes, m.backbone, m.variant, m.stages, weights, m.fuse_channels, m.sef_groups,
                           m.dropout, m.image_stats, image_size, m.image_stats_lbp)


# ---------------------------------------------------------------------------- task
@TASKS.register("scrap_cls")
class ScrapClsTask(Task):
    name = "scrap_cls"
    Config = ScrapClsConfig
    monitor = ("accuracy", "max")
    supports_tta = True
    summary = TASK_SUMMARIES["scrap_cls"]
    eval_all_overrides = ("data.eval_split=all",)
    smoke_overrides = ("model.backbone=test_efficientnet", "model.fuse_channels=16", "model.sef_groups=4",
                       "data.image_size=32", "data.synthetic_classes=3", "data.synthetic_train_per_class=6",
                       "data.synthetic_val_per_class=3", "train.epochs=1", "train.batch_size=6")

    def __init__(self, cfg: ScrapClsConfig) -> None:
        super().__init__(cfg)
        self.class_names: list[str] | None = None
        self.skipped: list[str] = []
        self._splits: tuple[ClassificationDataset, ClassificationDataset, ClassificationDataset] | None = None
        self._teacher: nn.Module | None = None
        self.tta = cfg.eval.tta

    @property
    def eval_size(self) -> int:
        """The input size of eval, predict and export."""
        return self.cfg.eval.image_size or self.cfg.data.image_size

    # ------------------------------------------------------------------ data
    def _names_from_data(self) -> list[str]:
        data_cfg = self.cfg.data
        if not data_cfg.root:
            return grade_names(data_cfg.synthetic_classes)
        return sorted({r.label for r in find_records(data_cfg.root, data_cfg.layout, data_cfg.csv)})

    def _load(self) -> tuple[ClassificationDataset, ClassificationDataset, ClassificationDataset]:
        """(train, val, all) datasets, decoded once; applies the unreadable-image policy."""
        if self._splits is not None:
            return self._splits
        data_cfg, seed = self.cfg.data, self.cfg.train.seed
        size, load_size = data_cfg.image_size, round(data_cfg.image_size * LOAD_RATIO)
        eval_size, eval_load = self.eval_size, round(self.eval_size * LOAD_RATIO)
        if not data_cfg.root:
            names = grade_names(data_cfg.synthetic_classes)
            synthetic_seed = data_cfg.synthetic_seed
            tr_img, tr_lab, _ = generate_images(data_cfg.synthetic_train_per_class, load_size, synthetic_seed, len(names))
            va_img, va_lab, _ = generate_images(data_cfg.synthetic_val_per_class, eval_load, synthetic_seed + 1, len(names))
            self.class_names = self.class_names or names
            train = ClassificationDataset(tr_img, tr_lab, size, data_cfg.augment, seed)
            val = ClassificationDataset(va_img, va_lab, eval_size, "none")
            self._splits = (train, val, val)
            return self._splits
        records = find_records(data_cfg.root, data_cfg.layout, data_cfg.csv)
        names = self.class_names or sorted({r.label for r in records})
        unknown = sorted({r.label for r in records} - set(names))
        if unknown:
            raise DataError(f"data {data_cfg.root}: class {unknown[0]!r} is not one of the model's "
                            f"{len(names)} classes")
        self.class_names = names
        try:
            train_idx, val_idx = split_indices([r.label for r in records], data_cfg.val_fraction,
                                               data_cfg.split_seed, data_cfg.folds, data_cfg.fold)
        except DataError:
            if data_cfg.eval_split != "all":  # scoring a whole test folder needs no split
                raise
            train_idx, val_idx = [], []
        # decoded once, at the larger of the two sizes; training's copies are shrunk to their own size
        images, kept, self.skipped = load_images([r.path for r in records], data_cfg.unreadable,
                                                 max(load_size, eval_load))
        train_images = images if eval_load <= load_size else [resize_shorter(im, load_size) for im in images]
        if self.skipped:
            _warn(f"skipped {len(self.skipped)} unreadable image(s) (data.unreadable=skip):")
            for message in self.skipped:
                print(f"  {message}", file=sys.stderr)
        position = {i: k for k, i in enumerate(kept)}
        labels = [names.index(r.label) for r in records]

        def subset(indices: list[int], train: bool) -> ClassificationDataset:
            keep = [i for i in indices if i in position]
            source, px = (train_images, size) if train else (images, eval_size)
            return ClassificationDataset([source[position[i]] for i in keep], [labels[i] for i in keep], px,
                                         data_cfg.augment if train else "none", seed)

        self._splits = (subset(train_idx, True), subset(val_idx, False), subset(sorted(position), False))
        return self._splits

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        train, val, _ = self._load()
        return train, val

    def build_eval_dataset(self) -> Dataset:
        _, val, everything = self._load()
        return everything if self.cfg.data.eval_split == "all" else val

    def epoch_indices(self, dataset: Dataset, epoch: int, generator: torch.Generator) -> list[int]:
        if self.cfg.data.sampling == "uniform":
            return super().epoch_indices(dataset, epoch, generator)  # type: ignore[return-value]
        return balanced_order(dataset.labels, epoch, self.cfg.train.seed, generator,  # type: ignore[attr-defined]
                              dataset_length=True)

    def checkpoint_extras(self) -> dict:
        return {"class_names": list(self.class_names or self._names_from_data())}

    def load_extras(self, extras: dict) -> None:
        if extras.get("class_names"):
            self.class_names = [str(n) for n in extras["class_names"]]

    # ------------------------------------------------------------------ model and loss
    def build_model(self) -> nn.Module:
        model_cfg = self.cfg.model
        names = self.class_names or self._names_from_data()
        model = classifier(len(names), model_cfg, model_cfg.weights or None, self.cfg.data.image_size)
        if model_cfg.probe_fit == "logreg":
            model.head.requires_grad_(False)  # fitted by prefit, not by the epochs
        return model

    @torch.no_grad()
    def prefit(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """``model.probe_fit=logreg``: the probe's standardiser and linear layer, fitted as a logistic regression on
        every training photo's features (which stay cached, so the epochs do not pay for the backbone again)."""
        if self.cfg.model.probe_fit != "logreg":
            return {}
        model.eval()
        features, labels = [], []
        for batch in tqdm(loader, desc="scrap_cls probe features", leave=False, disable=not sys.stderr.isatty()):
            features.append(model.probe_features(batch["image"].to(model_device(model))).float().cpu())
            labels.append(batch["label"].cpu())
        probe = fit_logistic_probe(torch.cat(features).numpy(), torch.cat(labels).numpy(), model.head.out_features,
                                   seed=self.cfg.train.seed)
        model.set_probe(*(torch.as_tensor(a, dtype=torch.float32) for a in (probe.mean, probe.var, probe.weight,
                                                                             probe.bias)))
        return {"probe_c": probe.c, "probe_cv_accuracy": probe.cv_accuracy[probe.c]}

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor | None:
        path = self.cfg.loss.teacher
        if not path:
            return None
        if self._teacher is None:
            payload = load_checkpoint(path, task=self.name)
            names = payload.get("extras", {}).get("class_names")
            if names != self.class_names:
                raise CheckpointError(f"teacher {path}: trained on other classes ({len(names or [])} vs "
                                      f"{len(self.class_names or [])}); a teacher must share the class list")
            m = from_dict(ScrapClsModelConfig, {**payload["config"]["model"], "weights": ""}, prefix="teacher.model")
            size = payload["config"].get("data", {}).get("image_size", self.cfg.data.image_size)
            teacher = classifier(len(names), m, None, size)
            teacher.load_state_dict(payload["model"])
            self._teacher = teacher.eval().requires_grad_(False)
        self._teacher.to(images.device)
        with torch.no_grad():
            return self._teacher(images)

    def compute_loss(self, model, batch, progress):
        images, target = batch["image"], batch["label"]
        logits, aux = model(images, return_aux=True)
        loss_cfg = self.cfg.loss
        return clfsef_loss(logits, aux, target, self._teacher_logits(images), loss_cfg.aux_weight, loss_cfg.kd_weight,
                           loss_cfg.kd_temperature, loss_cfg.entropy_weight)

    def probabilities(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, K] under ``self.tta`` (each flip's softmax, averaged)."""
        return tta_average(lambda x: F.softmax(model(x).float(), dim=1), images.to(model_device(model)), self.tta)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        probs, labels = [], []
        for batch in loader:
            probs.append(self.probabilities(model, batch["image"]).cpu())
            labels.append(batch["label"].cpu())
        probs_t, labels_t = torch.cat(probs), torch.cat(labels)
        names = self.class_names or self._names_from_data()
        y_true, y_pred = labels_t.numpy(), probs_t.argmax(1).numpy()
        metrics = {"loss": float(F.nll_loss(probs_t.clamp_min(1e-12).log(), labels_t)),
                   **classification_metrics(y_true, y_pred), "images": float(len(y_true))}
        if self.cfg.eval.report_dir:
            write_report(self.cfg.eval.report_dir, y_true, y_pred, names)
        return metrics

    def write_report(self, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
        return write_scrap_cls_report(self, model, loader, out)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, 3, self.eval_size, self.eval_size)

    # ------------------------------------------------------------------ predict
    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--top-k", type=int, default=1, help="also write the k best classes (default 1)")
        parser.add_argument("--unreadable", choices=("skip", "fail"), default=None,
                            help="unreadable images: skip (row with an error) or fail (default: data.unreadable)")

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        return predict_images(inputs, args, self.eval_size, self.cfg.data.unreadable)

    def predict_batch(self, model: nn.Module, batch: dict, out: Path, args: argparse.Namespace) -> list[dict]:
        """One row per image: file, class, probability (+ the k best with --top-k), error."""
        names = self.class_names or self._names_from_data()
        top_k = max(1, min(int(getattr(args, "top_k", 1) or 1), len(names)))
        prob, idx = self.probabilities(model, batch["image"]).topk(top_k, dim=1)
        rows = []
        for j, (key, error) in enumerate(zip(batch["file"], batch["error"])):
            row: dict = {"file": key}
            for c in range(top_k):
                suffix = "" if c == 0 else f"_{c + 1}"
                row[f"class{suffix}"] = "" if error else names[int(idx[j, c])]
                row[f"probability{suffix}"] = "" if error else round(float(prob[j, c]), 4)
            row["error"] = error
            if error:
                _warn(f"skipped {error}")
            rows.append(row)
        return rows

    def finish_predictions(self, predictions: Path, out: Path, args: argparse.Namespace) -> Path:
        """Print the first predictions with their class names and a count per class."""
        with predictions.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for row in rows[:20]:
            print(f"{row['file']}: {row['class'] or 'unreadable'} ({row['probability'] or row['error']})")
        counts = Counter(row["class"] or "unreadable" for row in rows)
        print(f"{len(rows)} images: " + ", ".join(f"{name} {n}" for name, n in counts.most_common()))
        return predictions

    # ------------------------------------------------------------------ prepare
    @classmethod
    def add_prepare_args(cls, parser: argparse.ArgumentParser) -> None:
        from .scrap_cls_parts.prepare import add_prepare_args

        add_prepare_args(parser)

    def prepare(self, args: argparse.Namespace) -> Path:
        from .scrap_cls_parts.prepare import run_prepare

        return run_prepare(args)


__all__ = ["ScrapClsConfig", "ScrapClsTask"]
