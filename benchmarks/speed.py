"""Inference speed of every head at its CPU-recipe resolution, three engines side by side in one run.

    python benchmarks/speed.py                 # all heads, batch 8
    python benchmarks/speed.py --heads severstal segdec --batch 4 --seconds 10

Engines: ``eager`` (model.eval() under torch.no_grad(), the naive way), ``tuned`` (torch.inference_mode, plus
channels_last for convolutional models: what `scrapvision predict --engine torch` does) and ``onnx`` (ONNX Runtime
on the exported model, `--engine onnx`). Each (head, engine) runs in its own process so its peak resident
memory is its own. Weights are random: speed does not depend on them. Writes
benchmarks/results/speed.json and the `speed` section of benchmarks/results/speed.md.
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
ENGINES = ("eager", "tuned", "onnx")


def _inputs(example):
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def build_runner(task, model, engine: str, inputs: tuple, threads: int):
    """(callable, autograd context, inputs) of one engine, built as `scrapvision predict` builds it."""
    import torch

    from scrapvision.api import prefers_channels_last
    from scrapvision.engines import OnnxEngine
    from scrapvision.export import export_onnx

    if engine == "onnx":
        path = Path(tempfile.mkdtemp()) / f"{task.name}.onnx"
        export_onnx(task, model, path)
        return OnnxEngine(path, threads=threads), torch.inference_mode, inputs
    if engine == "tuned":  # what `predict --engine torch` runs
        if prefers_channels_last(model):
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
            inputs = tuple(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x for x in inputs)
        return model, torch.inference_mode, inputs
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


def measure_round_robin(head: str, batch: int, seconds: float, threads: int, rounds: int) -> list[dict]:
    """Throughput of the three engines in one process, interleaved: each round times every engine for
    ``seconds / rounds``, starting from a different engine each round; the median round counts. Machine
    drift then hits all engines alike, which separate sequential runs do not."""
    task, model, inputs = _setup(head, batch, threads)
    runners = {e: build_runner(task, model, e, inputs, threads) for e in ENGINES}
    for runner, context, x in runners.values():
        _rate(runner, context, x, 0.0)  # warm-up (allocations, ORT graph optimisation)
    rates: dict[str, list[float]] = {e: [] for e in ENGINES}
    for r in range(rounds):
        for engine in ENGINES[r % 3:] + ENGINES[:r % 3]:
            rates[engine].append(_rate(*runners[engine], seconds / rounds))
    return [{"head": head, "engine": e, "batch": inputs[0].shape[0], "input_shape": list(inputs[0].shape),
             "items_per_s": statistics.median(rates[e]), "rounds_items_per_s": rates[e]} for e in ENGINES]


def peak_rss_one(head: str, engine: str, batch: int, threads: int) -> dict:
    """Peak resident memory of one engine alone (a fresh process, so the figure is that engine's)."""
    task, model, inputs = _setup(head, batch, threads)
    runner, context, x = build_runner(task, model, engine, inputs, threads)
    if engine == "onnx":
        del model
    _rate(runner, context, x, 1.0)
    return {"head": head, "engine": engine, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def all_heads() -> list[str]:
    from scrapvision import TASKS
    from scrapvision.heads import load_all

    load_all()
    return TASKS.names()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="*")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per (head, engine)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per head (median counts)")
    parser.add_argument("--one", nargs=2, metavar=("HEAD", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--rr", metavar="HEAD", help=argparse.SUPPRESS)
    parser.add_argument("--rerender", action="store_true", help="rewrite speed.md from speed.json, measuring nothing")
    args = parser.parse_args()
    if args.rerender:
        rerender()
        return
    if args.one:
        print(json.dumps(peak_rss_one(*args.one, args.batch, args.threads)))
        return
    if args.rr:
        print(json.dumps(measure_round_robin(args.rr, args.batch, args.seconds, args.threads, args.rounds)))
        return
    heads = args.heads or all_heads()
    import torch
    from bench_env import machine  # here, not at the top: the timed child processes must not import it

    torch.set_num_threads(args.threads)  # what the children run with, for the record
    start, host = time.time(), machine()
    results = []
    common = ["--batch", str(args.batch), "--seconds", str(args.seconds), "--threads", str(args.threads),
              "--rounds", str(args.rounds)]
    for head in heads:
        proc = subprocess.run([sys.executable, __file__, "--rr", head, *common], capture_output=True, text=True)
        if proc.returncode != 0:
            error = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
            results += [{"head": head, "engine": e, "error": error} for e in ENGINES]
            print(f"{head:14s} FAILED: {error[:200]}", file=sys.stderr)
            continue
        rows = {r["engine"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
        for engine in ENGINES:
            rss = subprocess.run([sys.executable, __file__, "--one", head, engine, *common], capture_output=True, text=True)
            row = rows[engine]
            row["peak_rss_mib"] = json.loads(rss.stdout.strip().splitlines()[-1])["peak_rss_mib"] if rss.returncode == 0 else float("nan")
            results.append(row)
            print(f"{head:14s} {engine:6s} {row['items_per_s']:8.2f} items/s  peak {row['peak_rss_mib']:.0f} MiB",
                  file=sys.stderr)
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": " ".join(sys.argv[1:]),
              "machine": host,
              "batch": args.batch, "threads": args.threads, "seconds_per_head_and_engine": args.seconds, "rounds": args.rounds,
              "wall_s": round(time.time() - start, 1), "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "speed.json").write_text(json.dumps(record, indent=2))
    (RESULTS / "speed.md").write_text(render(record, " ".join(sys.argv[1:])))
    print(render(record, " ".join(sys.argv[1:])))


def render(record: dict, argv: str) -> str:
    by = {(r["head"], r["engine"]): r for r in record["results"]}
    heads = sorted({r["head"] for r in record["results"]})
    lines = [
        "### Inference speed per head (random weights, CPU-recipe input size)",
        "",
        f"Throughput: the three engines of a head timed in one process, interleaved over {record.get('rounds', 1)} "
        "rounds, median round; peak RSS: each engine alone in a fresh process.",
        "",
        f"`python benchmarks/speed.py {argv}`".replace(" `", "`") + f" on {record['machine']}, {record['date']}, "
        f"batch {record['batch']}, {record['threads']} threads"
        + (f", load average {record['load_avg_at_start']} at start" if "load_avg_at_start" in record else "")
        + f", wall {record['wall_s']} s.",
        "",
        "| head | input | eager items/s | tuned items/s | ONNX Runtime items/s | tuned / eager | ONNX / eager | peak RSS eager / tuned / ONNX (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for head in heads:
        rows = [by.get((head, e), {}) for e in ENGINES]
        if any("items_per_s" not in r for r in rows):
            errors = "; ".join(f"{e}: {r.get('error', 'missing')}" for e, r in zip(ENGINES, rows) if "items_per_s" not in r)
            lines.append(f"| {head} | | | | | | | failed: {errors} |")
            continue
        eager, tuned, ort = (r["items_per_s"] for r in rows)
        shape = "x".join(str(s) for s in rows[0]["input_shape"])
        lines.append(f"| {head} | {shape} | {eager:.2f} | {tuned:.2f} | {ort:.2f} | {tuned / eager:.2f}x | "
                     f"{ort / eager:.2f}x | " + " / ".join(f"{r['peak_rss_mib']:.0f}" for r in rows) + " |")
    lines += ["", "Goal: the default engine at least 1.5x naive eager. Ratios below 1.5x are misses and are "
              "reported as measured."]
    for engine, label in (("tuned", "Default engine (`--engine torch`: inference_mode, channels_last for conv models)"),
                          ("onnx", "ONNX Runtime (`--engine onnx`)")):
        misses = [h for h in heads if "items_per_s" in by.get((h, engine), {}) and "items_per_s" in by.get((h, "eager"), {})
                  and by[(h, engine)]["items_per_s"] < 1.5 * by[(h, "eager")]["items_per_s"]]
        lines.append(f"- {label}: below 1.5x on {', '.join(misses) if misses else 'no head'}.")
    return "\n".join(lines) + "\n"


def rerender() -> None:
    """Rewrite speed.md from speed.json without measuring again."""
    record = json.loads((RESULTS / "speed.json").read_text())
    (RESULTS / "speed.md").write_text(render(record, record.get("argv", "")))


if __name__ == "__main__":
    main()
