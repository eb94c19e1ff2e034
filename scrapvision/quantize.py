"""Post-training static int8 quantisation of an exported graph: ``scrapvision export --int8 --calibrate N``.

ONNX Runtime's ``quantize_static`` in QDQ format (QuantizeLinear / DequantizeLinear pairs, which ONNX
Runtime and OpenVINO both fuse into int8 kernels), per-channel int8 weights, uint8 activations whose
ranges come from the first N items of the task's own training set: the 99.999th percentile of each
activation's histogram (``percentile``, the default: one outlier pixel no longer stretches a scale), their
extremes (``minmax``), or the range that keeps the histogram's entropy (``entropy``). The graph's ends stay
fp32 (:func:`end_layers`): the first convolution or matmul reading each input and the last one before each
output, the usual rule of post-training quantisation. Both defaults were chosen by how close each graph's
outputs stay to fp32 on training items that calibration did not see (never on a scored split;
benchmarks/int8_accuracy.py). The int8 file keeps the
scrapvision metadata, so ``eval`` / ``predict --checkpoint CKPT.int8.onnx`` run it like any export.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .catalog import CALIBRATIONS
from .checkpoint import atomic_write
from .errors import ScrapvisionError, first_line
from .task import Task

META_PRECISION = "scrapvision.precision"


def int8_path(onnx_path: Path) -> Path:
    """``X.onnx`` -> ``X.int8.onnx``."""
    return onnx_path.with_suffix(".int8.onnx")


#: operators that carry a layer's weights; the first and last of them stay fp32
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def end_layers(graph: Any) -> list[str]:
    """Names of the graph's end layers: each weighted node that reads a graph input, and for each output the
    nearest weighted node upstream of it. In int8 the first one loses the image's fine steps and the last
    one rounds the very scores that are thresholded and ranked; they are a small share of the compute.
    What it buys on real data: benchmarks/results/speed.md, sections int8_*."""
    producer = {name: node for node in graph.node for name in node.output}
    inputs = {i.name for i in graph.input}
    ends = [n.name for n in graph.node if n.op_type in WEIGHTED_OPS and inputs.intersection(n.input)]
    for output in graph.output:
        seen, stack = set(), [output.name]
        while stack:  # depth-first up the graph until a weighted node
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in WEIGHTED_OPS:
                ends.append(node.name)
                break
            stack.extend(node.input)
    return list(dict.fromkeys(ends))


def training_inputs(task: Task, n: int, batch_size: int = 8, skip: int = 0) -> Iterator[tuple[np.ndarray, ...]]:
    """Model inputs (:meth:`Task.model_input`) of training items ``skip .. skip + n - 1``, in batches."""
    train = task.build_datasets()[0]
    if len(train) <= skip:
        raise ScrapvisionError(f"task {task.name}: --calibrate needs training items, the training set has {len(train)}")
    subset = torch.utils.data.Subset(train, range(skip, min(skip + n, len(train))))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=task.collate_fn())
    for batch in loader:
        yield tuple(np.ascontiguousarray(t.numpy()) for t in task.model_input(batch))


def quantize_int8(task: Task, onnx_path: Path, n: int, out: Path | None = None,
                  inputs: Iterable[tuple[np.ndarray, ...]] | None = None, calibration: str = "percentile") -> Path:
    """Write the int8 version of the fp32 graph ``onnx_path`` (default ``X.int8.onnx``), calibrated on
    ``n`` training items (or on the batches ``inputs``, e.g. random ones for a speed benchmark) by the
    activation-range method ``calibration`` (a key of :data:`CALIBRATIONS`)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if calibration not in CALIBRATIONS:
        raise ScrapvisionError(f"--calibration {calibration!r}: expected one of {', '.join(CALIBRATIONS)}")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            # one item per batch: the histogram calibrators stack batches, which fails on a shorter last one
            self.batches = iter(inputs) if inputs is not None else training_inputs(task, n, batch_size=1)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {f"input{i}": array for i, array in enumerate(batch)}

    out = out or int8_path(onnx_path)
    fp32 = onnx.load(str(onnx_path))
    inputs = None if inputs is None else list(inputs)  # a retry with minmax (below) reads the batches again
    method = calibration
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        logging.disable(logging.WARNING)  # per norm weight: "Axis 1 is out-of-range ..." (they stay fp32, rightly)
        try:  # shape inference and graph folding first, as ONNX Runtime advises for static quantisation
            quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
            keep_fp32 = end_layers(onnx.load(str(prepared)).graph)
            def calibrate(name: str) -> None:
                with contextlib.redirect_stdout(io.StringIO()):  # the histogram methods print their progress
                    quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    calibrate_method=CalibrationMethod[CALIBRATIONS[name]],
                                    nodes_to_exclude=keep_fp32)

            try:
                calibrate(calibration)
            except ValueError as exc:
                # numpy cannot cut 2048 histogram bins out of an activation whose values are all (nearly) equal,
                # e.g. a saturated gate; min-max ranges need no histogram
                if "bins" not in str(exc) or calibration == "minmax":
                    raise
                print(f"scrapvision: int8: {calibration} calibration cannot histogram an activation whose values "
                      "are (nearly) all equal; calibrated with minmax instead", file=sys.stderr)
                method = f"minmax, as {calibration} failed"
                calibrate("minmax")
        except ScrapvisionError:
            raise
        except Exception as exc:  # noqa: BLE001 - the quantiser fails deep inside onnx; name the graph and cause
            raise ScrapvisionError(f"int8 quantisation of {onnx_path} failed: {first_line(exc)}") from None
        finally:
            logging.disable(logging.NOTSET)
        proto = onnx.load(str(quantized))
    del proto.metadata_props[:]
    proto.metadata_props.extend(fp32.metadata_props)
    entry = proto.metadata_props.add()
    entry.key, entry.value = (META_PRECISION, f"int8 (QDQ, per-channel; first and last layers fp32), calibrated "
                              f"({method}) on {n} training items")
    with atomic_write(out) as handle:
        handle.write(proto.SerializeToString())
    return out


def int8_gap(task: Task, fp32_path: Path, int8: Path, n_calibration: int, n: int = 16) -> list[str]:
    """How far the int8 graph's outputs are from fp32 on ``n`` training items that calibration did not see
    (or, with a small training set, the first ``n``): per output, the mean and max |int8 - fp32| and the fp32
    outputs' standard deviation for scale."""
    from .engines import OnnxEngine
    from .export import flatten_outputs

    fp32_engine, int8_engine = OnnxEngine(fp32_path), OnnxEngine(int8)
    size = len(task.build_datasets()[0])
    skip = n_calibration if size > n_calibration else 0
    pairs: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for batch in training_inputs(task, n, skip=skip):
        inputs = tuple(torch.from_numpy(a) for a in batch)
        pairs.append(list(zip(flatten_outputs(fp32_engine(*inputs)), flatten_outputs(int8_engine(*inputs)))))
    structure = fp32_engine.structure
    names = structure.split(":", 1)[1].split(",") if structure.startswith("dict:") else [f"output{k}" for k in range(len(pairs[0]))]
    lines = []
    for k, name in enumerate(names):
        ref = torch.cat([p[k][0].float().flatten() for p in pairs])
        gap = (torch.cat([p[k][1].float().flatten() for p in pairs]) - ref).abs()
        lines.append(f"  {name}: |int8 - fp32| mean {gap.mean():.3g}, max {gap.max():.3g} (fp32 std {ref.std():.3g})")
    where = "held-out" if skip else "(calibration)"
    return [f"int8 vs fp32 on {min(n, size - skip)} {where} training items:", *lines]
