"""The folder of one training run: checked before training, and its logs: ``metrics.jsonl`` (every
record), ``metrics.csv`` (one row per epoch) and the one-line epoch summaries on stderr."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .checkpoint import atomic_write, remove_stale_temporaries
from .errors import ScrapvisionError


def prepare_run_dir(run_dir: Path, resuming: bool) -> None:
    """Fail at start-up, not after an hour, when the run folder is unwritable or the disk is full, and
    never train over another run: its checkpoints would be replaced and its metrics log mixed in."""
    held = [n for n in ("last.pt", "best.pt", "metrics.jsonl") if (run_dir / n).exists()]
    if held and not resuming:
        raise ScrapvisionError(f"output folder {run_dir}: already holds a run ({', '.join(held)}); "
                               f"continue it with --resume {run_dir} or choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
        remove_stale_temporaries(run_dir)
    except OSError as exc:
        raise ScrapvisionError(f"output folder {run_dir}: not writable ({exc.strerror or exc})") from None
    free_mb = shutil.disk_usage(run_dir).free / 2**20
    if free_mb < 100:
        raise ScrapvisionError(f"output folder {run_dir}: only {free_mb:.0f} MiB free on its disk")


class RunLog:
    """Appends records to ``<run_dir>/metrics.jsonl`` and rebuilds ``metrics.csv`` from them."""

    def __init__(self, run_dir: Path, task_name: str) -> None:
        self.run_dir, self.task_name = run_dir, task_name

    def append(self, record: dict[str, Any]) -> None:
        path = self.run_dir / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:  # disk full mid-run: a clear error, like the checkpoint saves
            raise ScrapvisionError(f"cannot write {path}: {exc.strerror or exc}") from None

    def write_csv(self) -> None:
        """metrics.csv: one row per epoch, rebuilt from the JSON lines so columns stay consistent."""
        rows = read_records(self.run_dir / "metrics.jsonl")
        by_epoch = {r["epoch"]: r for r in rows if r.get("kind") == "epoch"}  # a resumed epoch replaces its first try
        rows = [by_epoch[e] for e in sorted(by_epoch)]
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns and k != "kind"]
        with atomic_write(self.run_dir / "metrics.csv", "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in columns})

    def print_epoch(self, record: dict[str, Any]) -> None:
        shown = " ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.items()
            if k not in ("kind", "step") and not isinstance(v, (list, dict))
        )
        tqdm.write(f"[{self.task_name}] {shown}", file=sys.stderr)

    def warn(self, epoch: int, message: str) -> None:
        """One warning line on stderr, kept in metrics.jsonl beside the epoch it concerns."""
        self.append({"kind": "warning", "epoch": epoch, "message": message})
        tqdm.write(f"[{self.task_name}] warning: {message}", file=sys.stderr)


def record_run(run_dir: Path, task: str, monitor: tuple[str, str], command: str) -> None:
    """``run.json``: the task, the metric that picks ``best.pt`` and every command line that trained in this
    folder (a resume adds one), so ``scrapvision report`` / ``runs`` can say exactly what made the run."""
    path = run_dir / "run.json"
    info = read_run_info(run_dir) if path.exists() else {}
    commands = [*info.get("commands", []), {"time": datetime.now().isoformat(timespec="seconds"), "command": command}]
    with atomic_write(path, "w") as handle:
        json.dump({"task": task, "monitor": list(monitor), "commands": commands}, handle, indent=1)


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """What :func:`record_run` wrote (``{}`` for a run made before it existed, or a damaged file)."""
    try:
        info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path``; a line torn by a kill or a full disk is skipped, so a resume still works."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def best_row(frame: Any, monitor: str, mode: str) -> tuple[str, Any] | None:
    """(column, row label) of the epoch ``best.pt`` holds in a ``metrics.csv`` DataFrame, found the way the
    Trainer finds it: ``monitor`` or ``val_<monitor>`` (``train_loss`` when a ``val_loss`` run never
    validated), the first best value winning. None when no such column has a value."""
    fallback = ("train_loss",) if monitor == "val_loss" else ()
    column = next((c for c in (monitor, f"val_{monitor}", *fallback) if c in frame and frame[c].notna().any()), None)
    if column is None:
        return None
    return column, frame[column].idxmax() if mode == "max" else frame[column].idxmin()


def describe_run(run_dir: Path, names: Sequence[str] = ("best.pt", "last.pt", "config.yaml", "metrics.csv",
                                                      "backbone.safetensors", "curves.png",
                                                      "run.json")) -> str:
    return "\n".join(f"  {run_dir / n}" for n in names if (run_dir / n).exists())
