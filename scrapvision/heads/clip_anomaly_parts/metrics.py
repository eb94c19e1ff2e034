"""Segmentation and anomaly metrics: per-class IoU / mIoU, pixel AP and AUROC, AUPRO, image AUROC.

Class 0 is the normal material; a pixel's anomaly score is ``1 - p(class 0)`` and it is anomalous in the
ground truth when its class is not 0. Pixels labelled 255 are ignored everywhere. AUPRO follows the
MVTec AD protocol: the mean per-region overlap (regions = 8-connected components of each image's
anomaly mask) against the false-positive rate on normal pixels, integrated up to FPR 0.3 and divided
by 0.3 (1.0 is perfect). It is computed exactly, at every distinct score, from one sort of all pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from ...data.class_masks import IGNORE_INDEX


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of each class from a (K, K) confusion matrix [true, pred]; NaN for a class absent from
    both the ground truth and the prediction (it does not enter mIoU)."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def _binary_metric(fn, labels: np.ndarray, scores: np.ndarray) -> float:
    """``fn`` of scikit-learn, or NaN when only one class is present (it is undefined then)."""
    if labels.size == 0 or labels.all() or not labels.any():
        return math.nan
    return float(fn(labels, scores))


def pixel_ap(labels: np.ndarray, scores: np.ndarray) -> float:
    return _binary_metric(average_precision_score, labels, scores)


def pixel_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    return _binary_metric(roc_auc_score, labels, scores)


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], valid: Sequence[np.ndarray] | None = None,
          max_fpr: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve up to ``max_fpr`` (NaN without regions)."""
    scores, is_anom, weight = [], [], []
    n_regions = 0
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        keep = np.ones(mask.shape, bool) if valid is None else valid[i]
        n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        sizes = np.bincount(comp[keep], minlength=n).astype(np.float64)
        n_regions += int((sizes[1:] > 0).sum())
        scores.append(amap[keep].astype(np.float64))
        is_anom.append(mask[keep].astype(bool))
        weight.append((1.0 / np.maximum(sizes, 1))[comp[keep]])
    all_anom = np.concatenate(is_anom)
    n_normal = int((~all_anom).sum())
    if n_regions == 0 or n_normal == 0:
        return math.nan
    s = np.concatenate(scores)
    w = np.concatenate(weight) / n_regions
    order = np.argsort(-s, kind="stable")
    s, all_anom, w = s[order], all_anom[order], w[order]
    fpr = np.cumsum(~all_anom) / n_normal
    pro = np.cumsum(np.where(all_anom, w, 0.0))
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # end of each group of tied scores
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    cut = np.searchsorted(fpr, max_fpr, side="right")
    if cut < fpr.size:
        pro_at = np.interp(max_fpr, fpr[cut - 1: cut + 1], pro[cut - 1: cut + 1])
        fpr, pro = np.r_[fpr[:cut], max_fpr], np.r_[pro[:cut], pro_at]
    return float(np.trapezoid(pro, fpr) / max_fpr)


class SegAnomalyMeter:
    """Accumulates per-image predictions; :meth:`compute` returns every metric of the head."""

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        k = len(self.class_names)
        self.confusion = np.zeros((k, k), np.int64)
        self.maps: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.image_scores: list[float] = []
        self.image_labels: list[bool] = []

    def update(self, probs: np.ndarray, target: np.ndarray, anomaly_threshold: float = 0.0) -> None:
        """``probs`` (B, K, H, W) class probabilities, ``target`` (B, H, W) class indices; the class decision
        is :func:`.post.class_map`'s (argmax, or the anomaly threshold when it is > 0)."""
        from .post import class_map

        k = len(self.class_names)
        pred = class_map(probs, anomaly_threshold)
        for p, t, prob in zip(pred, target, probs):
            valid = t != IGNORE_INDEX
            self.confusion += np.bincount(t[valid].astype(np.int64) * k + p[valid], minlength=k * k).reshape(k, k)
            amap = (1.0 - prob[0]).astype(np.float32)
            anomalous = (t != 0) & valid
            self.maps.append(amap)
            self.masks.append(anomalous)
            self.valid.append(valid)
            self.image_scores.append(float(amap[valid].max()) if valid.any() else 0.0)
            self.image_labels.append(bool(anomalous.any()))

    def extend(self, other: SegAnomalyMeter) -> None:
        """Pool another meter's images into this one (e.g. the test folds of a cross-validation)."""
        self.confusion += other.confusion
        for name in ("maps", "masks", "valid", "image_scores", "image_labels"):
            getattr(self, name).extend(getattr(other, name))

    def compute(self) -> dict[str, float]:
        ious = iou_per_class(self.confusion)
        out = {"miou": float(np.nanmean(ious)) if not np.isnan(ious).all() else math.nan,
               "miou_impurities": float(np.nanmean(ious[1:])) if not np.isnan(ious[1:]).all() else math.nan}
        for name, value in zip(self.class_names, ious):
            out[f"iou_{name.replace(' ', '_')}"] = float(value)
        labels = np.concatenate([m[v] for m, v in zip(self.masks, self.valid)]) if self.maps else np.zeros(0, bool)
        scores = np.concatenate([a[v] for a, v in zip(self.maps, self.valid)]) if self.maps else np.zeros(0)
        out["pixel_ap"] = pixel_ap(labels, scores)
        out["pixel_auroc"] = pixel_auroc(labels, scores)
        out["aupro"] = aupro(self.masks, self.maps, self.valid) if self.maps else math.nan
        image_labels, image_scores = np.array(self.image_labels), np.array(self.image_scores)
        out["image_auroc"] = _binary_metric(roc_auc_score, image_labels, image_scores)
        out["image_ap"] = _binary_metric(average_precision_score, image_labels, image_scores)
        return out
