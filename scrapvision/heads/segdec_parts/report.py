"""``eval --report`` pictures of segdec: the worst-decided images with truth and predicted defect maps, and
the PR curve of the image decision."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ...plots import collate_items, save_grid, save_pr_curve, to_rgb, worst
from ...task import model_device
from .metrics import overlay


def tint(image: np.ndarray, mask: np.ndarray, colour=(255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    """``image`` (HxWx3 uint8) with ``mask`` (any size, > 0 = defect) blended in ``colour``."""
    mask = cv2.resize(mask.astype(np.float32), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    out = image.copy()
    out[mask] = ((1 - alpha) * out[mask] + alpha * np.array(colour)).astype(np.uint8)
    return out


@torch.no_grad()
def write_segdec_report(task, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
    """Images whose decision is furthest from the label (confident misses and false alarms first)."""
    r = task.score(model, loader)
    labels = r["label"] > 0.5
    error = np.abs(labels.astype(np.float64) - r["score"].ravel())
    picks = worst(error, task.report_items)
    batch = collate_items(loader, picks)
    _, seg = model(task.channels(batch["image"].to(model_device(model))))
    rows, titles = [], []
    for j, i in enumerate(picks):
        image = to_rgb(batch["image"][j][:1])
        heat = overlay(image[..., 0], torch.sigmoid(seg[j, 0]).float().cpu().numpy(), float(r["score"][i]), task.threshold)
        rows.append([image, tint(image, batch["target"][j, 0].numpy()), cv2.cvtColor(heat[:, heat.shape[1] // 2:], cv2.COLOR_BGR2RGB)])
        titles.append(f"#{i} label {int(labels[i])} score {float(r['score'][i]):.3f}")
    return [save_grid(rows, titles, out / "worst_images.png", ("input", "truth", "predicted defect map"),
                      f"furthest from the label first (threshold {task.threshold:.3f})"),
            save_pr_curve(labels, r["score"].ravel(), out / "pr_curve.png", f"segdec decision, {len(labels)} images")]
