"""Shared helpers of the segdec benchmarks: one cross-validation run, pooled metrics, the result files."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from bench_env import train_final
from torch.utils.data import DataLoader

from scrapvision.config import load_config
from scrapvision.heads.segdec import SegDecConfig, SegDecTask
from scrapvision.heads.segdec_parts.metrics import decision_metrics

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data")) / "kolektorsdd"
KEYS = ("ap", "ap_trapz", "auroc", "f1", "fp", "fn")


def run_fold(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """Train one fold with the final epoch's weights (the test fold never picks a checkpoint), then score it."""
    cfg = load_config(SegDecConfig, None, overrides)
    task = SegDecTask(cfg)
    model, train_s = train_final(task, run_dir)
    test = task.build_eval_dataset()  # the test fold (build_datasets gives train and validation)
    loader = DataLoader(test, batch_size=16)
    r = task.score(model, loader)
    metrics = decision_metrics(r["label"] > 0.5, r["score"])
    names = [s.name for s in test.samples]
    return {"metrics": metrics, "train_s": round(train_s, 1), "scores": r["score"].tolist(),
            "labels": r["label"].tolist(), "names": names}


def summarise(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-fold numbers, their mean, and the metrics of all folds' test scores pooled (as Tabernik et al.)."""
    mean = {k: float(np.mean([f["metrics"][k] for f in folds])) for k in KEYS}
    labels = np.concatenate([f["labels"] for f in folds]) > 0.5
    scores = np.concatenate([f["scores"] for f in folds])
    pooled = decision_metrics(labels, scores) if len(folds) > 1 else folds[0]["metrics"]
    return {"per_fold": [{k: f["metrics"][k] for k in KEYS} for f in folds], "mean": mean,
            "pooled": {k: pooled[k] for k in KEYS}, "train_s": [f["train_s"] for f in folds]}


def recipe(overrides: list[str]) -> str:
    """The training settings a run used, read back from its config (so the markdown cannot drift from it)."""
    cfg = load_config(SegDecConfig, None, overrides)
    m, lc, t = cfg.model, cfg.loss, cfg.train
    schedule = f"decay (beta {lc.decay_beta})" if lc.schedule == "decay" else lc.schedule
    return (f"batch {t.batch_size}, AdamW lr {cfg.optim.lr:g} (cosine), {lc.seg_loss.upper()} segmentation loss, "
            f"{schedule} loss balance, label dilation {lc.dilate}, distance-transform weighting "
            f"{'on' if lc.weighted else 'off'}, SE {'on' if m.attention else 'off'}, atrous "
            f"{'on' if m.atrous else 'off'}, stop-gradient {'on in full supervision' if m.stop_gradient else 'off'}")


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def read_runs(prefix: str, keys: Any) -> dict[str, dict[str, Any]]:
    """``{key: payload}`` of every ``<prefix>_<key>.json`` present, in ``keys`` order (runs may be separate
    processes, each writing its own file)."""
    paths = {k: RESULTS / f"{prefix}_{k}.json" for k in keys}
    return {k: json.loads(path.read_text()) for k, path in paths.items() if path.exists()}


def commands_line(runs: dict[str, dict[str, Any]]) -> str:
    """The distinct commands that produced ``runs``, as a markdown line."""
    commands = {p["command"].strip() for r in runs.values() for p in r.get("processes") or [r]}
    return "Commands: " + ", ".join(sorted(f"`{c}`" for c in commands)) + "  "


def pct(x: float) -> str:
    return f"{100 * x:.1f}" if np.isfinite(x) else "n/a"
