"""``train.logger``: where epoch metrics go besides ``metrics.csv`` / ``metrics.jsonl`` (always written).

``csv`` adds nothing; ``tensorboard`` writes event files to ``<run>/tensorboard`` through PyTorch's
SummaryWriter; ``mlflow`` logs to one SQLite file ``<run>/mlflow.db`` (MLflow's local store now that its
``mlruns/`` folder store is deprecated; no server; browse it with ``mlflow ui --backend-store-uri
sqlite:///<run>/mlflow.db``). Only the main process logs: the Trainer builds a logger on rank 0 alone.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: train.logger value -> (module that must import, pip extra that installs it)
NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers of a log record (no bookkeeping, no booleans)."""
    return {k: float(v) for k, v in record.items()
            if k not in ("kind", "epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"optim.lr": "0.001", ...}``: a nested config as one level of strings, for hyper-parameter tables."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


class Logger:
    """``csv``: nothing beyond the run folder's own logs."""

    def start(self, run_dir: Path, task: str, config: Mapping[str, Any]) -> None:
        """Called once on the main process, when training starts (also on a resume)."""

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """One epoch's record (``train_*``, ``val_*``, ``lr``...), stepped by its epoch number."""

    def close(self) -> None:
        """Flush and release, at the end of training or when it fails."""


class TensorBoardLogger(Logger):
    def start(self, run_dir: Path, task: str, config: Mapping[str, Any]) -> None:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", f"```\n{yaml.safe_dump(dict(config), sort_keys=False)}```", 0)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        for key, value in numeric(record).items():
            self.writer.add_scalar(key, value, int(record["epoch"]))

    def close(self) -> None:
        if hasattr(self, "writer"):
            self.writer.close()


def tracking_uri(run_dir: Path) -> str:
    """MLflow's address of a run folder's store."""
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


class MlflowLogger(Logger):
    def start(self, run_dir: Path, task: str, config: Mapping[str, Any]) -> None:
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri(run_dir))
        experiment = self.client.get_experiment_by_name(task)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            task, artifact_location=(run_dir / "mlartifacts").resolve().as_uri())
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.run_dir = '{run_dir.name}'")
        if runs:  # a resumed training continues its MLflow run
            self.run_id = runs[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags={"run_dir": run_dir.name}).info.run_id
        for key, value in flat(config).items():
            self.client.log_param(self.run_id, key, value[:6000])

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        for key, value in numeric(record).items():
            self.client.log_metric(self.run_id, key, value, step=int(record["epoch"]))

    def close(self) -> None:
        if hasattr(self, "run_id"):
            self.client.set_terminated(self.run_id)


LOGGERS: dict[str, type[Logger]] = {"csv": Logger, "tensorboard": TensorBoardLogger, "mlflow": MlflowLogger}


def make_logger(kind: str) -> Logger:
    """The logger named by ``train.logger``; a missing optional library is a one-line ConfigError."""
    if kind not in LOGGERS:
        raise ConfigError(f"config key 'train.logger': {kind!r} is not one of {list(LOGGERS)}")
    module, extra = NEEDS.get(kind, ("", ""))
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError(f"train.logger={kind} needs the {module} package: pip install 'scrapvision[{extra}]'")
    return LOGGERS[kind]()
