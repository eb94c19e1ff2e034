"""``scrapvision runs [DIR]``: one line per run folder under DIR (default ``runs/``), newest first."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .errors import ScrapvisionError
from .report import is_run_dir
from .runlog import best_row, read_run_info

COLUMNS = ("date", "task", "epochs", "best", "data", "run")


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Task, start date, epochs done / planned, best monitored metric, data folder of one run folder."""
    info = read_run_info(run_dir)
    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    commands = info.get("commands") or []
    started = commands[0]["time"] if commands else datetime.fromtimestamp(run_dir.stat().st_mtime).isoformat(timespec="seconds")
    done, best = 0, "-"
    if (run_dir / "metrics.csv").is_file():
        frame = pd.read_csv(run_dir / "metrics.csv")
        done = int(frame["epoch"].max()) if len(frame) else 0
        found = best_row(frame, *(info.get("monitor") or ("val_loss", "min"))[:2])
        if found:
            best = f"{found[0]}={frame.loc[found[1], found[0]]:.4g}"
    data = (cfg.get("data") or {}).get("root") if isinstance(cfg.get("data"), dict) else None
    planned = (cfg.get("train") or {}).get("epochs", "?") if isinstance(cfg.get("train"), dict) else "?"
    return {"date": started.replace("T", " "), "task": info.get("task") or run_dir.parent.name,
            "epochs": f"{done}/{planned}", "best": best, "data": data or "synthetic", "run": str(run_dir)}


def list_runs(root: Path) -> list[dict[str, Any]]:
    """Every run folder at any depth under ``root``, newest first."""
    if not root.is_dir():
        raise ScrapvisionError(f"runs: {root}: folder not found")
    rows = [run_summary(p.parent) for p in root.rglob("config.yaml") if is_run_dir(p.parent)]
    return sorted(rows, key=lambda r: r["date"], reverse=True)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain aligned columns, one run a line."""
    if not rows:
        return "no runs"
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
