"""``eval --report`` pictures of clip_anomaly: the images with the most mislabelled pixels (input | truth |
prediction | anomaly map) and the PR curve of "this image holds an impurity"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from torch import nn
from torch.utils.data import DataLoader

from ...plots import collate_items, save_grid, save_pr_curve, to_rgb, worst
from .overlay import blend
from .post import class_map


@torch.no_grad()
def write_clip_anomaly_report(task, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
    task.prepare_memory(model)
    names, threshold = task.class_names(), task.cfg.post.anomaly_threshold
    errors, scores, labels = [], [], []
    for batch in loader:  # the probabilities and class decision that eval scores (TTA, anomaly threshold)
        probs = task.probabilities(model, batch["image"]).cpu()
        mask = batch["mask"]
        errors.append(torch.from_numpy(class_map(probs.numpy(), threshold) != mask.numpy()).flatten(1).float().mean(1))
        scores.append((1 - probs[:, 0]).flatten(1).amax(1))
        labels.append((mask > 0).flatten(1).any(1))
    error = torch.cat(errors).numpy()
    picks = worst(error, task.report_items)
    batch = collate_items(loader, picks)
    probs = task.probabilities(model, batch["image"]).cpu()
    preds = class_map(probs.numpy(), threshold)
    rows = []
    for j in range(len(picks)):
        image = to_rgb(batch["image"][j])
        pred = preds[j]
        heat = (colormaps["inferno"](1 - probs[j, 0].numpy())[..., :3] * 255).astype(np.uint8)
        rows.append([image, blend(image, batch["mask"][j].numpy(), len(names)), blend(image, pred, len(names)), heat])
    titles = [f"#{i}: {error[i]:.1%} pixels wrong" for i in picks]
    return [save_grid(rows, titles, out / "worst_images.png", ("input", "truth", "prediction", "anomaly 1 - p(normal)"),
                      "most mislabelled pixels first; classes: " + ", ".join(names[1:])),
            save_pr_curve(torch.cat(labels).numpy(), torch.cat(scores).numpy(), out / "pr_curve.png",
                          "image holds an impurity (max anomaly score)")]
