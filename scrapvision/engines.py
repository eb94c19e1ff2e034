"""Inference engines behind :func:`scrapvision.api.load_engine`, and the rule ``--engine auto`` follows.

Every engine takes and returns torch tensors in the structure of the model's forward (tensor, tuple or
dict), so a head's ``evaluate`` and ``predict_batch`` run unchanged on any of them.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError, ScrapvisionError, first_line
from .export import export_onnx, flatten_outputs, read_onnx_metadata, restore_outputs
from .task import Task

#: largest |engine - torch| accepted by ``--engine auto`` on the head's example input (fp32 engines agree to ~1e-5)
PARITY_ATOL = 1e-3


class OnnxEngine(nn.Module):
    """Calls an ONNX Runtime session like the PyTorch model."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        self.structure = read_onnx_metadata(path)["outputs"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=self.providers(ort))
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"ONNX model {path}: cannot be loaded ({first_line(exc, 200)})") from None
        self.path = Path(path)
        self.input_names = [i.name for i in self.session.get_inputs()]

    @staticmethod
    def providers(ort: Any) -> Sequence[str]:
        available = ort.get_available_providers()
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

    def forward(self, *inputs: torch.Tensor) -> Any:
        feeds = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(self.input_names, inputs)}
        try:
            outputs = self.session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own pybind types; say what did not fit
            given = ", ".join(f"{name} {list(array.shape)}" for name, array in feeds.items())
            takes = ", ".join(f"{i.name} {i.shape}" for i in self.session.get_inputs())
            raise ScrapvisionError(f"ONNX model {self.path}: cannot run on {given} (it takes {takes}; re-export "
                                   f"it with `scrapvision export` if it predates this version): {first_line(exc)}") from None
        return restore_outputs([torch.from_numpy(o) for o in outputs], self.structure)


def cached_onnx(task: Task, model: nn.Module, checkpoint: Path) -> Path:
    """``CKPT.onnx`` next to the checkpoint, exported when missing, older than it or with other dynamic axes."""
    onnx_path = checkpoint.with_suffix(".onnx")
    if (not onnx_path.exists() or onnx_path.stat().st_mtime < checkpoint.stat().st_mtime
            or read_onnx_metadata(onnx_path)["axes"] != task.export_dynamic_axes()):
        export_onnx(task, model.cpu(), onnx_path)
    return onnx_path


def parity_example(task: Task) -> tuple[torch.Tensor, ...]:
    """The head's example input at batch 2, float inputs filled with seeded noise in [0, 1) (an image's range)."""
    generator = torch.Generator().manual_seed(0)
    example = task.example_input(2)
    return tuple(torch.rand(t.shape, generator=generator, dtype=t.dtype) if t.is_floating_point() else t
                 for t in (example if isinstance(example, tuple) else (example,)))


def parity_gap(reference: nn.Module, engine: nn.Module, example: tuple[torch.Tensor, ...]) -> float:
    """Largest |engine - reference| over every output on ``example``."""
    with torch.no_grad():
        expected, got = flatten_outputs(reference(*example)), flatten_outputs(engine(*example))
    return max(float((e.float() - g.float()).abs().max()) for e, g in zip(expected, got))


def _say(message: str) -> None:
    print(f"scrapvision: engine auto: {message}", file=sys.stderr)


def auto_engine(task: Task, model: nn.Module, checkpoint: Path) -> nn.Module | None:
    """ONNX Runtime on the cached ``CKPT.onnx`` when it exports and agrees with torch within PARITY_ATOL on
    :func:`parity_example`; None (run torch) otherwise, after one stderr line that says why."""
    reason = task.torch_only()
    if reason:
        _say(f"{reason}; using torch")
        return None
    if importlib.util.find_spec("onnxruntime") is None:
        _say("onnxruntime is not installed, using torch")
        return None
    try:
        engine = OnnxEngine(cached_onnx(task, model, checkpoint))
        gap = parity_gap(model, engine, parity_example(task))
    except (ScrapvisionError, ImportError) as exc:  # export, load or run failed, or onnx is missing
        _say(f"{first_line(exc)}; using torch")
        return None
    if gap > PARITY_ATOL:
        _say(f"ONNX differs from torch by {gap:.2e} (> {PARITY_ATOL:g}) on the example input, using torch")
        return None
    return engine
