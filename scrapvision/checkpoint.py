"""Atomic, pickle-free checkpoint I/O.

Checkpoints are written to a temporary file in the same folder, flushed to disk, then renamed over the
target, so a reader never sees a half-written file, even if the process is killed mid-save. They are read
with ``torch.load(weights_only=True)`` (no code can run from the file) or as safetensors.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, ScrapvisionError, first_line

FORMAT = "scrapvision-checkpoint/1"


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path``; on success fsync and rename it over ``path``.

    An ``OSError`` (disk full, no permission...) removes the temporary file and becomes a one-line
    ``ScrapvisionError`` naming ``path``: it is the user's disk, not a bug, and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ScrapvisionError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Serialise to memory first, then write atomically (the file is complete or absent)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    with atomic_write(path) as handle:
        handle.write(buffer.getbuffer())
    return Path(path)


def atomic_copy(source: str | Path, target: str | Path) -> Path:
    """Copy ``source`` over ``target`` through :func:`atomic_write` (complete or untouched, even on a full disk)."""
    with open(source, "rb") as src, atomic_write(target) as handle:
        shutil.copyfileobj(src, handle)
    return Path(target)


def model_payload(task: Any, model: torch.nn.Module, metrics: Mapping[str, float] | None = None) -> dict[str, Any]:
    """What eval, predict and export need: task name, the config that built the model, weights, extras
    (with what the task chose on validation when ``metrics``, the epoch's logged metrics, are given)."""
    from .config import to_dict

    extras = {**task.checkpoint_extras(), **(task.validation_extras(metrics) if metrics else {})}
    return {"task": task.name, "config": to_dict(task.cfg), "model": model.state_dict(), "extras": extras}


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete ``.*.tmp`` files that a process killed in the middle of ``atomic_write`` left behind."""
    stale = list(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


def load_checkpoint(path: str | Path, task: str | None = None, mmap: bool = False) -> dict[str, Any]:
    """Load a scrapvision checkpoint safely; wrong task, bad file or pickled code -> CheckpointError.
    ``mmap``: tensors stay in the file until touched (for a look at the config, not for training)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad checkpoint for the user
        reason = first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains pickled Python objects, which are refused (only tensors and plain data load)"
        raise CheckpointError(f"checkpoint {path}: cannot be loaded: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a scrapvision checkpoint (no '{FORMAT}' marker)")
    if task is not None and payload.get("task") != task:
        raise CheckpointError(f"checkpoint {path}: was trained for task {payload.get('task')!r}, not {task!r}")
    return payload


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a bare weights file: ``.safetensors``, or a torch state dict (optionally wrapped)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path}: not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        reason = first_line(exc)
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains pickled Python objects, which are refused"
        raise CheckpointError(f"weights file {path}: cannot be loaded: {reason}") from None
    if isinstance(state, dict):
        if state.get("format") == FORMAT:
            state = state["model"]
        else:
            for key in ("state_dict", "model", "model_state_dict", "module"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path}: expected a mapping of parameter names to tensors")
    return state
