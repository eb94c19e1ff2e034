"""Streaming, resumable, shardable prediction shared by every head.

A head describes its inputs (``Task.predict_dataset``: a Dataset with one string key per item) and turns a
batch into CSV rows (``Task.predict_batch``). This runner does the rest:

- a DataLoader with worker processes; memory is bounded by ``(2 * workers + 1) * batch_size`` decoded
  items plus one row list per batch, whatever the number of inputs;
- rows are appended to ``.parts/part<rank>.csv`` and fsynced after every batch, so an interrupted
  run resumes where it stopped and never redoes or loses a finished item (a torn last line is dropped);
- under ``torchrun`` rank r takes items r, r+W, r+2W...; rank 0 merges the parts into
  ``predictions.csv`` in input order (this step holds the rows, not the images, in memory).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from .checkpoint import atomic_write
from .distributed import barrier, init_distributed
from .errors import DataError, ScrapvisionError


def _completed_keys(part: Path, key: str) -> set[str]:
    """Keys already written to ``part``; a torn last line (killed mid-write) is cut off first."""
    if not part.exists():
        return set()
    data = part.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(part, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
        data = data[: data.rfind(b"\n") + 1]
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    if reader.fieldnames and key not in reader.fieldnames:
        raise DataError(f"{part}: has no {key!r} column; delete it to start the prediction again")
    return {row[key] for row in reader}


class _RowWriter:
    """Appends CSV rows and makes them durable (flush + fsync) once per batch."""

    def __init__(self, path: Path, columns: Sequence[str] | None) -> None:
        self.path, self.columns = path, list(columns) if columns else None
        self.handle = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.handle is None:
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            if self.columns is None:
                self.columns = list(rows[0])
            if not fresh:
                with open(self.path, encoding="utf-8") as handle:
                    self.columns = next(csv.reader(handle))
            self.handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
            self.writer = csv.DictWriter(self.handle, fieldnames=self.columns, extrasaction="raise")
            if fresh:
                self.writer.writeheader()
        self.writer.writerows(rows)
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def merge_parts(parts: Sequence[Path], keys: Sequence[str], key: str, target: Path) -> Path:
    """Write the rows of every part into ``target`` in input order (atomically)."""
    rows_by_key: dict[str, list[dict[str, str]]] = {}
    columns: list[str] | None = None
    for part in parts:
        if not part.exists():
            continue
        with open(part, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = columns or list(reader.fieldnames or [])
            for row in reader:
                rows_by_key.setdefault(row[key], []).append(row)
    with atomic_write(target, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or [key])
        writer.writeheader()
        for k in keys:
            writer.writerows(rows_by_key.get(k, []))
    return target


def run_predictions(task: Any, model: torch.nn.Module, inputs: Path, out: Path, args: argparse.Namespace) -> Path:
    """Predict every item of ``task.predict_dataset(inputs, args)`` into ``out/predictions.csv``."""
    info = init_distributed(torch.device("cpu"))  # gloo: the ranks only meet at barriers
    dataset = task.predict_dataset(inputs, args)
    keys = list(dataset.keys)
    if len(set(keys)) != len(keys):
        raise DataError(f"input {inputs}: two inputs share a name; prediction keys must be unique")
    if not keys:
        raise DataError(f"input {inputs}: nothing to predict")
    key = task.predict_key
    part = out / ".parts" / f"part{info.rank}.csv"
    part.parent.mkdir(parents=True, exist_ok=True)
    done = set().union(*(_completed_keys(p, key) for p in sorted(part.parent.glob("part*.csv"))))
    todo = [i for i in range(info.rank, len(keys), info.world_size) if keys[i] not in done]
    workers = int(getattr(args, "workers", 0) or 0)
    loader = DataLoader(Subset(dataset, todo), batch_size=int(getattr(args, "batch_size", 8) or 8),
                        num_workers=workers, prefetch_factor=2 if workers else None,
                        collate_fn=task.collate_fn(), shuffle=False)
    writer = _RowWriter(part, task.predict_columns or None)
    try:
        with torch.inference_mode(), tqdm(total=len(todo), desc=f"{task.name} predict", unit="img",
                                          disable=info.rank != 0 or not os.isatty(2), leave=False) as bar:
            for batch in loader:
                rows = task.predict_batch(model, batch, out, args)
                if any(key not in row for row in rows):
                    raise ScrapvisionError(f"task {task.name}: predict_batch rows must carry the {key!r} column")
                writer.write(rows)
                bar.update(len(batch[key]) if isinstance(batch, dict) and key in batch else len(rows))
    finally:
        writer.close()
    barrier(info)
    target = out / "predictions.csv"
    if info.rank == 0:
        parts = sorted((out / ".parts").glob("part*.csv"))  # also parts of an earlier run with another W
        merge_parts(parts, keys, key, target)
        result = task.finish_predictions(target, out, args)
    else:
        result = target
    barrier(info)
    return result
