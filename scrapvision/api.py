"""Library entry points behind the CLI: build a task from config, train it, load a trained one, evaluate."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint
from .config import load_config
from .errors import CheckpointError, ScrapvisionError, first_line
from .task import Task


def get_task_class(name: str) -> type[Task]:
    from . import get_task

    return get_task(name)


def read_checkpoint(path: str | Path, name: str, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint of task ``name``, brought to today's layout by the task's ``upgrade_checkpoint``
    (``mmap``: its tensors read only when touched, for a look at the config)."""
    return get_task_class(name).upgrade_checkpoint(load_checkpoint(path, task=name, mmap=mmap))


def trained_data_root(name: str, checkpoint: str | Path) -> str:
    """``data.root`` of the config a checkpoint (``.pt``, run folder or exported ``.onnx``) was trained with."""
    path = Path(checkpoint)
    if path.suffix == ".onnx":
        from .export import read_onnx_metadata

        config = read_onnx_metadata(path)["config"]
    else:
        config = read_checkpoint(path / "last.pt" if path.is_dir() else path, name, mmap=True)["config"]
    return str((config.get("data") or {}).get("root", ""))


def _with_data_root(cfg: Any, data: str | Path | None) -> Any:
    if data is None:
        return cfg
    if not hasattr(cfg, "data") or not hasattr(cfg.data, "root"):
        raise ScrapvisionError("this task's config has no data.root, so --data cannot be used")
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=str(data)))


def build_task(
    name: str,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    data: str | Path | None = None,
    base: dict[str, Any] | None = None,
) -> Task:
    """Task ``name`` with defaults <- ``base`` (a checkpoint's config) <- YAML ``config`` <- ``overrides``."""
    cls = get_task_class(name)
    cfg = load_config(cls.Config, config, overrides, base=base)
    return cls(_with_data_root(cfg, data))


def train(name: str, config: str | Path | None = None, overrides: Sequence[str] = (),
          data: str | Path | None = None, run_dir: str | Path | None = None, resume: str | Path | None = None,
          command: str | None = None):
    """Train task ``name``; with ``resume`` the checkpoint's config is the base and the run folder is reused.
    ``command`` is recorded in the run folder (default: this process's command line)."""
    from .trainer import Trainer

    base = read_checkpoint(resume, name)["config"] if resume else None
    task = build_task(name, config, overrides, data, base=base)
    return Trainer(task, run_dir=run_dir, resume=resume, command=command).fit()


def _tuned_task(name: str, checkpoint: str | Path, base: dict[str, Any], extras: dict[str, Any],
                overrides: Sequence[str], data: str | Path | None, tuned: bool, tta: str | None) -> Task:
    """The task of a checkpoint's config and extras, with its ``.tuned.yaml`` values over them (when
    ``tuned``) and the command line (``overrides``, ``tta``) over those."""
    from .tuning import apply_tuned, read_tuned

    values = read_tuned(checkpoint, name) if tuned else None
    base, extras = apply_tuned(get_task_class(name).Config, base, extras, values, checkpoint)
    task = build_task(name, None, overrides, data, base=base)
    task.load_extras(extras)
    if values and not _config_has_tta(task) and values.get("tta"):
        task.tta = str(values["tta"])  # heads without a tta config key keep the mode they were tuned with
    if tta is not None:
        if tta != "none" and not task.supports_tta:
            raise ScrapvisionError(f"--tta {tta}: task {name!r} has no flip test-time augmentation")
        task.tta = tta
    return task


def _config_has_tta(task: Task) -> bool:
    return any(hasattr(getattr(task.cfg, group, None), "tta") for group in ("post", "eval"))


def load_trained(
    name: str, checkpoint: str | Path, overrides: Sequence[str] = (), data: str | Path | None = None,
    device: str | torch.device = "cpu", tuned: bool = True, tta: str | None = None,
) -> tuple[Task, nn.Module]:
    """Rebuild the task and model a checkpoint was trained with, weights loaded, in eval mode; with
    ``tuned``, the post-processing of ``scrapvision tune`` (``CKPT.tuned.yaml``) when it exists."""
    payload = read_checkpoint(checkpoint, name)
    base = dict(payload["config"])
    model_cfg = base.get("model")
    if isinstance(model_cfg, dict) and model_cfg.get("weights"):
        base["model"] = {**model_cfg, "weights": ""}  # the checkpoint already holds every weight
    task = _tuned_task(name, checkpoint, base, payload.get("extras", {}), overrides, data, tuned, tta)
    model = task.build_model()
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()  # torch's first line only says "Error(s) in loading state_dict"
        detail = lines[1].strip() if len(lines) > 1 else first_line(exc)
        raise CheckpointError(f"checkpoint {checkpoint}: does not fit the model of this config ({detail[:240]})") from None
    return task, model.to(device).eval()


def load_engine(name: str, checkpoint: str | Path, overrides: Sequence[str] = (), data: str | Path | None = None,
                engine: str = "torch", device: str | torch.device = "cpu", tuned: bool = True,
                tta: str | None = None, precision: str = "auto") -> tuple[Task, nn.Module]:
    """The task plus a callable model: ``torch``, ``onnx`` (ONNX Runtime), ``openvino``, or on ``auto`` the
    one :func:`scrapvision.engines.auto_engine` picks on CPU (torch on CUDA).

    With an exported engine and a ``.pt`` checkpoint, ``CKPT.onnx`` is exported next to it when missing,
    older than the checkpoint, or exported with other dynamic axes (an older version fixed canet's photo count).
    A ``.onnx`` checkpoint (``scrapvision export``, fp32 or int8) runs on OpenVINO with ``engine="openvino"``,
    else on ONNX Runtime. ``precision="bf16"``: torch under bfloat16 autocast (``auto`` then means torch), or
    OpenVINO with bf16 inference; ``"auto"``: fp32, except that ``engine="auto"`` may pick a bf16 engine where it
    is faster and close enough (:func:`scrapvision.engines.auto_engine`); ``"fp32"`` never runs bf16.
    """
    from .engines import auto_engine, bf16_autocast, cached_onnx, inference_layout, open_engine

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / "last.pt"
    fixed = "fp32" if precision == "auto" else precision  # only --engine auto chooses bf16 by itself
    if checkpoint.suffix == ".onnx":
        return _load_exported(name, checkpoint, overrides, data, engine, tuned, tta, fixed)
    task, model = load_trained(name, checkpoint, overrides, data, device=device, tuned=tuned, tta=tta)
    if fixed == "bf16" and engine in ("auto", "torch"):
        return task, bf16_autocast(inference_layout(model))
    if engine == "auto" and torch.device(device).type == "cpu":
        return task, auto_engine(task, model, checkpoint, precision) or inference_layout(model)
    if engine in ("onnx", "openvino"):
        return task, open_engine(engine, cached_onnx(task, model, checkpoint), fixed)
    return task, inference_layout(model)


def _load_exported(name: str, path: Path, overrides: Sequence[str], data: str | Path | None, engine: str,
                   tuned: bool, tta: str | None, precision: str) -> tuple[Task, nn.Module]:
    from .engines import installed, open_engine
    from .export import read_onnx_metadata

    if engine == "torch":
        raise ScrapvisionError(f"--engine torch: {path} is an exported graph; give the .pt checkpoint it came from")
    meta = read_onnx_metadata(path)
    if meta["task"] != name:
        raise CheckpointError(f"ONNX model {path}: was exported for task {meta['task']!r}, not {name!r}")
    base = get_task_class(name).upgrade_checkpoint({"config": meta["config"]})["config"]
    task = _tuned_task(name, path, base, meta["extras"], overrides, data, tuned, tta)
    if engine == "auto":
        engine = "onnx" if precision == "fp32" and (installed("onnx") or not installed("openvino")) else "openvino"
    return task, open_engine(engine, path, precision)


def eval_loader(task: Task, batch_size: int | None = None) -> DataLoader:
    """The task's evaluation set in a fixed order (what ``eval`` scores and ``eval --report`` pictures)."""
    dataset = task.build_eval_dataset()
    if len(dataset) == 0:
        raise ScrapvisionError(f"task {task.name}: the evaluation set is empty")
    return DataLoader(
        dataset,
        batch_size=batch_size or task.cfg.train.eval_batch_size or task.cfg.train.batch_size,
        shuffle=False,
        num_workers=task.cfg.train.num_workers,
        collate_fn=task.collate_fn(),
    )


def evaluate(task: Task, model: nn.Module, batch_size: int | None = None) -> dict[str, float]:
    loader = eval_loader(task, batch_size)
    model.eval()
    return task.evaluate(model, loader)
