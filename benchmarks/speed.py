"""Inference speed of every head at its CPU-recipe resolution, every engine side by side in one run, and how
close each comes to the machine's fp32 limit.

    python benchmarks/speed.py                       # all heads, batch 1 and 8
    python benchmarks/speed.py --heads severstal segdec --batch 8 --seconds 10
    OMP_NUM_THREADS=1 python benchmarks/speed.py --heads segdec --rounds 2 --seconds 1 --threads 1 --results /tmp/s

Engines: ``eager`` (model.eval() under torch.no_grad(), the naive way), ``tuned`` (`--engine torch`:
inference_mode, channels_last for convolutional models), ``bf16`` (`--precision bf16`: tuned under bfloat16
autocast), ``onnx`` (ONNX Runtime), ``openvino`` (OpenVINO, fp32), ``ov_bf16`` (OpenVINO's bf16 mode), ``int8`` (the `export --int8` graph on ONNX
Runtime) and ``int8_ov`` (that graph on OpenVINO). ``auto`` is the engine `--engine auto` picks for the head,
by its own rule run here. Weights are random and int8 is calibrated on random inputs: speed depends on neither
(the accuracy cost of int8 is measured on real data elsewhere).

GFLOP/s: the peak is the best of five 4096x4096 fp32 matmuls on the same threads; a head's FLOPs per item come
from torch.utils.flop_counter on the eager model (matmuls and convolutions, 2 FLOPs per multiply-add); achieved
= FLOPs per item x items/s. bf16 and int8 compute in narrower types, so their share of the fp32 peak may pass
100 % without an error. Each (head, engine) at the largest batch also runs alone in a fresh process for its
peak resident memory, and (on Linux) for the memory the engine adds: the high-water mark while it is built and
run, less what the process held once torch and the model were loaded (about 0.9 GiB, the same for every
engine); the exported and int8 files it opens are made by another process first. Writes RESULTS/speed.json and the `speed` section of RESULTS/speed.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ENGINES = ("eager", "tuned", "bf16", "onnx", "openvino", "ov_bf16", "int8", "int8_ov")
#: the engines that run an exported graph
EXPORTED_ENGINES = ("onnx", "openvino", "ov_bf16", "int8", "int8_ov")
LABELS = {"eager": "eager", "tuned": "torch", "bf16": "torch bf16", "onnx": "ONNX Runtime", "openvino": "OpenVINO",
          "ov_bf16": "OpenVINO bf16", "int8": "int8 ORT", "int8_ov": "int8 OpenVINO"}
#: auto_engine's candidate names -> this script's engine names
AUTO_NAMES = {"onnx": "onnx", "openvino": "openvino", "torch-bf16": "bf16", "openvino-bf16": "ov_bf16"}


def _inputs(example):
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def _int8_graph(task, fp32_path: Path, threads: int) -> Path:
    import torch

    from scrapvision.quantize import quantize_int8

    generator = torch.Generator().manual_seed(0)
    batches = [tuple(torch.rand(t.shape, generator=generator).numpy() for t in _inputs(task.example_input(2)))
               for _ in range(4)]
    return quantize_int8(task, fp32_path, len(batches), inputs=batches)


def graph_file(task, model, engine: str, threads: int, graphs: dict) -> Path:
    """The exported fp32 or int8 file an engine runs, made once per head and kept in ``graphs``."""
    from scrapvision.export import export_onnx

    if "fp32" not in graphs:
        graphs["fp32"] = export_onnx(task, model, Path(tempfile.mkdtemp()) / f"{task.name}.onnx")
    if engine.startswith("int8") and "int8" not in graphs:
        graphs["int8"] = _int8_graph(task, graphs["fp32"], threads)
    return graphs["int8" if engine.startswith("int8") else "fp32"]


def build_runner(task, model, engine: str, inputs: tuple, threads: int, graphs: dict):
    """(callable, autograd context, inputs) of one engine, built as `scrapvision predict` builds it; ``graphs``
    caches the exported fp32 and int8 files of the head."""
    import torch

    from scrapvision.engines import OnnxEngine, OpenVinoEngine, bf16_autocast, prefers_channels_last

    if engine in EXPORTED_ENGINES:
        path = graph_file(task, model, engine, threads, graphs)
        runner = (OpenVinoEngine(path, threads, "bf16" if engine == "ov_bf16" else "fp32")
                  if engine in ("openvino", "ov_bf16", "int8_ov") else OnnxEngine(path, threads))
        return runner, torch.inference_mode, inputs
    if engine in ("tuned", "bf16"):  # what `predict --engine torch [--precision bf16]` runs
        if prefers_channels_last(model):
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
            inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
        return (bf16_autocast(copy.deepcopy(model)) if engine == "bf16" else model), torch.inference_mode, inputs
    return model, torch.no_grad, inputs


def _setup(head: str, batch: int, threads: int):
    import torch

    from scrapvision.api import build_task

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    task = build_task(head)
    return task, task.build_model().eval(), _inputs(task.example_input(batch))


def _rate(runner, context, inputs, seconds: float) -> float:
    with context():
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or runs < 2:
            runner(*inputs)
            runs += 1
        return runs * inputs[0].shape[0] / (time.perf_counter() - start)


def gflop_per_item(model, inputs) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    return counter.get_total_flops() / inputs[0].shape[0] / 1e9


def auto_choice(task, model) -> str:
    """The engine `--engine auto` picks for this model (a checkpoint in a temporary folder, so it is exported,
    parity-checked and timed by the CLI's own code)."""
    from scrapvision.api import load_engine
    from scrapvision.checkpoint import model_payload, save_checkpoint

    checkpoint = Path(tempfile.mkdtemp()) / f"{task.name}.pt"
    save_checkpoint(model_payload(task, model), checkpoint)
    engine = load_engine(task.name, checkpoint, engine="auto")[1]
    return AUTO_NAMES.get(getattr(engine, "auto_name", ""), "tuned")


def measure_round_robin(head: str, batches: list[int], seconds: float, threads: int, rounds: int) -> list[dict]:
    """Throughput of every engine in one process, interleaved: each round times every engine for
    ``seconds / rounds``, starting from a different engine each round; the median round counts. Machine
    drift then hits all engines alike, which separate sequential runs do not."""
    task, model, _ = _setup(head, 1, threads)
    graphs: dict = {}
    rows, auto = [], auto_choice(task, model)
    for batch in batches:
        inputs = _inputs(task.example_input(batch))
        flops = gflop_per_item(model, inputs)
        runners = {e: build_runner(task, model, e, inputs, threads, graphs) for e in ENGINES}
        for runner, context, x in runners.values():
            _rate(runner, context, x, 0.0)  # warm-up (allocations, graph optimisation)
        rates: dict[str, list[float]] = {e: [] for e in ENGINES}
        for r in range(rounds):
            shift = r % len(ENGINES)
            for engine in ENGINES[shift:] + ENGINES[:shift]:
                rates[engine].append(_rate(*runners[engine], seconds / rounds))
        rows += [{"head": head, "engine": e, "batch": batch, "input_shape": list(inputs[0].shape), "auto": auto,
                  "gflop_per_item": flops, "items_per_s": statistics.median(rates[e]), "rounds_items_per_s": rates[e]}
                 for e in ENGINES]
    return rows


def _reset_peak_rss() -> bool:
    """Restart the kernel's resident-memory high-water mark (Linux: /proc/self/clear_refs, mode 5), so that the
    transient peak of importing torch, timm and the engines does not stand for every engine's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mib(key: str) -> float:
    """A memory line of /proc/self/status (VmRSS now, VmHWM the high-water mark) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def peak_rss_one(head: str, engine: str, batch: int, threads: int) -> dict:
    """Peak resident memory of one engine alone (a fresh process, so the figure is that engine's): the high-water
    mark from after the model is built (imports and the fp32 model resident, their transient peaks not counted)
    through opening the engine and running it; the graph files are made by another process first."""
    graphs: dict = {}
    if engine in EXPORTED_ENGINES:  # exported (and quantised) by another process: a user runs files made earlier
        made, error = _child(["--graph", head, engine, "--threads", str(threads)])
        if made is None:
            raise RuntimeError(error)
        graphs = {kind: Path(path) for kind, path in made.items()}
    task, model, inputs = _setup(head, batch, threads)
    reset = _reset_peak_rss()
    before = _status_mib("VmRSS") if reset else float("nan")
    runner, context, x = build_runner(task, model, engine, inputs, threads, graphs)
    if engine in EXPORTED_ENGINES:
        del model
    _rate(runner, context, x, 1.0)
    if not reset:  # no /proc (not Linux): the whole process's peak, imports included
        return {"head": head, "engine": engine, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    peak = _status_mib("VmHWM")
    return {"head": head, "engine": engine, "peak_rss_mib": peak, "setup_rss_mib": before, "engine_rss_mib": peak - before}


def peak_gflops(threads: int, size: int = 4096, repeats: int = 5) -> float:
    """This machine's fp32 limit as torch reaches it: the best of ``repeats`` large matmuls."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(size, size), torch.rand(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def all_heads() -> list[str]:
    from scrapvision import TASKS
    from scrapvision.heads import load_all

    load_all()
    return TASKS.names()


def _child(args: list[str]) -> tuple[object, str]:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return json.loads(proc.stdout.strip().splitlines()[-1]), ""


def main() -> None:
    from bench_env import write_section  # the benchmarks folder is on sys.path when run as a script

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="*")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per (head, engine, batch)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per head and batch (median counts)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of speed.json / speed.md")
    parser.add_argument("--one", nargs=2, metavar=("HEAD", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--rr", metavar="HEAD", help=argparse.SUPPRESS)
    parser.add_argument("--graph", nargs=2, metavar=("HEAD", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--rerender", action="store_true", help="rewrite speed.md from speed.json, measuring nothing")
    args = parser.parse_args()
    if args.rerender:
        record = json.loads((args.results / "speed.json").read_text())
        write_section(args.results / "speed.md", "speed", render(record, record.get("argv", "")), header="\n")
        return
    if args.one:
        print(json.dumps(peak_rss_one(*args.one, max(args.batch), args.threads)))
        return
    if args.graph:
        task, model, _ = _setup(args.graph[0], 1, args.threads)  # the same seeded weights as the measuring process
        graphs: dict = {}
        graph_file(task, model, args.graph[1], args.threads, graphs)
        print(json.dumps({kind: str(path) for kind, path in graphs.items()}))
        return
    if args.rr:
        print(json.dumps(measure_round_robin(args.rr, args.batch, args.seconds, args.threads, args.rounds)))
        return
    heads = args.heads or all_heads()
    from bench_env import machine  # here, not at the top: the timed child processes must not import it

    start, host = time.time(), machine()
    peak = peak_gflops(args.threads)
    print(f"peak fp32 matmul: {peak:.1f} GFLOP/s on {args.threads} threads", file=sys.stderr)
    results, common = [], ["--seconds", str(args.seconds), "--threads", str(args.threads), "--rounds", str(args.rounds),
                           "--batch", *map(str, args.batch)]
    for head in heads:
        rows, error = _child(["--rr", head, *common])
        if rows is None:
            results += [{"head": head, "engine": e, "error": error} for e in ENGINES]
            print(f"{head:14s} FAILED: {error[:200]}", file=sys.stderr)
            continue
        for engine in ENGINES:
            rss, _ = _child(["--one", head, engine, *common])
            for row in (r for r in rows if r["engine"] == engine):
                for key in ("peak_rss_mib", "setup_rss_mib", "engine_rss_mib"):
                    row[key] = (rss or {}).get(key, float("nan"))
                print(f"{head:14s} {engine:8s} batch {row['batch']}: {row['items_per_s']:8.2f} items/s", file=sys.stderr)
        results += rows
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": " ".join(sys.argv[1:]),
              "machine": host, "batches": args.batch, "threads": args.threads, "peak_gflops": peak,
              "seconds_per_head_and_engine": args.seconds, "rounds": args.rounds,
              "wall_s": round(time.time() - start, 1), "results": results}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "speed.json").write_text(json.dumps(record, indent=2))
    write_section(args.results / "speed.md", "speed", render(record, record["argv"]), header="\n")  # keeps startup's
    print(render(record, record["argv"]))


def render(record: dict, argv: str) -> str:
    from speed_render import render_tables

    return render_tables(record, argv, ENGINES, LABELS)


if __name__ == "__main__":
    main()
