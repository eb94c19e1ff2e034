"""``scrapvision tune``: post-processing chosen on the validation split, kept in a YAML next to the checkpoint.

The head searches its own parameters (:meth:`Task.tune`, on probabilities computed once). This module owns
what the heads share: the validation split, the file ``<CKPT stem>.tuned.yaml`` and its place in the layers
``eval`` and ``predict`` build a task from: checkpoint config <- tuned values <- command line (``--set``,
``--tta``). The file records the checkpoint's SHA-256, so values tuned for other weights are never applied
silently (a retrained ``best.pt`` with an old file next to it is a one-line error).
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from .checkpoint import atomic_write
from .config import _deep_update, from_dict, read_yaml
from .errors import ConfigError, ScrapvisionError
from .tta import TTA_MODES

SUFFIX = ".tuned.yaml"


def tuned_path(checkpoint: str | Path) -> Path:
    """``runs/x/best.pt`` -> ``runs/x/best.tuned.yaml`` (``best.onnx`` and ``best.int8.onnx`` share it)."""
    checkpoint = Path(checkpoint)
    path = checkpoint / "last.pt" if checkpoint.is_dir() else checkpoint
    if path.name.endswith(".int8.onnx"):
        path = path.with_name(path.name.removesuffix(".int8.onnx") + ".onnx")
    return path.with_suffix(SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_tuned(checkpoint: str | Path, task_name: str) -> dict[str, Any] | None:
    """The tuned values next to ``checkpoint``, checked against its task and (for a ``.pt``) its weights."""
    path = tuned_path(checkpoint)
    if not path.is_file():
        return None
    data = read_yaml(path)
    if data.get("task") != task_name:
        raise ConfigError(f"{path}: was tuned for task {data.get('task')!r}, not {task_name!r}")
    for key in ("config", "extras"):
        if not isinstance(data.get(key) or {}, dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping")
    if data.get("tta") not in (None, *TTA_MODES):
        raise ConfigError(f"{path}: tta {data['tta']!r} is not one of {', '.join(TTA_MODES)}")
    weights = path.with_suffix("").with_suffix(".pt")
    if weights.is_file() and data.get("checkpoint_sha256") not in (None, file_sha256(weights)):
        raise ConfigError(f"{path}: was tuned for other weights than {weights.name} (rerun `scrapvision tune` "
                          "or delete the file)")
    return data


def apply_tuned(config_cls: type, base: dict[str, Any], extras: dict[str, Any], tuned: dict[str, Any] | None,
                checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, extras) of a checkpoint with the tuned values over them; a bad value names the file."""
    if not tuned:
        return base, extras
    merged = copy.deepcopy(base)
    try:
        _deep_update(merged, tuned.get("config") or {})
        from_dict(config_cls, merged)
    except ConfigError as exc:
        raise ConfigError(f"{tuned_path(checkpoint)}: {exc}") from None
    return merged, {**extras, **(tuned.get("extras") or {})}


def tune(name: str, checkpoint: str | Path, overrides: Sequence[str] = (), data: str | Path | None = None,
         device: str = "cpu", tta: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Run the head's search on the validation split of the checkpoint's data (or ``data``) and write
    ``<CKPT stem>.tuned.yaml``; returns its path and contents."""
    from .api import load_trained

    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".onnx":
        raise ScrapvisionError(f"tune: checkpoint {checkpoint}: needs the .pt checkpoint, not an ONNX file")
    checkpoint = checkpoint / "last.pt" if checkpoint.is_dir() else checkpoint
    task, model = load_trained(name, checkpoint, overrides, data, device=device, tuned=False, tta=tta)
    val = task.build_datasets()[1]
    if len(val) == 0:
        where = getattr(task.cfg.data, "root", "") or "the built-in synthetic data"
        raise ScrapvisionError(f"tune: checkpoint {checkpoint}: {where} has no validation split to tune on "
                               "(tuning on the test images would make their score meaningless)")
    train_cfg = task.cfg.train
    loader = DataLoader(val, batch_size=train_cfg.eval_batch_size or train_cfg.batch_size, shuffle=False,
                        num_workers=train_cfg.num_workers, collate_fn=task.collate_fn())
    model.eval()
    with torch.no_grad():
        result = task.tune(model, loader)
    doc = {"task": name, "checkpoint": checkpoint.name, "checkpoint_sha256": file_sha256(checkpoint),
           "tuned_on": f"validation split of {getattr(task.cfg.data, 'root', '') or 'the synthetic data'}, "
                       f"{len(val)} images", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "tta": task.tta, "config": result.get("config", {}), "extras": result.get("extras", {}),
           "validation": result.get("validation", {})}
    path = tuned_path(checkpoint)
    with atomic_write(path, "w") as handle:
        handle.write(f"# written by `scrapvision tune --task {name}`; eval and predict with this checkpoint use "
                     "these values unless --set / --tta say otherwise (--untuned ignores this file)\n")
        yaml.safe_dump(doc, handle, sort_keys=False)
    return path, doc
