"""Shared helpers of the clip_anomaly benchmarks: train one run, score a data set, speed, result files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from bench_env import train_final
from torch.utils.data import DataLoader, Dataset

from scrapvision.config import load_config
from scrapvision.heads.clip_anomaly import ClipAnomalyConfig, ClipAnomalyTask
from scrapvision.heads.clip_anomaly_parts.metrics import SegAnomalyMeter
from scrapvision.heads.segdec_parts.data import pixel_targets
from scrapvision.heads.segdec_parts.metrics import pixel_ap as segdec_pixel_ap

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))


def make_task(overrides: list[str]) -> ClipAnomalyTask:
    return ClipAnomalyTask(load_config(ClipAnomalyConfig, None, overrides))


def train_last(overrides: list[str], run_dir: Path, checkpoint: str = "last.pt"
               ) -> tuple[ClipAnomalyTask, torch.nn.Module, float]:
    """Train, then reload the final epoch's weights, or ``best.pt`` (chosen on the validation split by
    ``monitor``): held-out data never picks a checkpoint."""
    task = make_task(overrides)
    model, train_s = train_final(task, run_dir, checkpoint)
    return task, model, train_s


@torch.no_grad()
def score(task: ClipAnomalyTask, model: torch.nn.Module, dataset: Dataset, batch_size: int = 16) -> SegAnomalyMeter:
    """Every metric input of ``dataset`` in a meter (so folds can be pooled)."""
    model.eval()
    task.prepare_memory(model)
    meter = SegAnomalyMeter(task.class_names())
    for batch in DataLoader(dataset, batch_size=batch_size):
        meter.update(task.probabilities(model, batch["image"]).cpu().numpy(), batch["mask"].numpy())
    return meter


def segdec_protocol_ap(meter: SegAnomalyMeter, height: int = 128, width: int = 80, stride: int = 8,
                       dilate: int = 5) -> float:
    """Pixel AP the way segdec's benchmarks score it, so the two heads compare: truth at segdec's 128x80
    (any defect coverage), dilated by 5 px and pooled into 8x8 cells (a cell is positive when any of its
    dilated pixels is); the anomaly map resized to 128x80 and each cell scored by its maximum."""
    targets, scores = [], []
    for amap, mask in zip(meter.maps, meter.masks):
        truth = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0
        targets.append(pixel_targets(truth, stride, dilate, False, 2.0, 1.0)[0])
        small = cv2.resize(amap, (width, height), interpolation=cv2.INTER_AREA)
        scores.append(small.reshape(height // stride, stride, width // stride, stride).max((1, 3)))
    return segdec_pixel_ap(np.stack(targets), np.stack(scores))


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def pct(x: float) -> str:
    return f"{100 * x:.1f}" if x is not None and np.isfinite(x) else "n/a"
