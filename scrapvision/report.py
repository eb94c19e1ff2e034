"""What a person looks at after a run: ``eval --report DIR`` pictures and the one-page ``report.html``.

The page is self-contained (every image inlined as base64, no script, no server), so it can be mailed or
opened from a USB stick.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from .checkpoint import atomic_write
from .errors import ScrapvisionError
from .plots import plot_curves
from .runlog import best_row, read_run_info
from .task import Task

#: the manifest ``eval --report DIR`` leaves in DIR; ``scrapvision report`` looks for it under the run folder
EVAL_MANIFEST = "eval_report.json"

STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
pre{background:#f4f4f4;padding:.8em;white-space:pre-wrap;font-size:12px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}figcaption{font-size:12px;color:#555}"""


def write_eval_report(task: Task, model: nn.Module, metrics: Mapping[str, Any], out: Path, checkpoint: str) -> Path:
    """Run the head's :meth:`Task.write_report` into ``out`` and leave a manifest beside its files."""
    from .api import eval_loader

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ScrapvisionError(f"--report {out}: cannot create ({exc.strerror or exc})") from None
    model.eval()
    files = task.write_report(model, eval_loader(task), out)
    manifest = {"task": task.name, "checkpoint": str(checkpoint), "data": task.cfg.data.root or "synthetic",
                "time": datetime.now().isoformat(timespec="seconds"), "metrics": dict(metrics),
                "files": [str(Path(f).relative_to(out)) for f in files]}
    with atomic_write(out / EVAL_MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1)
    return out / EVAL_MANIFEST


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file() and ((path / "metrics.csv").is_file() or (path / "run.json").is_file())


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))

    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_section(run_dir: Path, monitor: Sequence[str]) -> str:
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return "<p>no metrics.csv (training did not finish an epoch)</p>"
    frame = pd.read_csv(path)
    rows = [{"": "last epoch", **frame.iloc[-1].to_dict()}]
    best = best_row(frame, *monitor) if len(monitor) == 2 else None
    if best:
        rows.insert(0, {"": f"best epoch ({best[0]}, {monitor[1]})", **frame.loc[best[1]].to_dict()})
    columns = [c for c in rows[0] if c and not all(isinstance(r[c], float) and math.isnan(r[c]) for r in rows)]
    return _table([{"metric": k, **{str(r[""]): r[k] for r in rows}} for k in columns])


def _eval_section(manifest_path: Path) -> str:
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScrapvisionError(f"report: {manifest_path}: not readable ({exc})") from None
    folder = manifest_path.parent
    parts = [f"<h3>{html.escape(str(folder))}</h3>",
             f"<p>checkpoint {html.escape(str(manifest.get('checkpoint')))}, data {html.escape(str(manifest.get('data')))}, "
             f"{html.escape(str(manifest.get('time')))}</p>",
             _table([{"metric": k, "value": v} for k, v in manifest.get("metrics", {}).items()])]
    for name in manifest.get("files", []):
        path = folder / name
        if path.suffix == ".png" and path.is_file():
            parts.append(_img(path, Path(name).stem.replace("_", " ")))
        elif path.suffix == ".csv" and path.is_file():
            parts.append(f"<h4>{html.escape(Path(name).stem.replace('_', ' '))}</h4>"
                         + _table(pd.read_csv(path).to_dict("records")))
    return "\n".join(parts)


def write_html_report(run_dir: Path, eval_dirs: Sequence[Path] = (), out: Path | None = None) -> Path:
    """``run_dir/report.html``: command, config, curves, final metrics, and the pictures of every
    ``eval --report`` folder inside the run folder or named in ``eval_dirs``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ScrapvisionError(f"report: {run_dir}: folder not found")
    if not is_run_dir(run_dir):
        raise ScrapvisionError(f"report: {run_dir}: not a run folder (no config.yaml and metrics.csv from `scrapvision train`)")
    manifests = sorted(run_dir.rglob(EVAL_MANIFEST))
    for folder in eval_dirs:
        if not (Path(folder) / EVAL_MANIFEST).is_file():
            raise ScrapvisionError(f"report --eval {folder}: no {EVAL_MANIFEST} (write it with `scrapvision eval --report`)")
        manifests.append(Path(folder) / EVAL_MANIFEST)
    info = read_run_info(run_dir)
    task = info.get("task") or run_dir.parent.name
    if not (run_dir / "curves.png").is_file() and (run_dir / "metrics.csv").is_file():  # a run from before curves.png
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png", *(info.get("monitor") or ("val_loss", "min")))
    commands = info.get("commands") or [{"time": "?", "command": "(not recorded: run made before run.json existed)"}]
    body = [f"<h1>{html.escape(task)}: {html.escape(run_dir.name)}</h1>",
            "<h2>Command</h2>",
            "<pre>" + "\n".join(html.escape(f"# {c['time']}\n{c['command']}") for c in commands) + "</pre>",
            "<h2>Curves</h2>",
            _img(run_dir / "curves.png", "training curves") if (run_dir / "curves.png").is_file() else "<p>no curves.png</p>",
            "<h2>Final metrics</h2>", _metrics_section(run_dir, info.get("monitor", ())),
            "<h2>Evaluation</h2>", *(_eval_section(m) for m in manifests),
            *(() if manifests else ("<p>none: write pictures with <code>scrapvision eval --report DIR</code></p>",)),
            "<h2>Config</h2>", f"<pre>{html.escape((run_dir / 'config.yaml').read_text(encoding='utf-8'))}</pre>"]
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(task)} {html.escape(run_dir.name)}"
            f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    out = Path(out) if out else run_dir / "report.html"
    with atomic_write(out, "w") as handle:
        handle.write(page)
    return out
