"""Inference engines behind :func:`scrapvision.api.load_engine`, and the rule ``--engine auto`` follows.

Every engine takes and returns torch tensors in the structure of the model's forward (tensor, tuple or
dict), so a head's ``evaluate`` and ``predict_batch`` run unchanged on any of them. ONNX Runtime and
OpenVINO both run the graph :func:`scrapvision.export.export_onnx` writes.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import atomic_write
from .errors import CheckpointError, ScrapvisionError, first_line
from .export import export_onnx, flatten_outputs, read_onnx_metadata, restore_outputs
from .task import Task

#: largest |engine - torch| accepted by ``--engine auto`` on the head's example input (fp32 engines agree to ~1e-5)
PARITY_ATOL = 1e-3
#: bf16 candidates of ``--engine auto`` (``--precision auto``): largest |bf16 - fp32| accepted per output, as a
#: fraction of that output's largest |fp32| value on the example input (bf16 keeps 8 significant bits; the smoke
#: models of tests/test_engines.py measure 0.2-0.9 % for torch autocast except segdec's 2.9 %)
BF16_RTOL = 0.01
#: ... and how much faster than the fastest fp32 engine a bf16 one must be to run instead: it gives up exactness
BF16_MIN_GAIN = 1.15
#: batch sizes ``--engine auto`` times its candidates at (a camera's one frame at a time, a folder in batches):
#: which engine is faster can differ between them (until 2026-12-03 it timed batch 2 alone)
TIMING_BATCHES = (1, 8)
#: seconds auto's timing waits before each engine's calls, so that the previous engine's threads stop spinning
SETTLE_S = 0.03
#: seconds of back-to-back calls auto times per engine and round (at least two calls)
BLOCK_S = 0.1
#: the bf16 candidates of ``--engine auto``, by name: torch under autocast, and OpenVINO's bf16 mode
BF16_ENGINES = {"torch-bf16": "torch (bf16 autocast)", "openvino-bf16": "OpenVINO (bf16)"}


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
            takes = ", ".join(f"{i.name} {i.shape}" for i in self.session.get_inputs())
            raise _run_error(self.path, list(feeds.values()), takes, exc) from None
        return restore_outputs([torch.from_numpy(o) for o in outputs], self.structure)


def _run_error(path: Path, feeds: Sequence[np.ndarray], takes: str, exc: Exception) -> ScrapvisionError:
    given = ", ".join(f"input{i} {list(array.shape)}" for i, array in enumerate(feeds))
    return ScrapvisionError(f"ONNX model {path}: cannot run on {given} (it takes {takes}; re-export it with "
                            f"`scrapvision export` if it predates this version): {first_line(exc)}")


class OpenVinoEngine(nn.Module):
    """Calls OpenVINO's CPU plugin on the exported ONNX graph like the PyTorch model. Compiled in fp32: on a
    CPU with bf16 units the plugin's default precision is bf16, which would not be the model torch runs.

    The graph's batch axis is dynamic; the plugin runs a graph with every shape fixed faster (a scratch A/B at
    one thread, bf16: 1.21x / 1.13x for clip_anomaly at batch 1 / 8, 1.01-1.13x for canet and segdec), so each
    input shape seen gets its own compile of the graph reshaped to it, up to :data:`STATIC_SHAPES` shapes (a
    folder run sees its batch size and the last, smaller batch); other shapes, or a graph that cannot be
    reshaped, run the dynamic one."""

    #: how many input shapes get a compile of their own (each holds the weights once more)
    STATIC_SHAPES = 4

    def __init__(self, path: str | Path, threads: int = 0, precision: str = "fp32", quiet: bool = False) -> None:
        super().__init__()
        import openvino as ov

        self.structure = read_onnx_metadata(path)["outputs"]
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision]}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.core = ov.Core()
        try:
            self.graph = self.core.read_model(str(path))
            self.compiled = self.core.compile_model(self.graph, "CPU", self.config)
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"ONNX model {path}: OpenVINO cannot compile it ({first_line(exc, 200)})") from None
        self.request = self.compiled.create_infer_request()
        #: input shapes -> the infer request of the graph compiled for them (None: that shape runs the dynamic one)
        self.static: dict[tuple, Any] = {}
        self.path = Path(path)
        #: what the plugin runs: a CPU without bf16 units (no avx512_bf16 / AMX) quietly keeps f32. The property is
        #: an ov.Type (printed "<Type: 'bfloat16'>"), so it is compared as a type, not searched for "bf16"
        self.precision = "bf16" if self.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16 else "fp32"
        if precision == "bf16" and self.precision != "bf16" and not quiet:
            print("scrapvision: --precision bf16: this CPU has no bf16 units, OpenVINO runs the model in fp32",
                  file=sys.stderr)

    def _request_for(self, feeds: Sequence[np.ndarray]) -> Any:
        """The infer request of the graph compiled for these input shapes, compiled on first sight."""
        import openvino as ov

        key = tuple(array.shape for array in feeds)
        if key not in self.static:
            self.static[key] = None
            compiled = sum(found is not None for found in self.static.values())
            if compiled < self.STATIC_SHAPES and len(feeds) == len(self.graph.inputs):
                graph = self.graph.clone()
                try:
                    graph.reshape({port: ov.PartialShape(list(array.shape)) for port, array in zip(graph.inputs, feeds)})
                    self.static[key] = self.core.compile_model(graph, "CPU", self.config).create_infer_request()
                except Exception:  # noqa: BLE001 - a shape the graph rejects: the dynamic graph says why below
                    pass
        return self.static[key] or self.request

    def forward(self, *inputs: torch.Tensor) -> Any:
        feeds = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in inputs]
        try:
            outputs = self._request_for(feeds).infer(feeds).to_tuple()  # copies: the request reuses its buffers
        except Exception as exc:  # noqa: BLE001
            takes = ", ".join(f"{i.any_name} {i.partial_shape}" for i in self.compiled.inputs)
            raise _run_error(self.path, feeds, takes, exc) from None
        return restore_outputs([torch.from_numpy(np.asarray(o)) for o in outputs], self.structure)


#: engine name -> (package, label, extra of setup.cfg that installs it)
EXPORTED = {"onnx": ("onnxruntime", "ONNX Runtime", "onnx"), "openvino": ("openvino", "OpenVINO", "openvino")}


def installed(engine: str) -> bool:
    return importlib.util.find_spec(EXPORTED[engine][0]) is not None


def open_engine(engine: str, path: Path, precision: str = "fp32") -> nn.Module:
    """The exported ``engine`` on ``path``; one line naming the extra to install when its package is missing."""
    _, label, extra = EXPORTED[engine]
    if not installed(engine):
        raise ScrapvisionError(f"--engine {engine}: {label} is not installed (pip install scrapvision[{extra}])")
    if precision != "fp32" and engine != "openvino":
        raise ScrapvisionError(f"--precision {precision}: runs on --engine torch or openvino, not {engine}")
    return OnnxEngine(path) if engine == "onnx" else OpenVinoEngine(path, precision=precision)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (avx512_bf16 or AMX); elsewhere bf16 is emulated and slow."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, f, None) for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def prefers_channels_last(model: nn.Module) -> bool:
    """True when most weights sit in convolutions, the layers channels_last speeds up on CPU; a ViT only
    pays for the layout changes (benchmarks/speed.py measured the canet ViT at 0.78x eager with it)."""
    convs = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))
    return convs * 2 >= sum(p.numel() for p in model.parameters())


def inference_layout(model: nn.Module) -> nn.Module:
    """The memory layout ``predict --engine torch`` runs a model in."""
    return model.to(memory_format=torch.channels_last) if prefers_channels_last(model) else model


def _float32(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _float32(v) for k, v in outputs.items()}
    return type(outputs)(_float32(o) for o in outputs) if isinstance(outputs, (tuple, list)) else outputs


def bf16_autocast(model: nn.Module) -> nn.Module:
    """``model`` with its forward under autocast to bfloat16 (``--precision bf16``) and float outputs back in
    float32, as the heads' post-processing expects. Patched on the instance, so the model keeps its class
    (clip_anomaly few-shot checks it) and its weights stay fp32."""
    forward, device = model.forward, next(iter(model.parameters()), torch.empty(0)).device.type

    def forward_bf16(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device, dtype=torch.bfloat16):
            return _float32(forward(*args, **kwargs))

    model.forward = forward_bf16
    return model


def cached_onnx(task: Task, model: nn.Module, checkpoint: Path) -> Path:
    """``CKPT.onnx`` next to the checkpoint, exported when missing, older than it, with other dynamic axes or
    with other fixed input sizes (e.g. ``--set eval.image_size=...`` after an earlier export)."""
    onnx_path = checkpoint.with_suffix(".onnx")
    if not onnx_path.exists() or onnx_path.stat().st_mtime < checkpoint.stat().st_mtime:
        return export_onnx(task, model.cpu(), onnx_path)
    meta = read_onnx_metadata(onnx_path)
    if meta["axes"] != task.export_dynamic_axes() or not _fits(meta["input_shapes"], task.example_input(1)):
        export_onnx(task, model.cpu(), onnx_path)
    return onnx_path


def _fits(shapes: list[list[int | None]], example: Any) -> bool:
    """Whether the graph's fixed input sizes are those of the task's example input (dynamic axes match any)."""
    tensors = example if isinstance(example, tuple) else (example,)
    return len(shapes) == len(tensors) and all(
        len(shape) == t.ndim and all(d is None or d == n for d, n in zip(shape, t.shape))
        for shape, t in zip(shapes, tensors))


def parity_example(task: Task) -> tuple[torch.Tensor, ...]:
    """The head's example input at batch 2, float inputs filled with seeded noise in [0, 1) (an image's range)."""
    generator = torch.Generator().manual_seed(0)
    example = task.example_input(2)
    return tuple(torch.rand(t.shape, generator=generator, dtype=t.dtype) if t.is_floating_point() else t
                 for t in (example if isinstance(example, tuple) else (example,)))


def parity_gap(reference: nn.Module, engine: nn.Module, example: tuple[torch.Tensor, ...],
               relative: bool = False) -> float:
    """Largest |engine - reference| over every output on ``example``; ``relative``: each output's largest
    difference as a fraction of its largest |reference| value (how bf16 is judged)."""
    with torch.no_grad():
        expected, got = flatten_outputs(reference(*example)), flatten_outputs(engine(*example))
    gaps = [float((e.float() - g.float()).abs().max()) / (float(e.float().abs().max()) or 1.0 if relative else 1.0)
            for e, g in zip(expected, got)]
    return max(gaps)


def _say(message: str) -> None:
    print(f"scrapvision: engine auto: {message}", file=sys.stderr)


def _median_call_s(engines: dict[str, nn.Module], example: tuple[torch.Tensor, ...], budget_s: float = 3.0) -> dict[str, float]:
    """Median seconds per call of each engine on ``example``, interleaved (one block of calls each per round, 3 to
    9 rounds within about ``budget_s``), so a busy neighbour slows all of them alike.

    Each block follows a pause of :data:`SETTLE_S` and an untimed call of the same engine (ONNX Runtime's worker
    threads spin for a while after each run, and timed straight after it OpenVINO ran at 60 % of its speed on
    segdec), then times calls back to back for :data:`BLOCK_S`, as a user's run over a folder makes them. Until
    2026-12-03 one call was timed per pause: on segdec that picked ONNX Runtime in about one run of three, though
    OpenVINO was faster at both batch sizes in the speed benchmark's back-to-back timing."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    start = time.perf_counter()
    with torch.no_grad():
        for round_ in range(9):
            if round_ >= 3 and time.perf_counter() - start > budget_s:
                break
            for name, engine in engines.items():
                time.sleep(SETTLE_S)
                engine(*example)
                calls, tick = 0, time.perf_counter()
                while calls < 2 or time.perf_counter() - tick < BLOCK_S:
                    engine(*example)
                    calls += 1
                times[name].append((time.perf_counter() - tick) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {EXPORTED[e][0]: version(EXPORTED[e][0]) for e in EXPORTED if installed(e)}


def _timing_key(onnx_path: Path, candidates: Sequence[str]) -> dict[str, Any]:
    # "timing": how the candidates were timed; a record made another way (batch 2 alone, unsettled, one call
    # per pause: before 2026-12-03; OpenVINO without its per-shape compiles) is timed again rather
    # than trusted
    timing = {"batches": list(TIMING_BATCHES), "settle_s": SETTLE_S, "block_s": BLOCK_S,
              "openvino_static_shapes": OpenVinoEngine.STATIC_SHAPES}
    return {"onnx_mtime_ns": onnx_path.stat().st_mtime_ns, "versions": _versions(), "cpus": os.cpu_count(),
            "candidates": sorted(candidates), "timing": timing}


def remembered_engine(onnx_path: Path, candidates: Sequence[str]) -> str | None:
    """The engine :func:`faster_engine` chose for this graph, while the graph, package versions, CPU count,
    the engines it chose among (bf16 or not) and the way they were timed are still those it was timed with."""
    try:
        record = json.loads(onnx_path.with_suffix(".engine.json").read_text())
    except (OSError, ValueError):
        return None
    return record.get("engine") if record.get("key") == _timing_key(onnx_path, candidates) else None


def faster_engine(engines: dict[str, nn.Module], example: tuple[torch.Tensor, ...], onnx_path: Path,
                  candidates: Sequence[str]) -> str:
    """The faster of the engines on the head's example input at each of :data:`TIMING_BATCHES` (time per item,
    geometric mean over the sizes), timed once per exported graph and cached in ``CKPT.engine.json`` (timed again
    when the graph, the package versions or the CPU count change). A bf16 engine wins only when it is
    :data:`BF16_MIN_GAIN` times faster than every fp32 one."""
    remembered = remembered_engine(onnx_path, candidates)
    if remembered in engines:
        return remembered
    per_item = {}  # batch size -> engine -> median seconds per item
    for size in TIMING_BATCHES:
        seconds = _median_call_s(engines, tuple(t[:1].expand(size, *t.shape[1:]).contiguous() for t in example))
        per_item[size] = {name: s / size for name, s in seconds.items()}
    # the geometric mean over the batch sizes: a relative gain counts alike at each
    score = {name: math.prod(times[name] for times in per_item.values()) ** (1 / len(per_item)) for name in engines}
    choice = min(score, key=lambda name: score[name] * (BF16_MIN_GAIN if name in BF16_ENGINES else 1.0))
    try:
        with atomic_write(onnx_path.with_suffix(".engine.json"), "w") as handle:
            json.dump({"key": _timing_key(onnx_path, candidates), "engine": choice,
                       "median_s_per_item": {f"batch {size}": times for size, times in per_item.items()}},
                      handle, indent=1)
    except OSError:  # a read-only run folder (the graph was exported earlier): choose again next time
        pass
    return choice


def auto_candidate(name: str, model: nn.Module, path: Path) -> nn.Module:
    """An engine ``--engine auto`` may run: an exported fp32 one by its EXPORTED name, or a bf16 one."""
    if name == "torch-bf16":
        return bf16_autocast(inference_layout(copy.deepcopy(model)))
    if name == "openvino-bf16":
        engine = OpenVinoEngine(path, precision="bf16", quiet=True)
        if engine.precision != "bf16":
            raise ScrapvisionError("the plugin runs it in fp32 on this CPU")
        return engine
    return open_engine(name, path)


def auto_engine(task: Task, model: nn.Module, checkpoint: Path, precision: str = "auto") -> nn.Module | None:
    """The engine ``--engine auto`` runs on CPU, or None for torch.

    Candidates: ONNX Runtime and OpenVINO (those installed) on the cached ``CKPT.onnx``. A candidate counts
    when it agrees with torch within PARITY_ATOL on :func:`parity_example`; of two that count, the faster
    on that input (at batches 1 and 8, timed once and cached by :func:`faster_engine`) runs; once timed, the other one is
    not even opened while the remembered one agrees. With ``precision="auto"`` on a CPU with native bf16 (and
    at least one fp32 candidate agreeing), torch under bf16 autocast and OpenVINO's bf16 mode are candidates
    too: they count within BF16_RTOL of fp32 and must be BF16_MIN_GAIN times faster, and running one is one
    stderr line. Torch runs when the task says its model is not all in the graph (:meth:`Task.torch_only`),
    when neither package is installed, when export fails or when no candidate agrees. Any candidate dropped,
    or torch chosen, is one stderr line.
    """
    reason = task.torch_only()
    candidates = [e for e in EXPORTED if installed(e)]
    if reason or not candidates:
        _say(f"{reason or 'neither onnxruntime nor openvino is installed'}; using torch")
        return None
    try:
        path = cached_onnx(task, model, checkpoint)
    except (ScrapvisionError, ImportError) as exc:  # export failed, or onnx is missing
        _say(f"{first_line(exc)}; using torch")
        return None
    if precision == "auto" and cpu_has_bf16():
        candidates += [name for name in BF16_ENGINES if name == "torch-bf16" or name.removesuffix("-bf16") in candidates]
    example, agreeing, problems = parity_example(task), {}, []
    remembered = remembered_engine(path, candidates)  # already timed: check it first, and the others only if it disagrees
    for name in sorted(candidates, key=lambda e: e != remembered):
        if remembered in agreeing:
            break
        bf16 = name in BF16_ENGINES
        if bf16 and name != remembered and not any(n not in BF16_ENGINES for n in agreeing):
            continue  # bf16 only ever replaces an fp32 engine that agrees, never torch fp32 (fp32 come first)
        label = BF16_ENGINES.get(name) or EXPORTED[name][1]
        try:
            engine = auto_candidate(name, model, path)
            gap = parity_gap(model, engine, example, relative=bf16)
        except (ScrapvisionError, ImportError) as exc:
            problems.append(f"{label}: {first_line(exc)}")
            continue
        if gap > (BF16_RTOL if bf16 else PARITY_ATOL):
            problems.append(f"{label} differs from torch by {gap:.2%} of its output range (> {BF16_RTOL:.0%})" if bf16
                            else f"{label} differs from torch by {gap:.2e} (> {PARITY_ATOL:g}) on the example input")
            continue
        agreeing[name] = engine
    choice = None if not agreeing else next(iter(agreeing)) if len(agreeing) == 1 else \
        faster_engine(agreeing, example, path, candidates)
    if choice in BF16_ENGINES:
        _say(f"running {BF16_ENGINES[choice]}: at least {BF16_MIN_GAIN:g}x faster than fp32 here, within "
             f"{BF16_RTOL:.0%} of fp32 on the example input (--precision fp32 keeps fp32)")
    elif problems and not all(p.startswith(tuple(BF16_ENGINES.values())) for p in problems):
        _say(f"{'; '.join(problems)}; using {EXPORTED[choice][1] if choice else 'torch'}")
    if not choice:
        return None
    agreeing[choice].auto_name = choice  # which candidate it is (benchmarks/speed.py reports it)
    return agreeing[choice]
