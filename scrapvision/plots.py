"""The figures of a run: training curves, grids of the worst-scored items, PR curves, scatter plots.

Every figure is a matplotlib ``Figure`` (no pyplot state, safe in worker threads) written atomically as PNG.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.utils.data import DataLoader, default_collate

from .checkpoint import atomic_write
from .runlog import best_row

#: columns of metrics.csv that are bookkeeping or counts, not curves
NOT_CURVES = ("epoch", "step", "lr", "elapsed_s", "val_images", "val_n", "val_n_pos")


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    with atomic_write(path) as handle:
        handle.write(buffer.getvalue())
    return path


def plot_curves(metrics_csv: Path, out: Path, monitor: str = "val_loss", mode: str = "min") -> Path:
    """One panel per logged quantity against the epoch, train and validation on the same axes, the epoch
    that selected ``best.pt`` (best ``monitor``) marked by a dashed line on every panel."""
    frame = pd.read_csv(metrics_csv)
    names: list[str] = []
    for column in frame.columns:
        if column in NOT_CURVES or not pd.api.types.is_numeric_dtype(frame[column]) or frame[column].isna().all():
            continue
        base = column.removeprefix("train_").removeprefix("val_")
        if base not in names:
            names.append(base)
    best = best_row(frame, monitor, mode)
    best_epoch = int(frame.loc[best[1], "epoch"]) if best else None
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes, names):
        for prefix, style in (("train_", "-"), ("val_", "-o"), ("", "-s")):
            column = prefix + name
            if column in frame and column not in NOT_CURVES:
                part = frame.dropna(subset=[column])
                ax.plot(part["epoch"], part[column], style, markersize=3, label=prefix.rstrip("_") or "logged")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        ax.set(xlabel="epoch", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{metrics_csv.parent.name}: best {monitor} at epoch {best_epoch}", fontsize=10, y=1.01)
    fig.tight_layout()
    return save_png(fig, out)


def to_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A model input (CHW, any normalisation) as HxWx3 uint8, contrast stretched: for looking at, not measuring."""
    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    low, high = float(array.min()), float(array.max())
    return ((array - low) / max(high - low, 1e-8) * 255).round().astype(np.uint8)


def save_grid(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str], path: str | Path,
              columns: Sequence[str] = (), suptitle: str = "", wrap: int = 4) -> Path:
    """One row per item (its panels side by side, e.g. input | truth | prediction) titled by its first
    panel; items of a single panel each are laid out ``wrap`` to a row instead, each titled."""
    cells = [[(panel, titles[i] if j == 0 else "") for j, panel in enumerate(row)] for i, row in enumerate(rows)]
    if cells and all(len(row) == 1 for row in cells):
        flat = [row[0] for row in cells]
        cells = [flat[k:k + wrap] for k in range(0, len(flat), wrap)]
        columns = ()
    n_rows, n_cols = max(1, len(cells)), max(1, max((len(r) for r in cells), default=1))
    height, width = cells[0][0][0].shape[:2] if cells else (1, 1)
    panel_w = min(4.5, 2.4 * width / height)
    fig = Figure(figsize=(panel_w * n_cols, (panel_w * height / width + 0.5) * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, ax_row in enumerate(axes):
        for j, ax in enumerate(ax_row):
            ax.set_axis_off()
            if i < len(cells) and j < len(cells[i]):
                panel, title = cells[i][j]
                ax.imshow(panel, cmap="gray" if panel.ndim == 2 else None)
                heading = columns[j] if i == 0 and j < len(columns) else ""
                ax.set_title("\n".join(t for t in (heading, title) if t), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def save_pr_curve(labels: np.ndarray, scores: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Precision-recall curve with its average precision; an empty frame when only one class occurs."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels = np.asarray(labels).astype(bool)
    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    if labels.any() and not labels.all():
        precision, recall, _ = precision_recall_curve(labels, scores)
        ax.step(recall, precision, where="post", label=f"AP {average_precision_score(labels, scores):.4f}")
        ax.legend(loc="lower left")
    else:
        ax.text(0.5, 0.5, "one class only: no PR curve", ha="center")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    return save_png(fig, path, dpi=120)


def save_scatter(true: np.ndarray, pred: np.ndarray, path: str | Path, label: str, title: str = "") -> Path:
    """Predicted against true values with the identity line; the mean absolute error in the legend."""
    true, pred = np.asarray(true, np.float64), np.asarray(pred, np.float64)
    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=14, alpha=0.8, label=f"MAE {np.abs(pred - true).mean():.4g} ({len(true)} items)")
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="predicted = true")
    ax.set(xlabel=f"true {label}", ylabel=f"predicted {label}", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def worst(errors: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` largest errors, largest first (NaN errors last)."""
    errors = np.nan_to_num(np.asarray(errors, np.float64), nan=-np.inf)
    return np.argsort(-errors, kind="stable")[:count].tolist()


def collate_items(loader: DataLoader, indices: Sequence[int]) -> Any:
    """The items at ``indices`` of an unshuffled loader's dataset as one batch, so a report can run the model
    again on its few worst items instead of holding every image of the first pass."""
    items = [loader.dataset[i] for i in indices]
    return (loader.collate_fn or default_collate)(items)
