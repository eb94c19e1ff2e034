"""Image-level metrics of the mixed-segdec reference (AP two ways, AUROC, F, FP/FN), the plots, and the report
of a prediction run on labelled images."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from sklearn.metrics import auc, average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from ...checkpoint import atomic_write
from ...data.kolektor import read_kolektor_mask
from ...plots import save_pr_curve


def decision_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float | None = None) -> dict[str, float]:
    """``ap`` (sklearn step-wise average precision), ``ap_trapz`` (trapezoidal area under the PR curve, what
    the mixed-segdec code reports as AP), ``auroc``, ``best_f1`` at ``best_threshold`` (the best-F threshold of
    these very scores, an optimistic operating point), and ``f1`` / ``fp`` / ``fn`` at ``threshold``: one
    chosen elsewhere (on validation), or by default the best one here. With one class, ranking metrics are NaN."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    out = {"n": float(len(labels)), "n_pos": float(labels.sum())}
    if labels.all() or not labels.any():
        best_f1, best = float("nan"), 0.5
        out.update(ap=float("nan"), ap_trapz=float("nan"), auroc=float("nan"))
    else:
        precision, recall, thresholds = precision_recall_curve(labels, scores)
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        k = int(np.argmax(f1[:-1])) if len(thresholds) else 0
        best_f1, best = float(f1[k]), float(thresholds[k]) if len(thresholds) else 0.5
        out.update(ap=float(average_precision_score(labels, scores)), ap_trapz=float(auc(recall, precision)),
                   auroc=float(roc_auc_score(labels, scores)))
    chosen = best if threshold is None else float(threshold)
    pred = scores >= chosen
    f1_at = best_f1 if threshold is None or np.isnan(best_f1) else float(f1_score(labels, pred, zero_division=0))
    return {**out, "best_f1": best_f1, "best_threshold": best, "f1": f1_at, "threshold": chosen,
            "fp": float((pred & ~labels).sum()), "fn": float((~pred & labels).sum())}


def pixel_ap(targets: np.ndarray, probs: np.ndarray) -> float:
    """Pixel-level AP at the output stride; a cell is positive when any of its (dilated) pixels is a defect."""
    positive = np.asarray(targets).ravel() > 0
    if positive.all() or not positive.any():
        return float("nan")
    return float(average_precision_score(positive, np.asarray(probs).ravel()))


def write_labelled_report(predictions: Path, files: dict[str, Path], out: Path, threshold: float) -> Path | None:
    """When every image of ``predictions.csv`` (``files``: its key -> path) has a KolektorSDD-style ``_label``
    mask beside it, write ``pr_curve.png`` and ``metrics.csv`` (AP, AUC, F1 / FP / FN at ``threshold``, the
    best F1) into ``out`` and return the CSV; else None."""
    with open(predictions, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    paths = [files.get(r["image"], Path(r["image"])) for r in rows]
    masks = [next((f.with_name(f"{f.stem}_label{x}") for x in (".bmp", ".png")
                   if f.with_name(f"{f.stem}_label{x}").is_file()), None) for f in paths]
    if not rows or any(m is None for m in masks):
        return None
    labels = np.array([bool(read_kolektor_mask(m).any()) for m in masks])
    scores = np.array([float(r["score"]) for r in rows])
    metrics = decision_metrics(labels, scores, threshold=threshold)
    save_pr_curve(labels, scores, out / "pr_curve.png", title=f"segdec, {len(rows)} images")
    with atomic_write(out / "metrics.csv", "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(metrics))
        writer.writerow([f"{v:.6g}" for v in metrics.values()])
    return out / "metrics.csv"


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
