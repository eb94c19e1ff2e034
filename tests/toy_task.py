"""A tiny regression head used to test the spine (Trainer, checkpoints, DDP) in seconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from scrapvision import TASKS, Task
from scrapvision.config import OptimConfig, TrainConfig


@dataclass(frozen=True)
class ToyModel:
    hidden: int = 16
    nan_at_step: int = 0  # >0: the loss becomes NaN at this step (to test divergence handling)
    interrupt_at_step: int = 0  # >0: raise KeyboardInterrupt at this step (to test resume)
    step_sleep: float = 0.0  # seconds to sleep per step, so a test can kill a run mid-epoch


@dataclass(frozen=True)
class ToyData:
    root: str = ""
    n: int = 64


@dataclass(frozen=True)
class ToyConfig:
    model: ToyModel = field(default_factory=ToyModel)
    data: ToyData = field(default_factory=ToyData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-2, grad_clip=1.0))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, batch_size=8, log_every=2))


class ToyNet(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def toy_data(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


@TASKS.register("toy")
class ToyTask(Task):
    name = "toy"
    Config = ToyConfig
    monitor = ("mse", "min")
    summary = "test-only regression head"

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__(cfg)
        self.steps = 0

    def build_model(self) -> nn.Module:
        return ToyNet(self.cfg.model.hidden)

    def build_datasets(self):
        return toy_data(self.cfg.data.n, 1), toy_data(32, 2)

    def compute_loss(self, model, batch, progress):
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        self.steps += 1
        if self.cfg.model.step_sleep:
            time.sleep(self.cfg.model.step_sleep)
        if self.cfg.model.interrupt_at_step and self.steps >= self.cfg.model.interrupt_at_step:
            raise KeyboardInterrupt
        if self.cfg.model.nan_at_step and self.steps >= self.cfg.model.nan_at_step:
            loss = loss * float("nan")
        return loss, {"progress": progress}

    @torch.no_grad()
    def evaluate(self, model, loader):
        errs = [nn.functional.mse_loss(model(x), y, reduction="sum").item() for x, y in loader]
        return {"mse": sum(errs) / len(loader.dataset)}
