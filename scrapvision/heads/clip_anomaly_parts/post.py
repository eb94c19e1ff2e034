"""The class decision of ``clip_anomaly`` and the search of its anomaly threshold.

Without a threshold a pixel takes its most probable class. With ``post.anomaly_threshold`` t > 0 it is an
impurity only when its anomaly score ``1 - p(normal)`` exceeds t, and then its most probable impurity class:
the knob between missed impurities and false alarms that ``scrapvision tune`` sets on the validation split,
maximising mIoU. The search keeps one count per (anomaly-score bucket, true class, most probable impurity)
over the validation pixels, so every candidate's confusion matrix follows from cumulative sums: the model
runs once.
"""

from __future__ import annotations

import math

import numpy as np

from ...data.class_masks import IGNORE_INDEX
from .metrics import iou_per_class

THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))


def class_map(probs: np.ndarray, anomaly_threshold: float = 0.0) -> np.ndarray:
    """(B, K, H, W) class probabilities -> (B, H, W) class indices."""
    if anomaly_threshold <= 0:
        return probs.argmax(1)
    return np.where(1.0 - probs[:, 0] > anomaly_threshold, probs[:, 1:].argmax(1) + 1, 0)


def mean_iou(confusion: np.ndarray) -> float:
    ious = iou_per_class(confusion)
    return math.nan if np.isnan(ious).all() else float(np.nanmean(ious))


class ThresholdStats:
    """Pixel counts of a validation split from which the mIoU of every candidate threshold follows."""

    def __init__(self, n_classes: int, current: float = 0.0) -> None:
        self.k = n_classes
        self.thresholds = np.array(sorted({*THRESHOLDS, *([current] if current > 0 else [])}))
        self.counts = np.zeros((len(self.thresholds) + 1, n_classes, n_classes), np.int64)
        self.argmax = np.zeros((n_classes, n_classes), np.int64)

    def update(self, probs: np.ndarray, target: np.ndarray) -> None:
        """``probs`` (B, K, H, W), ``target`` (B, H, W) class indices (255 = ignored)."""
        valid = target != IGNORE_INDEX
        truth = target[valid].astype(np.int64)
        score = (1.0 - probs[:, 0])[valid]
        impurity = (probs[:, 1:].argmax(1) + 1)[valid]
        bucket = np.searchsorted(self.thresholds, score, side="left")  # score > t_j <=> bucket > j
        k, n = self.k, len(self.thresholds) + 1
        self.counts += np.bincount((bucket * k + truth) * k + impurity, minlength=n * k * k).reshape(n, k, k)
        self.argmax += np.bincount(truth * k + probs.argmax(1)[valid], minlength=k * k).reshape(k, k)

    def confusions(self) -> np.ndarray:
        """(T, K, K) confusion matrices [true, predicted], one per candidate threshold."""
        above = self.counts[::-1].cumsum(0)[::-1][1:]  # candidate j: buckets > j keep their impurity class
        below = self.counts.sum(2).cumsum(0)[:-1]  # ... the others are called normal
        above[:, :, 0] += below
        return above

    def search(self, current: float) -> dict[str, float]:
        """The threshold of the best validation mIoU (0 = argmax among the candidates; ties keep ``current``,
        then go to the value nearest 0.5), with the mIoU of ``current`` and of the choice."""
        candidates = [0.0, *self.thresholds.tolist()]
        scores = [mean_iou(self.argmax), *(mean_iou(c) for c in self.confusions())]
        scores = [-1.0 if math.isnan(s) else s for s in scores]
        best = max(scores)
        chosen = min((c for c, s in zip(candidates, scores) if s >= best - 1e-12),
                     key=lambda c: (c != current, abs(c - 0.5)))
        return {"anomaly_threshold": float(chosen), "miou_tuned": float(best),
                "miou_before": float(scores[candidates.index(current)])}
