"""Image-level metrics of the mixed-segdec reference (AP two ways, AUROC, best F, FP/FN) and the plots."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score  # noqa: E402

from ...checkpoint import atomic_write  # noqa: E402


def decision_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """``ap`` (sklearn step-wise average precision), ``ap_trapz`` (trapezoidal area under the PR curve, what
    the mixed-segdec code reports as AP), ``auroc``, ``f1`` at the best threshold, that ``threshold`` and the
    ``fp`` / ``fn`` counts there. With one class only, the ranking metrics are NaN."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    out = {"n": float(len(labels)), "n_pos": float(labels.sum())}
    if labels.all() or not labels.any():
        return {**out, "ap": float("nan"), "ap_trapz": float("nan"), "auroc": float("nan"), "f1": float("nan"),
                "threshold": 0.5, "fp": float(((scores >= 0.5) & ~labels).sum()),
                "fn": float(((scores < 0.5) & labels).sum())}
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    threshold = float(thresholds[best]) if len(thresholds) else 0.5
    pred = scores >= threshold
    return {**out, "ap": float(average_precision_score(labels, scores)), "ap_trapz": float(auc(recall, precision)),
            "auroc": float(roc_auc_score(labels, scores)), "f1": float(f1[best]), "threshold": threshold,
            "fp": float((pred & ~labels).sum()), "fn": float((~pred & labels).sum())}


def pixel_ap(targets: np.ndarray, probs: np.ndarray) -> float:
    """Pixel-level AP at the output stride; a cell is positive when any of its (dilated) pixels is a defect."""
    positive = np.asarray(targets).ravel() > 0
    if positive.all() or not positive.any():
        return float("nan")
    return float(average_precision_score(positive, np.asarray(probs).ravel()))


def save_pr_curve(labels: np.ndarray, scores: np.ndarray, path: str | Path, title: str = "") -> Path:
    """PR curve PNG with AP in the legend; written atomically."""
    labels = np.asarray(labels).astype(bool)
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=120)
    if labels.any() and not labels.all():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.step(recall, precision, where="post", label=f"AP {average_precision_score(labels, scores):.4f}")
        ax.legend(loc="lower left")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return Path(path)


def overlay(gray: np.ndarray, prob: np.ndarray, score: float, threshold: float) -> np.ndarray:
    """RGB panel: the input, and the input with the upsampled segmentation map as a heat overlay, with the
    decision score written on top (red when above the threshold)."""
    import cv2

    h, w = gray.shape
    heat = cv2.applyColorMap((np.clip(cv2.resize(prob, (w, h)), 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    mixed = cv2.addWeighted(base, 0.55, heat, 0.45, 0)
    panel = np.hstack([base, mixed])
    scale = max(1, 256 // h) if h < 256 else 1
    panel = cv2.resize(panel, (panel.shape[1] * scale, h * scale), interpolation=cv2.INTER_NEAREST)
    colour = (0, 0, 255) if score >= threshold else (0, 200, 0)
    cv2.putText(panel, f"{score:.3f}", (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return panel
