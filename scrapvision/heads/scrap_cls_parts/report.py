"""Classification metrics (scikit-learn) and the per-class report: CSV, confusion matrix, precision / recall
bars, and the worst-classified images for ``eval --report``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ...checkpoint import atomic_write
from ...plots import collate_items, save_grid, save_png, to_rgb, worst


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy and macro-F1 over the classes that occur in ``y_true`` or ``y_pred``."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> list[dict]:
    """One row per class: precision, recall, F1 and support (0 where a class never occurs)."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=list(range(len(names))), zero_division=0)
    return [{"class": n, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, n in enumerate(names)]


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Row-normalised confusion matrix (recall on the diagonal) with counts, as a PNG."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    k = len(names)
    counts = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = max(5.0, 0.38 * k + 2)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i, j in zip(*np.nonzero(counts)):
        ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"confusion matrix ({len(y_true)} images)")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    return save_png(fig, path, dpi=110)


def plot_per_class(rows: Sequence[dict], path: str | Path) -> Path:
    """Precision and recall of every class side by side (the support under each name)."""
    from matplotlib.figure import Figure

    x = np.arange(len(rows))
    fig = Figure(figsize=(max(5.0, 0.45 * len(rows) + 2), 3.6))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [r["precision"] for r in rows], 0.4, label="precision")
    ax.bar(x + 0.2, [r["recall"] for r in rows], 0.4, label="recall")
    ax.set_xticks(x, [f"{r['class']}\n(n={r['support']})" for r in rows], rotation=90 if len(rows) > 8 else 0, fontsize=7)
    ax.set(ylim=(0, 1.05), title="per-class precision and recall")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def write_report(out_dir: str | Path, y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str],
                 title: str = "") -> list[dict]:
    """``out_dir/per_class.csv`` and ``out_dir/confusion_matrix.png``; returns the per-class rows."""
    out = Path(out_dir)
    rows = per_class_table(y_true, y_pred, names)
    with atomic_write(out / "per_class.csv", "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    plot_confusion(y_true, y_pred, names, out / "confusion_matrix.png", title)
    plot_per_class(rows, out / "per_class.png")
    return rows


@torch.no_grad()
def write_scrap_cls_report(task, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
    """Confusion matrix, per-class precision / recall (PNG and CSV), and the images whose true class got the
    lowest probability."""
    probs, labels = [], []
    for batch in loader:
        probs.append(task.probabilities(model, batch["image"]).cpu())
        labels.append(batch["label"].cpu())
    prob, label = torch.cat(probs), torch.cat(labels)
    names = task.class_names or task._names_from_data()
    write_report(out, label.numpy(), prob.argmax(1).numpy(), names)
    true_prob = prob[torch.arange(len(label)), label].numpy()
    picks = worst(1 - true_prob, task.report_items)
    batch = collate_items(loader, picks)
    rows = [[to_rgb(image)] for image in batch["image"]]
    titles = [f"true {names[int(label[i])]} ({true_prob[i]:.2f})\npredicted {names[int(prob[i].argmax())]} "
              f"({float(prob[i].max()):.2f})" for i in picks]
    grid = save_grid(rows, titles, out / "worst_images.png", suptitle="lowest probability of the true class first")
    return [out / "confusion_matrix.png", out / "per_class.png", out / "per_class.csv", grid]
