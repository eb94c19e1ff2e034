"""Overlay PNGs: input | predicted impurity classes over the input, with a legend | anomaly heat map."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...checkpoint import atomic_write

#: saturated colours that do not occur in scrap (no orange or brown, which rust already is)
PALETTE = ("#808080", "#00e5ff", "#39ff14", "#ffe600", "#ff00ff", "#0050ff", "#ff1744", "#ffffff", "#7c4dff")


def class_colours(n: int) -> np.ndarray:
    """(n, 3) RGB in [0, 1]; class 0 (normal) is never drawn, classes past the palette cycle tab20."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb

    extra = colormaps["tab20"]
    return np.array([to_rgb(PALETTE[i]) if i < len(PALETTE) else extra(i % 20)[:3] for i in range(n)])


def blend(image: np.ndarray, pred: np.ndarray, n_classes: int, alpha: float = 0.55) -> np.ndarray:
    """Image (HxWx3 uint8) with every non-normal predicted pixel tinted by its class colour."""
    colours = (class_colours(n_classes) * 255).astype(np.float32)
    out = image.astype(np.float32)
    tinted = pred > 0
    out[tinted] = (1 - alpha) * out[tinted] + alpha * colours[pred[tinted]]
    return out.round().astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, pred: np.ndarray, anomaly: np.ndarray,
                 class_names: Sequence[str], title: str = "") -> Path:
    """Write a three-panel PNG (atomic); the legend lists every impurity class with its colour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = class_colours(len(class_names))
    h, w = image.shape[:2]
    fig = Figure(figsize=(3 * 3.2, 3.2 * h / w + 0.9), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    axes[0].imshow(image)
    axes[0].set_title("input")
    axes[1].imshow(blend(image, pred, len(class_names)))
    axes[1].set_title("predicted impurities")
    shown = axes[2].imshow(anomaly, cmap="inferno", vmin=0.0, vmax=1.0)
    axes[2].set_title("anomaly score 1 - p(normal)")
    fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_axis_off()
    present = set(np.unique(pred).tolist())
    handles = [Patch(facecolor=colours[i], label=f"{name}{'' if i in present else ' (none)'}")
               for i, name in enumerate(class_names) if i > 0]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.97, top=0.86, bottom=0.16, wspace=0.05)
    with atomic_write(path) as handle:
        fig.savefig(handle, format="png")
    return Path(path)
