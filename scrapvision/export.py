"""ONNX export and an ONNX Runtime engine that stands in for the PyTorch model in eval and predict.

The exported file carries the task name, the config and the task extras as ONNX metadata, so
``scrapvision predict --checkpoint model.onnx`` needs nothing else. The engine takes and returns torch
tensors, so a head's ``evaluate`` and ``predict_batch`` run unchanged on either engine.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import atomic_write
from .config import to_dict
from .errors import CheckpointError, ScrapvisionError, first_line

META_TASK, META_CONFIG, META_EXTRAS, META_OUTPUTS = "scrapvision.task", "scrapvision.config", "scrapvision.extras", "scrapvision.outputs"


def _as_tuple(inputs: Any) -> tuple[torch.Tensor, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def output_structure(outputs: Any) -> str:
    """How a forward's result is laid out, so the ONNX engine can hand back the same shape of result."""
    if isinstance(outputs, torch.Tensor):
        return "tensor"
    if isinstance(outputs, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in outputs):
        return f"tuple:{len(outputs)}"
    if isinstance(outputs, dict) and all(isinstance(o, torch.Tensor) for o in outputs.values()):
        return "dict:" + ",".join(outputs)
    raise ScrapvisionError("ONNX export needs a forward that returns a tensor, a tuple or a dict of tensors")


def flatten_outputs(outputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(outputs, torch.Tensor):
        return (outputs,)
    return tuple(outputs.values()) if isinstance(outputs, dict) else tuple(outputs)


def restore_outputs(flat: Sequence[torch.Tensor], structure: str) -> Any:
    kind, _, rest = structure.partition(":")
    if kind == "tensor":
        return flat[0]
    if kind == "dict":
        return dict(zip(rest.split(","), flat))
    return tuple(flat)


class _FlatOutputs(nn.Module):
    """Wraps a model so that its outputs are a plain tuple, which every ONNX exporter accepts."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flatten_outputs(self.model(*inputs))


def export_onnx(task: Any, model: nn.Module, path: str | Path, opset: int = 17, batch_size: int = 2,
                exporter: str = "torchscript") -> Path:
    """Export ``model`` (its plain forward on ``task.example_input``) with a dynamic batch axis and the
    task's metadata. ``exporter``: ``torchscript`` (fast, robust for CNNs) or ``dynamo`` (torch.export)."""
    import onnx

    model = model.eval()
    example = _as_tuple(task.example_input(batch_size))
    with torch.no_grad():
        structure = output_structure(model(*example))
    module = _FlatOutputs(model).eval()
    n_out = len(flatten_outputs(model(*example)))
    input_names = [f"input{i}" for i in range(len(example))]
    output_names = [f"output{i}" for i in range(n_out)]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.export")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1, max=4096)
                shapes = tuple({0: batch} for _ in example)
                torch.onnx.export(module, example, str(tmp), input_names=input_names, output_names=output_names,
                                  dynamo=True, dynamic_shapes=shapes, opset_version=max(opset, 18))
            else:
                axes = {n: {0: "batch"} for n in input_names + output_names}
                torch.onnx.export(module, example, str(tmp), input_names=input_names, output_names=output_names,
                                  dynamo=False, dynamic_axes=axes, opset_version=opset)
        proto = onnx.load(str(tmp), load_external_data=True)
    except ScrapvisionError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter failures are many and deep; name the head and cause
        raise ScrapvisionError(f"ONNX export of task {task.name!r} failed: {first_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    meta = {META_TASK: task.name, META_CONFIG: json.dumps(to_dict(task.cfg)),
            META_EXTRAS: json.dumps(task.checkpoint_extras()), META_OUTPUTS: structure}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_write(path) as handle:
        handle.write(proto.SerializeToString())
    return path


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """Task name, config dict and extras stored by :func:`export_onnx`."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"ONNX model {path}: cannot be read ({first_line(exc)})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_TASK not in meta:
        raise CheckpointError(f"ONNX model {path}: has no scrapvision metadata (export it with `scrapvision export`)")
    return {"task": meta[META_TASK], "config": json.loads(meta[META_CONFIG]),
            "extras": json.loads(meta.get(META_EXTRAS, "{}")), "outputs": meta.get(META_OUTPUTS, "tuple")}


class OnnxEngine(nn.Module):
    """Calls an ONNX Runtime session like the PyTorch model: torch tensors in, the same structure out
    (tensor, tuple or dict) as the model's forward, so heads run unchanged on either engine."""

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
            raise CheckpointError(f"ONNX model {path}: cannot be loaded ({first_line(exc)})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    @staticmethod
    def providers(ort: Any) -> Sequence[str]:
        available = ort.get_available_providers()
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

    def forward(self, *inputs: torch.Tensor) -> Any:
        feeds = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(self.input_names, inputs)}
        return restore_outputs([torch.from_numpy(o) for o in self.session.run(None, feeds)], self.structure)
