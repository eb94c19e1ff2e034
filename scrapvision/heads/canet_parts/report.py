"""``eval --report`` pictures of canet: predicted against true copper content, and the photos of the samples
with the largest content error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ...plots import save_grid, save_scatter, to_rgb, worst
from ...task import model_device

#: photos of one sample shown in a row of the worst-samples grid
PHOTOS_SHOWN = 4


@torch.no_grad()
def write_canet_report(task, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
    device = model_device(model)
    true, pred = [], []
    for index in range(len(loader.dataset)):  # one sample at a time: samples may differ in photo count
        item = loader.dataset[index]
        pred.append(task.outputs(model, item["images"][None].to(device))["content"].float().cpu().reshape(1))
        true.append(item["content"].float().reshape(1))
    true_pp, pred_pp = 100 * torch.cat(true).numpy(), 100 * torch.cat(pred).numpy()
    error = np.abs(pred_pp - true_pp)
    picks = worst(error, task.report_items)
    rows = [[to_rgb(photo) for photo in loader.dataset[i]["images"][:PHOTOS_SHOWN]] for i in picks]
    titles = [f"#{i}: true {true_pp[i]:.2f} %, predicted {pred_pp[i]:.2f} %" for i in picks]
    return [save_scatter(true_pp, pred_pp, out / "content_scatter.png", "copper content (%)",
                         f"canet, {len(true_pp)} samples"),
            save_grid(rows, titles, out / "worst_samples.png", suptitle="largest content error first")]
