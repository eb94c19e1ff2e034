"""Severstal post-processing (per-class threshold, minimum area, classifier gate) and its search.

The search never runs the model per candidate. For every validation (image, class) it keeps, at each
candidate threshold, the predicted area and its overlap with the truth (one ``bucketize`` + ``bincount``
pass over the pixels), plus the truth area and the classifier's probability. The Kaggle Dice of any
(threshold, minimum area, gate) then follows in closed form for all candidates at once, and since Kaggle
Dice is a mean over classes, each class is tuned on its own. The minimum area is the mask's total area,
as in the top Kaggle solutions (a class whose mask is smaller than it is dropped from the image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

#: candidate pixel thresholds (0.5 included: the untuned default)
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
#: candidate minimum areas as fractions of the image (0.0015 x 256 x 1600 = 614 px, one top solution's 600)
MIN_AREA_FRACTIONS = (0.0, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02)
#: candidate classifier gates (0 = no gate)
GATES = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def per_class(value: float | Sequence[float], n: int) -> tuple[float, ...]:
    """A scalar for every class, or one value per class, as a tuple of ``n``."""
    return (float(value),) * n if isinstance(value, (int, float)) else tuple(float(v) for v in value)


def upsample(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Probabilities [B, C, H, W] at the original resolution, where Kaggle scores, from logits [B, C, h, w].
    Logits are interpolated, not probabilities: float32 is coarse near p = 0.5, and rounding there would
    let a 1e-8 difference between engines (torch / ONNX) flip pixels."""
    return torch.sigmoid(F.interpolate(mask_logits.float(), size=size, mode="bilinear", align_corners=False))


def postprocess(mask_logits: torch.Tensor, label_probs: torch.Tensor, size: tuple[int, int],
                threshold: Sequence[float], min_area: Sequence[int], cls_threshold: float | Sequence[float]
                ) -> torch.Tensor:
    """Mask logits and image-level probabilities -> boolean [B, C, H, W] masks at ``size``: threshold, drop
    small masks, gate by the classifier (a class whose gate is > 0 survives only if its probability reaches it)."""
    probs = upsample(mask_logits, size)
    n = probs.shape[1]
    masks = probs > torch.tensor(threshold, device=probs.device).view(1, -1, 1, 1)
    keep = masks.sum(dim=(-2, -1)) >= torch.tensor(min_area, device=probs.device).view(1, -1)
    gate = torch.tensor(per_class(cls_threshold, n), device=probs.device).view(1, -1)
    keep &= (gate <= 0) | (label_probs.float() >= gate)
    return masks & keep[..., None, None]


class PostStats:
    """Per (image, class): area and overlap at every candidate threshold, truth area, classifier probability."""

    def __init__(self, thresholds: Sequence[float]) -> None:
        self.thresholds = torch.tensor(sorted(set(thresholds)))  # float32, as postprocess compares
        self.area: list[torch.Tensor] = []
        self.inter: list[torch.Tensor] = []
        self.truth: list[torch.Tensor] = []
        self.label: list[torch.Tensor] = []
        self.pixels: list[int] = []

    def update(self, probs: torch.Tensor, truth: torch.Tensor, label_probs: torch.Tensor) -> None:
        """``probs`` [B, C, H, W] at the truth's resolution, ``truth`` boolean, ``label_probs`` [B, C]."""
        b, c = probs.shape[:2]
        n_thr = len(self.thresholds)
        bucket = torch.bucketize(probs.float().flatten(2), self.thresholds.to(probs.device))  # p > t_k <=> bucket > k
        flat = (bucket + torch.arange(b * c, device=probs.device).view(b, c, 1) * (n_thr + 1)).flatten()
        size = b * c * (n_thr + 1)
        hits = truth.flatten(2).flatten().float()
        counts = torch.bincount(flat, minlength=size).view(b, c, n_thr + 1).cpu().double()
        overlap = torch.bincount(flat, weights=hits, minlength=size).view(b, c, n_thr + 1).cpu().double()
        # area above t_k = pixels in buckets k+1.. : a reversed cumulative sum without the first bucket
        self.area.append(counts.flip(-1).cumsum(-1).flip(-1)[..., 1:])
        self.inter.append(overlap.flip(-1).cumsum(-1).flip(-1)[..., 1:])
        self.truth.append(truth.flatten(2).sum(-1).cpu().double())
        self.label.append(label_probs.float().cpu())
        self.pixels += [probs.shape[-2] * probs.shape[-1]] * b

    def arrays(self) -> tuple[np.ndarray, ...]:
        """(area [N, C, T], overlap [N, C, T], truth area [N, C], classifier probability [N, C])."""
        return tuple(torch.cat(x).numpy() for x in (self.area, self.inter, self.truth, self.label))


def class_dice(area: np.ndarray, inter: np.ndarray, truth: np.ndarray, label: np.ndarray,
               min_areas: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """Mean Kaggle Dice of one class over the images for every (threshold, min area, gate): [T, M, G].
    Inputs: area, inter [N, T]; truth, label [N]."""
    keep = (area[:, :, None, None] >= min_areas[None, None, :, None]) & (
        (gates <= 0) | (label[:, None] >= gates))[:, None, None, :]
    pred, hit = area[:, :, None, None] * keep, inter[:, :, None, None] * keep
    total = pred + truth[:, None, None, None]
    dice = np.where(total > 0, 2 * hit / np.maximum(total, 1), 1.0)
    return dice.mean(0)


def search(stats: PostStats, current: dict[str, Sequence[float]]) -> dict[str, list]:
    """Per-class (threshold, min_area, cls_threshold) maximising validation Kaggle Dice, with the scores of
    the ``current`` values (each class's current value is a candidate, so tuning never scores below it;
    ``stats`` must have been built with the current thresholds among its candidates).
    Ties go to no gate, then the smallest area, then the threshold nearest 0.5.

    A class keeps its current values unless the best beats them by more than one validation image's worth
    (1 / images of that class's mean Dice): a gain that one image decides is noise. On the real Severstal
    sample, values tuned on 3 validation images without this rule scored lower on the held-out folds than the
    untouched defaults in each of the four fine-tuning recipes tried (benchmarks/results/severstal.md)."""
    area, inter, truth, label = stats.arrays()
    thresholds = stats.thresholds.double().numpy()
    n_classes = truth.shape[1]
    pixels = float(np.median(stats.pixels))
    out: dict[str, list] = {"threshold": [], "min_area": [], "cls_threshold": [], "dice": [], "dice_current": [],
                            "dice_empty": (truth == 0).mean(0).tolist()}
    cur_gate = per_class(current["cls_threshold"], n_classes)
    for c in range(n_classes):
        t_index = int(np.flatnonzero(stats.thresholds.numpy() == np.float32(current["threshold"][c]))[0])
        min_areas = np.unique([round(f * pixels) for f in MIN_AREA_FRACTIONS] + [int(current["min_area"][c])])
        gates = np.unique([*GATES, max(0.0, cur_gate[c])])
        score = class_dice(area[:, c], inter[:, c], truth[:, c], label[:, c], min_areas.astype(float), gates)
        near = np.argwhere(score >= score.max() - 1e-12)
        t, m, g = min(near, key=lambda i: (gates[i[2]] > 0, min_areas[i[1]], abs(thresholds[i[0]] - 0.5)))
        m_cur, g_cur = int(np.searchsorted(min_areas, int(current["min_area"][c]))), int(np.searchsorted(gates, max(0.0, cur_gate[c])))
        cur = score[t_index, m_cur, g_cur]
        if score[t, m, g] - cur <= 1.0 / len(truth) + 1e-12:  # not more than one image's worth: keep the current
            t, m, g = t_index, m_cur, g_cur
        out["threshold"].append(round(float(thresholds[t]), 4))
        out["min_area"].append(int(min_areas[m]))
        out["cls_threshold"].append(round(float(gates[g]), 4))
        out["dice"].append(float(score[t, m, g]))
        out["dice_current"].append(float(cur))
    return out
