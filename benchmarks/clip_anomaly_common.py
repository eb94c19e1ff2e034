"""Shared helpers of the clip_anomaly benchmarks: train one run, score a data set, speed, result files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_env import train_final
from torch.utils.data import DataLoader, Dataset

from scrapvision.config import load_config
from scrapvision.heads.clip_anomaly import ClipAnomalyConfig, ClipAnomalyTask
from scrapvision.heads.clip_anomaly_parts.metrics import SegAnomalyMeter

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))


def make_task(overrides: list[str]) -> ClipAnomalyTask:
    return ClipAnomalyTask(load_config(ClipAnomalyConfig, None, overrides))


def train_last(overrides: list[str], run_dir: Path) -> tuple[ClipAnomalyTask, torch.nn.Module, float]:
    """Train, then reload the final epoch's weights (held-out data never picks a checkpoint)."""
    task = make_task(overrides)
    model, train_s = train_final(task, run_dir)
    return task, model, train_s


@torch.no_grad()
def score(task: ClipAnomalyTask, model: torch.nn.Module, dataset: Dataset, batch_size: int = 16) -> SegAnomalyMeter:
    """Every metric input of ``dataset`` in a meter (so folds can be pooled)."""
    model.eval()
    task.prepare_memory(model)
    meter = SegAnomalyMeter(task.class_names())
    for batch in DataLoader(dataset, batch_size=batch_size):
        meter.update(model(batch["image"]).float().softmax(1).numpy(), batch["mask"].numpy())
    return meter


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def pct(x: float) -> str:
    return f"{100 * x:.1f}" if x is not None and np.isfinite(x) else "n/a"
