"""ONNX export: the graph the ONNX Runtime and OpenVINO engines (:mod:`scrapvision.engines`) run.

The exported file carries the task name, the config and the task extras as ONNX metadata, so
``scrapvision predict --checkpoint model.onnx`` needs nothing else. The input axes a task names in
``Task.export_dynamic_axes`` (the batch; canet's photos per sample) stay dynamic, and so do the output axes
that follow them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import atomic_write
from .config import to_dict
from .errors import CheckpointError, ScrapvisionError, first_line

META_TASK, META_CONFIG, META_EXTRAS, META_OUTPUTS = "scrapvision.task", "scrapvision.config", "scrapvision.extras", "scrapvision.outputs"
META_AXES = "scrapvision.dynamic_axes"


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


def _grown(example: tuple[torch.Tensor, ...], axis: int) -> tuple[torch.Tensor, ...]:
    """Every input with one more entry along ``axis`` (a copy of its first)."""
    return tuple(torch.cat([t, t.narrow(axis, 0, 1)], dim=axis) for t in example)


def _output_axes(model: nn.Module, example: tuple[torch.Tensor, ...], axes: dict[int, str]) -> list[dict[int, str]]:
    """The dynamic axes of each flat output: those whose size changes when a dynamic input axis grows by
    one (an output axis that follows two input axes, such as B*N, is named after both)."""
    with torch.no_grad():
        base = [o.shape for o in flatten_outputs(model(*example))]
        found: list[dict[int, str]] = [{} for _ in base]
        for axis, name in axes.items():
            grown = [o.shape for o in flatten_outputs(model(*_grown(example, axis)))]
            for out_axes, before, after in zip(found, base, grown):
                for i in (i for i, (a, b) in enumerate(zip(before, after)) if a != b):
                    out_axes[i] = f"{out_axes[i]}*{name}" if i in out_axes else name
    return found


def export_onnx(task: Any, model: nn.Module, path: str | Path, opset: int = 17, batch_size: int = 2,
                exporter: str = "torchscript") -> Path:
    """Export ``model`` (its plain forward on ``task.example_input``) with the task's dynamic axes and
    metadata. ``exporter``: ``torchscript`` (fast, robust for CNNs) or ``dynamo`` (torch.export)."""
    import onnx

    model = model.eval()
    axes = task.export_dynamic_axes()
    example = _as_tuple(task.example_input(batch_size))
    for axis in axes:  # a dynamic axis traced at size 1 could be specialised (broadcast) by the tracer
        example = _grown(example, axis) if any(t.shape[axis] == 1 for t in example) else example
    with torch.no_grad():
        structure = output_structure(model(*example))
    out_axes = _output_axes(model, example, axes)
    module = _FlatOutputs(model).eval()
    input_names = [f"input{i}" for i in range(len(example))]
    output_names = [f"output{i}" for i in range(len(out_axes))]
    path = Path(path)
    tmp = path.with_name(f".{path.name}.export")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                dims = {name: torch.export.Dim(name, min=1, max=4096) for name in axes.values()}
                # one entry per forward argument; _FlatOutputs.forward has only ``*inputs``
                shapes = (tuple({axis: dims[name] for axis, name in axes.items()} for _ in example),)
                torch.onnx.export(module, example, str(tmp), input_names=input_names, output_names=output_names,
                                  dynamo=True, dynamic_shapes=shapes, opset_version=max(opset, 18))
            else:
                dynamic = {**{n: axes for n in input_names}, **dict(zip(output_names, out_axes))}
                torch.onnx.export(module, example, str(tmp), input_names=input_names, output_names=output_names,
                                  dynamo=False, dynamic_axes=dynamic, opset_version=opset)
        proto = onnx.load(str(tmp), load_external_data=True)
    except ScrapvisionError:
        raise
    except Exception as exc:  # noqa: BLE001 - exporter failures are many and deep; name the head and cause
        while exc.__cause__ is not None:  # torch.export wraps the reason in "step 1/3 failed" errors
            exc = exc.__cause__
        raise ScrapvisionError(f"ONNX export of task {task.name!r} failed: {first_line(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    meta = {META_TASK: task.name, META_CONFIG: json.dumps(to_dict(task.cfg)),
            META_EXTRAS: json.dumps(task.checkpoint_extras()), META_OUTPUTS: structure, META_AXES: json.dumps(axes)}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_write(path) as handle:
        handle.write(proto.SerializeToString())
    return path


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """Task name, config dict, extras, output structure and dynamic input axes stored by :func:`export_onnx`
    (``axes`` is None for a file exported before they were recorded), and each graph input's shape (None
    for a dynamic axis)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"ONNX model {path}: cannot be read ({first_line(exc, 200)})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    if META_TASK not in meta:
        raise CheckpointError(f"ONNX model {path}: has no scrapvision metadata (export it with `scrapvision export`)")
    axes = json.loads(meta[META_AXES]) if META_AXES in meta else None
    shapes = [[d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
              for i in proto.graph.input]
    return {"task": meta[META_TASK], "config": json.loads(meta[META_CONFIG]),
            "extras": json.loads(meta.get(META_EXTRAS, "{}")), "outputs": meta.get(META_OUTPUTS, "tuple"),
            "axes": None if axes is None else {int(k): v for k, v in axes.items()}, "input_shapes": shapes}
