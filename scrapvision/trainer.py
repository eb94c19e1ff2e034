"""The one training loop: device, AMP, DDP, cosine schedule, clipping, weight averaging (EMA), atomic
checkpoints, logs, resume.

Reproducibility: every epoch re-seeds the RNGs from ``(seed, epoch)`` and the sample order comes from a
generator seeded the same way, so a run resumed from the checkpoint of epoch ``k`` continues exactly as
the uninterrupted run would. ``train.batch_size`` is the *global* batch: under torchrun each of the W
ranks takes ``batch_size / W`` samples of the same permutation, so W processes step like one.
"""

from __future__ import annotations

import math
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from .checkpoint import atomic_copy, load_checkpoint, model_payload, save_checkpoint
from .config import save_config, to_dict
from .data.sampling import EpochSampler, epoch_seed
from .distributed import all_reduce_mean, barrier, broadcast_object, cleanup, init_distributed
from .errors import ConfigError, ScrapvisionError
from .loggers import Logger, make_logger
from .plots import plot_curves
from .runlog import RunLog, prepare_run_dir, record_run
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


def ema_average(decay: float):
    """``AveragedModel``'s update for ``train.ema_decay``: an exponential moving average whose decay ramps up
    as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so the random initial weights are forgotten
    within a few dozen steps even on runs of a few hundred; integer buffers (BatchNorm's batch counter) take
    the current value."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for avg, cur in zip(averaged, current):
            if avg.is_floating_point():
                avg.lerp_(cur, weight)
            else:
                avg.copy_(cur)

    return update


@dataclass
class _Run:
    """What one fit carries from step to step."""

    model: nn.Module  # wrapped in DistributedDataParallel under torchrun
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    train_set: Dataset
    sampler: EpochSampler
    loader: DataLoader
    steps_per_epoch: int
    val_loader: DataLoader | None
    best: float
    start_epoch: int = 0
    step: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)
    ema: AveragedModel | None = None  # train.ema_decay > 0: the averaged weights, validated and saved
    trainable: bool = True  # False: everything was fitted by Task.prefit or frozen; epochs only measure the loss

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.raw_model


@dataclass
class FitResult:
    run_dir: Path
    best_path: Path
    last_path: Path
    best_metric: float
    metrics: dict[str, float]
    monitor: str = ""  # the metric best_metric is of (the task's monitor)


def _backbone_ids(model: nn.Module, task: str) -> set[int]:
    """Ids of the parameters of the model's pretrained part: its ``backbone`` (scrap_cls, canet, pretrain) or
    ``encoder`` (severstal, segdec, clip_anomaly) submodule, whichever it has."""
    for name in ("backbone", "encoder"):
        part = getattr(model, name, None)
        if isinstance(part, nn.Module):
            return {id(p) for p in part.parameters()}
    raise ConfigError(f"config key 'optim.backbone_lr_scale': the {task} model has no backbone or encoder "
                      "submodule to scale; leave it at 1")


class Trainer:
    """Fits ``task`` with its ``cfg.optim`` and ``cfg.train``; writes everything under one run folder."""

    def __init__(self, task: Task, run_dir: str | Path | None = None, resume: str | Path | None = None,
                 command: str | None = None) -> None:
        self.task = task
        self.cfg = task.cfg
        self.tcfg = task.cfg.train
        self.device = pick_device(self.tcfg.device)
        self.info = init_distributed(self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.resume_payload = type(task).upgrade_checkpoint(load_checkpoint(resume, task=task.name)) if resume else None
        if run_dir is None and resume is not None:
            resume_path = Path(resume)
            run_dir = resume_path if resume_path.is_dir() else resume_path.parent
        self.run_dir = Path(broadcast_object(str(run_dir or self._new_run_dir()), self.info))
        self.use_amp = self.tcfg.amp and self.device.type == "cuda"
        self.log = RunLog(self.run_dir, task.name)
        self.command = command or shlex.join([Path(sys.executable).name, *sys.argv])
        # only the main process logs; a missing logger library fails here, before any data is read
        self.logger = make_logger(self.tcfg.logger) if self.info.is_main else Logger()
        if self.info.is_main:
            prepare_run_dir(self.run_dir, resuming=self.resume_payload is not None)

    # ------------------------------------------------------------------ setup
    def _new_run_dir(self) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return Path(self.tcfg.out_dir) / self.task.name / stamp

    def _loader(self, dataset: Dataset, sampler: Sampler | None, batch_size: int) -> DataLoader:
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

    def _optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """AdamW over the task's parameter groups (frozen parameters left out); each group's missing
        ``lr`` / ``weight_decay`` come from ``cfg.optim``. With ``optim.backbone_lr_scale`` != 1 every group is
        split in two, its backbone part at that multiple of the group's lr (0: not optimised at all)."""
        optim = self.cfg.optim
        scale = optim.backbone_lr_scale
        if not scale >= 0:
            raise ConfigError(f"config key 'optim.backbone_lr_scale': {scale} is negative; 0 freezes the backbone")
        in_backbone = _backbone_ids(model, self.task.name) if scale != 1.0 else set()
        groups = []
        for group in self.task.param_groups(model):
            params = [p for p in group["params"] if p.requires_grad]
            rest = [p for p in params if id(p) not in in_backbone]
            if rest:
                groups.append({**group, "params": rest})
            backbone = [p for p in params if id(p) in in_backbone]
            if backbone and scale > 0:
                groups.append({**group, "params": backbone, "lr": group.get("lr", optim.lr) * scale})
        if scale == 0:
            for p in model.parameters():
                if id(p) in in_backbone:
                    p.requires_grad_(False)  # no gradients computed for a frozen backbone
        if not groups:  # nothing trainable (Task.prefit fitted it all): an empty group keeps one code path
            groups = [{"params": []}]
        grouped = {id(p) for group in groups for p in group["params"]}
        left_out = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in grouped]
        if left_out:
            raise ScrapvisionError(f"task {self.task.name}: param_groups() leaves out trainable parameters "
                                   f"({', '.join(left_out[:3])})")
        return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)

    # ------------------------------------------------------------------ loop
    def fit(self) -> FitResult:
        try:
            return self._fit()
        finally:
            self.logger.close()
            cleanup(self.info)

    def _fit(self) -> FitResult:
        run = self._prepare()
        started = time.time()
        for epoch in range(run.start_epoch, self.tcfg.epochs):
            train_logs = self._train_epoch(run, epoch)
            if self.info.is_main:
                self._end_epoch(run, epoch, train_logs, round(time.time() - started, 2))
            barrier(self.info)
        if self.info.is_main and (self.run_dir / "metrics.csv").exists():
            plot_curves(self.run_dir / "metrics.csv", self.run_dir / "curves.png", *self.task.monitor)
        return FitResult(self.run_dir, self.run_dir / "best.pt", self.run_dir / "last.pt", run.best, run.last_metrics,
                         self.task.monitor[0])

    def _prepare(self) -> _Run:
        """Data, model, optimiser, schedule and sampler; a resumed run's state restored."""
        tcfg, info = self.tcfg, self.info
        seed_everything(tcfg.seed)
        if self.resume_payload is not None:
            self.task.load_extras(self.resume_payload.get("extras", {}))
        train_set, val_set = self._datasets()
        seed_everything(tcfg.seed)
        model = self.task.build_model().to(self.device)
        if info.enabled and self.device.type == "cuda":
            # PyTorch's SyncBatchNorm is GPU-only: on CPU ranks batch statistics stay per rank.
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        prefit = {}
        if self.resume_payload is None:
            prefit = self.task.prefit(model, self._loader(train_set, None, tcfg.eval_batch_size or tcfg.batch_size))
        optimizer = self._optimizer(model)
        decay = tcfg.ema_decay
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"config key 'train.ema_decay': {decay} is outside [0, 1); 0 turns the average off, "
                              "0.99-0.9999 are usual")
        sampler = EpochSampler(self.task.epoch_indices, train_set, tcfg.seed, info)
        sampler.set_epoch(0)
        loader = self._loader(train_set, sampler, tcfg.batch_size // info.world_size)
        steps_per_epoch = max(1, len(loader))
        optim = self.cfg.optim
        schedule = cosine_lambda(steps_per_epoch * tcfg.epochs, int(optim.warmup_epochs * steps_per_epoch),
                                 optim.min_lr_ratio)
        _, mode = self.task.monitor
        run = _Run(
            model=model, raw_model=model, optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
            scaler=torch.amp.GradScaler("cuda", enabled=self.use_amp),
            train_set=train_set, sampler=sampler, loader=loader, steps_per_epoch=steps_per_epoch,
            val_loader=self._loader(val_set, None, tcfg.eval_batch_size or tcfg.batch_size) if len(val_set) else None,
            best=-math.inf if mode == "max" else math.inf,
            ema=AveragedModel(model, multi_avg_fn=ema_average(decay), use_buffers=True) if decay > 0 else None,
            trainable=any(p.requires_grad for p in model.parameters()),
        )
        if self.resume_payload is not None:
            self._restore(run, self.resume_payload)
        if info.enabled and run.trainable:  # DistributedDataParallel refuses a model with nothing to train
            ids = [self.device.index] if self.device.type == "cuda" else None
            run.model = DistributedDataParallel(model, device_ids=ids)
        if info.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
            record_run(self.run_dir, self.task.name, self.task.monitor, self.command)
            self.logger.start(self.run_dir, self.task.name, to_dict(self.cfg))
            if prefit:
                self.log.append({"kind": "prefit", **prefit})
                print(f"{self.task.name}: fitted before training: "
                      + ", ".join(f"{k} {v:.4g}" for k, v in prefit.items()), file=sys.stderr)
        return run

    def _datasets(self) -> tuple[Dataset, Dataset]:
        train_set, val_set = self.task.build_datasets()
        if len(train_set) == 0:
            raise ScrapvisionError(f"task {self.task.name}: the training set is empty")
        if self.tcfg.batch_size % self.info.world_size:
            raise ScrapvisionError(
                f"train.batch_size={self.tcfg.batch_size} is the global batch and must divide by the "
                f"{self.info.world_size} processes"
            )
        return train_set, val_set

    @staticmethod
    def _restore(run: _Run, payload: dict[str, Any]) -> None:
        # with a moving average, "model" holds the averaged weights and "train_model" the trained ones
        run.raw_model.load_state_dict(payload.get("train_model", payload["model"]))
        if run.ema is not None:
            run.ema.module.load_state_dict(payload["model"])
            run.ema.n_averaged.fill_(int(payload.get("ema_updates", payload["step"])))
        try:
            run.optimizer.load_state_dict(payload["optimizer"])
        except ValueError as exc:  # parameter groups changed since the checkpoint was written
            raise ScrapvisionError(f"--resume: the checkpoint's optimiser state does not fit this model's "
                                   f"parameter groups ({exc}); start a new run instead") from None
        run.scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            run.scaler.load_state_dict(payload["scaler"])
        run.start_epoch, run.step = int(payload["epoch"]), int(payload["step"])
        run.best = float(payload.get("best", run.best))

    def _train_epoch(self, run: _Run, epoch: int) -> dict[str, float]:
        """One pass over the epoch's sample order; returns the epoch means of the loss (``train_loss``) and
        of every number the head's ``compute_loss`` logs (``train_<name>``), so a head's loss terms reach
        ``metrics.csv`` without the head asking (under torchrun the loss is averaged over every process, the
        logged terms over the main process's batches)."""
        seed_everything(epoch_seed(self.tcfg.seed, epoch) + self.info.rank)
        run.sampler.set_epoch(epoch)
        if hasattr(run.train_set, "set_epoch"):
            run.train_set.set_epoch(epoch)
        run.model.train(run.trainable)  # nothing to train: no dropout, and batch norm keeps its statistics
        running, seen = 0.0, 0
        sums: dict[str, float] = {}
        bar = tqdm(
            run.loader,
            desc=f"{self.task.name} epoch {epoch + 1}/{self.tcfg.epochs}",
            disable=not self.info.is_main or not sys.stderr.isatty(),
            leave=False,
            dynamic_ncols=True,
        )
        for batch in bar:
            progress = (epoch + seen / run.steps_per_epoch) / self.tcfg.epochs
            loss_value, logs = self._step(run, to_device(batch, self.device), progress, epoch)
            seen += 1
            running += loss_value
            for key, value in logs.items():
                if key != "loss" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    sums[key] = sums.get(key, 0.0) + float(value)
            lr = run.scheduler.get_last_lr()[0]
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
            if self.info.is_main and run.step % self.tcfg.log_every == 0:
                self.log.append({"kind": "step", "epoch": epoch + 1, "step": run.step, "loss": loss_value,
                                 "lr": lr, **logs})
        bar.close()
        # train_loss is the optimised loss, even if a head also logs a term called "loss"
        return {"train_loss": running / max(1, seen), **{f"train_{k}": v / max(1, seen) for k, v in sums.items()}}

    def _step(self, run: _Run, batch: Any, progress: float, epoch: int) -> tuple[float, dict[str, float]]:
        """Loss, divergence check, backward, clipping, optimiser and schedule step."""
        with torch.autocast(self.device.type, enabled=self.use_amp), torch.set_grad_enabled(run.trainable):
            loss, logs = self.task.compute_loss(run.model, batch, progress)
        loss_value = all_reduce_mean(loss.detach().float().reshape(1), self.info).item()
        if not math.isfinite(loss_value):
            last = self.run_dir / "last.pt"
            kept = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(f"loss became {loss_value} at epoch {epoch + 1}, step {run.step + 1}; stopped; {kept}")
        if not run.trainable:
            run.step += 1
            return loss_value, logs
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), self.cfg.optim.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update_parameters(run.raw_model)
        run.step += 1
        return loss_value, logs

    def _end_epoch(self, run: _Run, epoch: int, train_logs: dict[str, float], elapsed_s: float) -> None:
        """Main process: validate (on eval epochs), keep the best, write the checkpoints and the logs."""
        record: dict[str, Any] = {"kind": "epoch", "epoch": epoch + 1, "step": run.step, **train_logs,
                                  "lr": run.scheduler.get_last_lr()[0], "elapsed_s": elapsed_s}
        if run.val_loader is not None and ((epoch + 1) % self.tcfg.eval_every == 0 or epoch + 1 == self.tcfg.epochs):
            run.eval_model.eval()
            metrics = self.task.evaluate(run.eval_model, run.val_loader)
            record.update({k if k.startswith("val_") else f"val_{k}": v for k, v in metrics.items()})
        run.last_metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        metric_name, mode = self.task.monitor
        value = record.get(metric_name, record.get(f"val_{metric_name}"))
        if value is None and metric_name == "val_loss":
            value = record["train_loss"]
        improved = value is not None and (value > run.best if mode == "max" else value < run.best)
        if improved:
            run.best = float(value)
        # logged before the checkpoint: a kill in between makes --resume redo the epoch, whose new record replaces
        # this one in metrics.csv; logged after it, such a kill lost the epoch's row for good
        self.log.append(record)
        self._save(run, epoch)
        unmonitored = value is None and run.val_loader is None  # no validation at all: best.pt is the latest
        if improved or unmonitored or not (self.run_dir / "best.pt").exists():
            atomic_copy(self.run_dir / "last.pt", self.run_dir / "best.pt")
        self.log.write_csv()
        self.logger.log_epoch(record)
        self.task.after_checkpoint(run.eval_model, self.run_dir, final=epoch + 1 == self.tcfg.epochs)
        self.log.print_epoch(record)
        for message in self.task.epoch_end(record):
            self.log.warn(epoch + 1, message)

    def _save(self, run: _Run, epoch: int) -> None:
        payload = {
            **model_payload(self.task, run.eval_model, run.last_metrics),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if self.use_amp else {}, "epoch": epoch + 1, "step": run.step,
            "best": run.best, "monitor": self.task.monitor[0], "metrics": run.last_metrics,
        }
        if run.ema is not None:  # eval, predict and export read "model"; --resume continues from "train_model"
            payload.update(train_model=run.raw_model.state_dict(), ema_updates=int(run.ema.n_averaged))
        save_checkpoint(payload, self.run_dir / "last.pt")
