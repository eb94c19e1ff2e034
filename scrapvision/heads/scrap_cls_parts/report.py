"""Classification metrics (scikit-learn) and the per-class report: CSV plus confusion-matrix PNG."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...checkpoint import atomic_write


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    k = len(names)
    counts = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    side = max(5.0, 0.38 * k + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path


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
    return rows
