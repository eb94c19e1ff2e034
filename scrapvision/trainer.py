"""The one training loop: device, AMP, DDP, cosine schedule, clipping, atomic checkpoints, logs, resume.

Reproducibility: every epoch re-seeds the RNGs from ``(seed, epoch)`` and the sample order comes from a
generator seeded the same way, so a run resumed from the checkpoint of epoch ``k`` continues exactly as
the uninterrupted run would. ``train.batch_size`` is the *global* batch: under torchrun each of the W
ranks takes ``batch_size / W`` samples of the same permutation, so W processes step like one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .checkpoint import (
    atomic_copy,
    atomic_write,
    load_checkpoint,
    model_payload,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import save_config
from .distributed import DistInfo, all_reduce_mean, barrier, broadcast_object, cleanup, init_distributed
from .errors import ScrapvisionError
from .task import Task


class TrainingDiverged(ScrapvisionError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; under torchrun each rank takes its LOCAL_RANK GPU."""
    import os

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScrapvisionError(f"train.device={name!r} but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


class EpochSampler(Sampler[int]):
    """One shared permutation per epoch, split into rank-interleaved shards of the global batch."""

    def __init__(self, task: Task, dataset: Dataset, seed: int, info: DistInfo) -> None:
        self.task, self.dataset, self.seed, self.info = task, dataset, seed, info
        self.epoch = 0
        self._order: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        order = list(self.task.epoch_indices(self.dataset, epoch, generator))
        usable = len(order) - len(order) % self.info.world_size
        self._order = order[self.info.rank : usable : self.info.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def cosine_lambda(total_steps: int, warmup_steps: int, min_ratio: float):
    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        t = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


@dataclass
class FitResult:
    run_dir: Path
    best_path: Path
    last_path: Path
    best_metric: float
    metrics: dict[str, float]


class Trainer:
    """Fits ``task`` with its ``cfg.optim`` and ``cfg.train``; writes everything under one run folder."""

    def __init__(self, task: Task, run_dir: str | Path | None = None, resume: str | Path | None = None) -> None:
        self.task = task
        self.cfg = task.cfg
        self.tcfg = task.cfg.train
        self.device = pick_device(self.tcfg.device)
        self.info = init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.resume_payload = load_checkpoint(resume, task=task.name) if resume else None
        if run_dir is None and resume is not None:
            resume_path = Path(resume)
            run_dir = resume_path if resume_path.is_dir() else resume_path.parent
        self.run_dir = Path(broadcast_object(str(run_dir or self._new_run_dir()), self.info))
        self.use_amp = self.tcfg.amp and self.device.type == "cuda"
        if self.info.is_main:
            self._check_output_dir()

    # ------------------------------------------------------------------ setup
    def _new_run_dir(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(self.tcfg.out_dir) / self.task.name / stamp

    def _check_output_dir(self) -> None:
        """Fail at start-up, not after an hour, when the run folder is unwritable or the disk is full, and
        never train over another run: its checkpoints would be replaced and its metrics log mixed in."""
        held = [n for n in ("last.pt", "best.pt", "metrics.jsonl") if (self.run_dir / n).exists()]
        if held and self.resume_payload is None:
            raise ScrapvisionError(f"output folder {self.run_dir}: already holds a run ({', '.join(held)}); "
                                   f"continue it with --resume {self.run_dir} or choose another --out")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / ".write-test"
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
            remove_stale_temporaries(self.run_dir)
        except OSError as exc:
            raise ScrapvisionError(f"output folder {self.run_dir}: not writable ({exc.strerror or exc})") from None
        free_mb = shutil.disk_usage(self.run_dir).free / 2**20
        if free_mb < 100:
            raise ScrapvisionError(f"output folder {self.run_dir}: only {free_mb:.0f} MiB free on its disk")

    def _loader(self, dataset: Dataset, sampler: Sampler | None, batch_size: int, shuffle_free: bool) -> DataLoader:
        workers = self.tcfg.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            collate_fn=self.task.collate_fn(),
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ loop
    def fit(self) -> FitResult:
        try:
            return self._fit()
        finally:
            cleanup(self.info)

    def _fit(self) -> FitResult:
        cfg, tcfg, info = self.cfg, self.tcfg, self.info
        seed_everything(tcfg.seed)
        if self.resume_payload is not None:
            self.task.load_extras(self.resume_payload.get("extras", {}))
        train_set, val_set = self.task.build_datasets()
        if len(train_set) == 0:
            raise ScrapvisionError(f"task {self.task.name}: the training set is empty")
        if tcfg.batch_size % info.world_size:
            raise ScrapvisionError(
                f"train.batch_size={tcfg.batch_size} is the global batch and must divide by the "
                f"{info.world_size} processes"
            )
        seed_everything(tcfg.seed)
        model = self.task.build_model().to(self.device)
        if info.enabled and self.device.type == "cuda":
            # PyTorch's SyncBatchNorm is GPU-only: on CPU ranks batch statistics stay per rank.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay
        )
        sampler = EpochSampler(self.task, train_set, tcfg.seed, info)
        sampler.set_epoch(0)
        loader = self._loader(train_set, sampler, tcfg.batch_size // info.world_size, True)
        steps_per_epoch = max(1, len(loader))
        total = steps_per_epoch * tcfg.epochs
        warmup = int(cfg.optim.warmup_epochs * steps_per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_lambda(total, warmup, cfg.optim.min_lr_ratio))
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        metric_name, mode = self.task.monitor
        best = -math.inf if mode == "max" else math.inf
        start_epoch, step = 0, 0
        if self.resume_payload is not None:
            payload = self.resume_payload
            model.load_state_dict(payload["model"])
            optimizer.load_state_dict(payload["optimizer"])
            scheduler.load_state_dict(payload["scheduler"])
            if payload.get("scaler"):
                scaler.load_state_dict(payload["scaler"])
            start_epoch, step = int(payload["epoch"]), int(payload["step"])
            best = float(payload.get("best", best))
        raw_model = model
        if info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        if info.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
        val_loader = self._loader(val_set, None, tcfg.eval_batch_size or tcfg.batch_size, False) if len(val_set) else None
        last_metrics: dict[str, float] = {}
        t_start = time.time()
        for epoch in range(start_epoch, tcfg.epochs):
            seed_everything(epoch_seed(tcfg.seed, epoch) + info.rank)
            sampler.set_epoch(epoch)
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            model.train()
            running, seen = 0.0, 0
            bar = tqdm(
                loader,
                desc=f"{self.task.name} epoch {epoch + 1}/{tcfg.epochs}",
                disable=not info.is_main or not sys.stderr.isatty(),
                leave=False,
                dynamic_ncols=True,
            )
            for batch in bar:
                batch = to_device(batch, self.device)
                progress = (epoch + seen / steps_per_epoch) / tcfg.epochs
                with torch.autocast(self.device.type, enabled=self.use_amp):
                    loss, logs = self.task.compute_loss(model, batch, progress)
                loss_value = all_reduce_mean(loss.detach().float().reshape(1), info).item()
                if not math.isfinite(loss_value):
                    last = self.run_dir / "last.pt"
                    kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written yet"
                    raise TrainingDiverged(
                        f"loss became {loss_value} at epoch {epoch + 1}, step {step + 1}; stopped; {kept}"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.optim.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                seen += 1
                running += loss_value
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
                if info.is_main and step % tcfg.log_every == 0:
                    self._log({"kind": "step", "epoch": epoch + 1, "step": step, "loss": loss_value,
                               "lr": scheduler.get_last_lr()[0], **logs})
            bar.close()
            record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": step,
                                      "train_loss": running / max(1, seen), "lr": scheduler.get_last_lr()[0],
                                      "elapsed_s": round(time.time() - t_start, 2)}
            is_eval_epoch = (epoch + 1) % tcfg.eval_every == 0 or epoch + 1 == tcfg.epochs
            if info.is_main:
                if val_loader is not None and is_eval_epoch:
                    raw_model.eval()
                    metrics = self.task.evaluate(raw_model, val_loader)
                    record.update({f"val_{k}" if not k.startswith("val_") else k: v for k, v in metrics.items()})
                last_metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
                value = record.get(metric_name, record.get(f"val_{metric_name}"))
                if value is None and metric_name == "val_loss":
                    value = record["train_loss"]
                improved = value is not None and (value > best if mode == "max" else value < best)
                if improved:
                    best = float(value)
                payload = {
                    **model_payload(self.task, raw_model),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if self.use_amp else {}, "epoch": epoch + 1, "step": step,
                    "best": best, "monitor": metric_name, "metrics": last_metrics,
                }
                save_checkpoint(payload, self.run_dir / "last.pt")
                if improved or not (self.run_dir / "best.pt").exists():
                    atomic_copy(self.run_dir / "last.pt", self.run_dir / "best.pt")
                self._log(record)
                self._write_csv()
                self.task.after_checkpoint(raw_model, self.run_dir, final=epoch + 1 == tcfg.epochs)
                self._print_epoch(record)
            barrier(info)
        return FitResult(self.run_dir, self.run_dir / "best.pt", self.run_dir / "last.pt", best, last_metrics)

    # ------------------------------------------------------------------ logs
    def _log(self, record: dict[str, Any]) -> None:
        path = self.run_dir / "metrics.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:  # disk full mid-run: a clear error, like the checkpoint saves
            raise ScrapvisionError(f"cannot write {path}: {exc.strerror or exc}") from None

    def _write_csv(self) -> None:
        """metrics.csv: one row per epoch, rebuilt from the JSON lines so columns stay consistent."""
        rows = _read_records(self.run_dir / "metrics.jsonl")
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

    def _print_epoch(self, record: dict[str, Any]) -> None:
        shown = " ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
            for k, v in record.items()
            if k not in ("kind", "step") and not isinstance(v, (list, dict))
        )
        tqdm.write(f"[{self.task.name}] {shown}", file=sys.stderr)


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path``; a line torn by a kill or a full disk is skipped, so a resume still works."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def describe_run(run_dir: Path, names: Sequence[str] = ("best.pt", "last.pt", "config.yaml", "metrics.csv",
                                                      "backbone.safetensors", "loss.png")) -> str:
    return "\n".join(f"  {run_dir / n}" for n in names if (run_dir / n).exists())
