"""``scrapvision data check``: read everything a head would read and say whether the set is usable.

For the generic layout and MVTec AD every image is decoded and every mask checked, and all problems are
listed (up to a cap, then a count) instead of stopping at the first. Native layouts (KolektorSDD,
Severstal, scrap grades...) go through the head's own reader, which stops at its first problem.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .data.folder import FolderScan, is_folder_layout, is_mvtec_layout, read_folder_mask, scan_layout
from .data.images import read_image
from .errors import DataError

MAX_PROBLEMS = 20


def summarise(scan: FolderScan) -> list[str]:
    """Human lines: counts, defect rate per class, sizes, weak labels, groups and splits."""
    n = len(scan.items)
    lines = [f"images: {n} readable"]
    if not n:
        return lines
    labels = Counter(it.label for it in scan.items)
    defective = n - labels.get(0, 0)
    lines.append(f"defective: {defective} ({100 * defective / n:.1f} %)")
    for k in sorted(labels):
        name = scan.class_names[k] if k < len(scan.class_names) else f"class {k}"
        lines.append(f"  label {k} ({name}): {labels[k]} images")
    heights, widths = zip(*scan.sizes)
    lines.append(f"sizes (w x h): {min(widths)}-{max(widths)} x {min(heights)}-{max(heights)}")
    weak = sum(not it.pixel_labelled for it in scan.items)
    if weak:
        lines.append(f"weakly labelled (label, no mask): {weak}")
    lines.append(f"groups: {len({it.group for it in scan.items})}")
    splits = Counter(it.split for it in scan.items if it.split)
    if splits:
        lines.append("fixed splits: " + ", ".join(f"{s} {c}" for s, c in sorted(splits.items())))
    return lines


def contact_sheet(scan: FolderScan, path: Path, count: int = 12) -> Path:
    """A grid of images with their masks overlaid in red, defective images first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = sorted(scan.items, key=lambda it: it.label == 0)[:count]
    cols = min(4, max(1, len(chosen)))
    rows = max(1, -(-len(chosen) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, item in zip(axes.flat, chosen):
        image = read_image(item.image).astype(np.float32) / 255
        if item.mask is not None:
            mask = read_folder_mask(item.mask) > 0
            image[mask] = 0.5 * image[mask] + 0.5 * np.array([1.0, 0.0, 0.0])
        ax.imshow(image)
        ax.set_title(f"{item.name} [{item.label}]", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def check_layout(root: Path, num_classes: int | None, sheet: Path | None = None) -> tuple[list[str], list[str]]:
    """(summary lines, problem lines) of a generic or MVTec folder, every file decoded."""
    scan = scan_layout(root, num_classes, decode=True)
    lines = summarise(scan)
    if sheet is not None and scan.items:
        lines.append(f"contact sheet: {contact_sheet(scan, sheet)}")
    problems = scan.problems[:MAX_PROBLEMS]
    if len(scan.problems) > MAX_PROBLEMS:
        problems.append(f"... and {len(scan.problems) - MAX_PROBLEMS} more problems")
    return lines, problems


def check_native(task) -> list[str]:
    """A native layout through the head's own reader (which raises its first problem)."""
    train, val = task.build_datasets()
    return [f"layout: {task.name}'s native reader", f"train samples: {len(train)}", f"validation samples: {len(val)}"]


def check(task, root: Path, sheet: Path | None = None) -> tuple[list[str], list[str]]:
    if not root.is_dir():
        raise DataError(f"--data {root}: folder not found")
    if is_folder_layout(root) or is_mvtec_layout(root):
        kind = "folder (images/ + masks/)" if is_folder_layout(root) else "MVTec AD"
        lines, problems = check_layout(root, task.layout_classes(), sheet)
        return [f"layout: {kind}", *lines], problems
    return check_native(task), []
