"""What the benchmarks record about where and when they ran, how fast a forward pass is, and how a script puts
its section into a results markdown, in one place."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from scrapvision.checkpoint import atomic_write


def machine() -> str:
    """CPU, core count, load at start, torch version and threads: the context a speed or wall figure needs."""
    cpu = platform.processor() or platform.machine()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()}-core CPU ({cpu}), load average {load} at start, torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s)")


def now() -> str:
    """The wall-clock date as ``date`` prints it (with the time zone), for the record."""
    return subprocess.run(["date"], capture_output=True, text=True).stdout.strip()


def locked_json_update(path: Path, change: Callable[[Any], None], empty: Callable[[], Any]) -> Any:
    """Read the JSON results ``path`` (``empty()`` when it does not exist), apply ``change`` to it in place and
    write it back, all under a file lock named after the file: processes of one benchmark run side by side
    (other seeds, folds or arms) never drop each other's results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        payload = json.loads(path.read_text()) if path.exists() else empty()
        change(payload)
        path.write_text(json.dumps(payload, indent=1))
    return payload


@torch.no_grad()
def forward_rate(model: torch.nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Images per second of ``model(x)`` in eval mode at the current thread setting, after ``warmup`` passes
    (the first pass allocates and is slower)."""
    model.eval()
    for _ in range(warmup):
        model(x)
    start = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return x.shape[0] * repeats / (time.perf_counter() - start)


def train_final(task: Any, run_dir: Path, checkpoint: str = "last.pt") -> tuple[torch.nn.Module, float]:
    """Train ``task`` with the one Trainer, then reload its final epoch's weights (so held-out data never picks
    a checkpoint), or ``best.pt``, the one the task's monitor chose on the validation split; returns the model
    in eval mode and the training seconds."""
    from scrapvision.checkpoint import load_checkpoint
    from scrapvision.trainer import Trainer

    start = time.time()
    Trainer(task, run_dir=run_dir).fit()
    train_s = time.time() - start
    model = task.build_model()
    model.load_state_dict(load_checkpoint(run_dir / checkpoint, task=task.name)["model"])
    return model.eval(), train_s


def write_section(path: Path, name: str, body: str, quick: bool = False, header: str = "") -> Path:
    """Replace the block between ``<!-- name -->`` and ``<!-- /name -->`` in ``path`` (or append it), keeping
    every other section, so that each script owns its block and hand-written notes survive a rerun.

    A quick (smoke) run goes to ``<stem>_quick.md`` next to ``path``: RESULTS.md never includes it, so a quick
    run cannot overwrite a recorded one. ``header`` starts a file that does not exist yet."""
    if quick:
        path = path.with_name(f"{path.stem}_quick{path.suffix}")
    text = path.read_text(encoding="utf-8") if path.exists() else (header or f"# {path.stem} benchmarks\n")
    block = f"<!-- {name} -->\n{body.strip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    with atomic_write(path, "w") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    return path


def validation_curve(run_dir: Path, monitor: str) -> dict[str, float]:
    """The validation ``monitor`` of every evaluated epoch of a run (from its metrics.csv), by epoch."""
    import pandas as pd

    frame = pd.read_csv(run_dir / "metrics.csv")
    frame = frame[frame[f"val_{monitor}"].notna()]
    return {str(int(e)): round(float(v), 4) for e, v in zip(frame["epoch"], frame[f"val_{monitor}"])}


def best_epoch(curve: dict[str, float]) -> str:
    """The epoch whose checkpoint ``best.pt`` keeps: the highest value, the first of ties (as the Trainer)."""
    return max(curve, key=lambda e: (curve[e], -int(e)))
