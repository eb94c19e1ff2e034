"""The contract between a head and the one Trainer / CLI.

A head is a subclass of :class:`Task` registered with ``@TASKS.register("name")``. It owns a frozen
root config dataclass (``Config``) with at least the sections ``model``, ``data`` (which has a ``root``
field: empty means the built-in synthetic data), ``optim`` and ``train``. The Trainer never looks inside
a batch: it hands it to :meth:`Task.compute_loss`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .errors import ScrapvisionError


def model_device(model: nn.Module) -> torch.device:
    """Where a model's inputs must go (CPU for the ONNX Runtime engine, which has no parameters)."""
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


class Task:
    """Base class of every head. Subclasses override the methods marked *required*."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: metric that selects the best checkpoint, and whether higher ("max") or lower ("min") is better; a head
    #: may set it per instance from its config (clip_anomaly's ``monitor``), the Trainer reads the instance's
    monitor: ClassVar[tuple[str, str]] = ("val_loss", "min")
    #: one-paragraph description shown by ``scrapvision list`` and ``--help``
    summary: ClassVar[str] = ""
    #: ``--set`` overrides that shrink a run to seconds (tiny model, few samples); used by the tests that
    #: run over every registered head and by CI smoke runs
    smoke_overrides: ClassVar[tuple[str, ...]] = ()
    #: flip test-time augmentation of eval / predict / tune (:mod:`scrapvision.tta`): none | hflip | hvflip;
    #: set per instance by ``--tta`` (a head may take its default from its config) where ``supports_tta``
    tta: str = "none"
    supports_tta: ClassVar[bool] = False
    #: ``--set`` values under which ``eval`` scores every labelled image of ``--data`` instead of its held-out
    #: fold or split (``eval --split all``; also ``--split auto`` when ``--data`` is not the folder the checkpoint
    #: was trained on); ``()``: eval of a given folder already scores all of it; None: no such mode
    eval_all_overrides: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    # ----------------------------------------------------------------- required
    def build_model(self) -> nn.Module:
        """*Required.* A pure ``nn.Module`` built from ``self.cfg.model`` (weights from a local file only)."""
        raise NotImplementedError

    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """*Required.* (train, val) from ``self.cfg.data``; ``data.root == ""`` means synthetic data."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: Any, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        """*Required.* Scalar loss of one batch plus floats to log. ``progress`` runs 0 -> 1 over training."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """*Required.* Metrics over a whole loader; must contain the key named by ``monitor``."""
        raise NotImplementedError

    # ----------------------------------------------------------------- optional
    def build_eval_dataset(self) -> Dataset:
        """Dataset that ``scrapvision eval`` scores (default: the validation split)."""
        return self.build_datasets()[1]

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser parameter groups: dicts with ``params`` and optionally ``lr`` / ``weight_decay``
        (absolute values; a missing one takes ``cfg.optim``'s). Per-group learning rates of a head belong
        here, never in scaling tricks inside its model. The schedule (warm-up, cosine) multiplies every
        group's lr by the same factor, so the ratios between groups hold all through training. Frozen
        parameters (``requires_grad=False``) may be listed: the Trainer leaves them out."""
        return [{"params": list(model.parameters())}]

    @classmethod
    def upgrade_checkpoint(cls, payload: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint written by an older version of this head, in today's layout (default: unchanged).
        Called with the loaded payload before its config or weights are used."""
        return payload

    def prefit(self, model: nn.Module, loader: DataLoader) -> dict[str, float]:
        """Fit, before the first gradient step, what has a better solver than gradient epochs (a linear probe's
        logistic regression, in scrap_cls), from ``loader``: the whole training split, in order, unshuffled.
        Called on a new run only (a resumed one finds the result in its checkpoint), on every process alike.
        Parameters it sets are frozen by :meth:`build_model`, so the epochs leave them alone; a model with nothing
        left to train only measures its training loss, validates and writes its checkpoints. Returns numbers
        for the run's log. Default: nothing."""
        return {}

    def epoch_indices(self, dataset: Dataset, epoch: int, generator: torch.Generator) -> Sequence[int]:
        """Order of training samples for one epoch (override to balance classes or resample)."""
        return torch.randperm(len(dataset), generator=generator).tolist()  # type: ignore[arg-type]

    def collate_fn(self) -> Any:
        """A DataLoader ``collate_fn``; None uses PyTorch's default."""
        return None

    def checkpoint_extras(self) -> dict[str, Any]:
        """Plain data stored in checkpoints beside the weights (class names, thresholds...)."""
        return {}

    def validation_extras(self, metrics: Mapping[str, float]) -> dict[str, Any]:
        """Extras chosen on the validation split (a decision threshold...), from ``metrics``: what the Trainer
        logged for the epoch it is saving (validation metrics prefixed ``val_``, none on an epoch without
        validation). They override :meth:`checkpoint_extras`, so :meth:`evaluate` never has to change the task."""
        return {}

    def epoch_end(self, record: Mapping[str, Any]) -> list[str]:
        """Warnings about a training epoch, from its log record (``train_<name>`` epoch means of what
        :meth:`compute_loss` logs, ``val_*`` metrics on validation epochs). The Trainer prints each one
        on stderr and records it in ``metrics.jsonl`` (``kind: warning``); a head that wants a warning once
        per run keeps track itself. Default: none."""
        return []

    def tune(self, model: nn.Module, loader: DataLoader) -> dict[str, Any]:
        """Post-processing chosen on the validation split ``loader`` (``scrapvision tune``, see
        :mod:`scrapvision.tuning`), at ``self.tta``: a dict with ``config`` (values nested as in a recipe, laid
        over the checkpoint's config by eval and predict), ``extras`` (over the checkpoint's extras) and
        ``validation`` (plain-data scores before and after, for the record). Compute the probabilities once
        and score every candidate from them; never rerun the model per candidate. Default: nothing to tune."""
        raise ScrapvisionError(f"task {self.name!r} has no post-processing to tune")

    def load_extras(self, extras: dict[str, Any]) -> None:
        """Restore what :meth:`checkpoint_extras` and :meth:`validation_extras` stored."""

    def layout_classes(self) -> int | None:
        """Classes a mask of the generic folder layout may hold (0 = defect-free), or None for any value
        (a binary head reads every non-zero pixel as defect). ``scrapvision data check`` uses it."""
        return None

    def after_checkpoint(self, model: nn.Module, run_dir: Path, final: bool) -> None:
        """Write the head's own files into the run folder, on rank 0 right after each ``last.pt``
        (``final``: after the last epoch), e.g. the pretrained backbone alone."""

    #: how many worst-scored items :meth:`write_report` shows
    report_items: ClassVar[int] = 8

    def write_report(self, model: nn.Module, loader: DataLoader, out: Path) -> list[Path]:
        """*Recommended.* The head's own pictures of an evaluation, for ``scrapvision eval --report DIR``: at
        least its ``report_items`` worst-scored items, plus what suits the task (overlays, PR curve, confusion
        matrix...). Writes PNG (and CSV tables) into ``out`` and returns them in reading order; ``scrapvision
        report`` inlines them into the run's page. Default: none."""
        return []

    def example_input(self, batch_size: int = 1) -> Any:
        """A model input of the recipe's shape, for export, speed benchmarks and tests."""
        raise ScrapvisionError(f"task {self.name!r} does not provide an example input")

    def model_input(self, batch: Any) -> tuple[torch.Tensor, ...]:
        """The model's forward arguments in a collated training batch (int8 calibration feeds them to the
        exported graph). Default: ``(batch["image"],)``."""
        return (batch["image"],)

    def torch_only(self) -> str:
        """Why this config runs only on the PyTorch engine ('' when the exported graph is the whole model):
        ``--engine auto`` then uses torch and prints this. Default: ''."""
        return ""

    def export_dynamic_axes(self) -> dict[int, str]:
        """Axes of every model input whose size may differ at inference (axis -> name). ONNX export keeps
        them dynamic and fixes every other axis to the size :meth:`example_input` has. Default: the batch."""
        return {0: "batch"}

    # ----------------------------------------------------------------- prediction
    #: column of the prediction CSV that names the input item (the resume key)
    predict_key: ClassVar[str] = "file"
    #: full column list of the prediction CSV (empty: taken from the first row)
    predict_columns: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def add_predict_args(cls, parser: argparse.ArgumentParser) -> None:
        """Extra ``scrapvision predict`` options of this task."""

    def predict_dataset(self, inputs: Path, args: argparse.Namespace) -> Dataset:
        """Items to predict: a Dataset with a ``keys`` list (one unique string per item) whose items
        carry that key under ``predict_key``."""
        raise ScrapvisionError(f"task {self.name!r} has no predict")

    def predict_batch(self, model: nn.Module, batch: Any, out: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
        """CSV rows for one batch (each with the ``predict_key`` column); may write side files under
        ``out`` such as overlays. ``model`` is the PyTorch model or the ONNX Runtime engine."""
        raise ScrapvisionError(f"task {self.name!r} has no predict")

    def finish_predictions(self, predictions: Path, out: Path, args: argparse.Namespace) -> Path:
        """Turn the merged ``predictions.csv`` into the task's deliverable; returns the main output file."""
        return predictions

    def predict(self, model: nn.Module, inputs: Path, out: Path, args: argparse.Namespace) -> Path:
        """Streamed, resumable, shardable prediction (see :mod:`scrapvision.predict`)."""
        from .predict import run_predictions

        return run_predictions(self, model, inputs, out, args)

    @classmethod
    def add_prepare_args(cls, parser: argparse.ArgumentParser) -> None:
        """Extra ``scrapvision prepare`` options of this task."""

    def prepare(self, args: argparse.Namespace) -> Path:
        """Turn raw material (videos, archives) into a training layout."""
        raise ScrapvisionError(f"task {self.name!r} has no prepare step")
