"""The accuracy cost of int8 (`scrapvision export --int8`) on real data, next to fp32, for a trained checkpoint.

    python benchmarks/int8_accuracy.py --task segdec --checkpoint runs/segdec/<time>/best.pt --calibrate 64
    python benchmarks/int8_accuracy.py --task scrap_cls --checkpoint CKPT --data DIR   # another copy of the data

The checkpoint (and its CKPT.tuned.yaml) is copied to a temporary folder, so nothing is written next to it;
fp32 and int8 graphs are exported there, calibrated on the first N items of the checkpoint's own training
split. The checkpoint's evaluation split (its config's data and fold, or --data) is then scored with torch
fp32, ONNX Runtime fp32, int8 on ONNX Runtime and int8 on OpenVINO (when installed), same post-processing.
Writes RESULTS/int8_<task>.json and prints a markdown table: every metric, and the int8 change in points of
the head's monitored metric (the issue's goal: within 0.5 point).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def score(task_name: str, checkpoint: Path, data: str | None, engine: str) -> dict[str, float]:
    from scrapvision.api import evaluate, load_engine

    task, model = load_engine(task_name, checkpoint, data=data, engine=engine)
    return evaluate(task, model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", help="dataset folder (default: the checkpoint's data.root)")
    parser.add_argument("--calibrate", type=int, default=64, help="training items that set the int8 scales")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from scrapvision.api import get_task_class, load_trained
    from scrapvision.export import export_onnx
    from scrapvision.quantize import int8_gap, quantize_int8
    from scrapvision.tuning import tuned_path

    start, work = time.time(), Path(tempfile.mkdtemp(prefix="int8_accuracy_"))
    checkpoint = work / "model.pt"
    shutil.copy(args.checkpoint, checkpoint)
    if tuned_path(args.checkpoint).is_file():
        shutil.copy(tuned_path(args.checkpoint), tuned_path(checkpoint))
    task, model = load_trained(args.task, checkpoint, data=args.data)
    fp32 = export_onnx(task, model, checkpoint.with_suffix(".onnx"))
    int8 = quantize_int8(task, fp32, args.calibrate)
    gap = int8_gap(task, fp32, int8, args.calibrate)
    runs = {"torch fp32": (checkpoint, "torch"), "ONNX Runtime fp32": (fp32, "onnx"), "int8 ONNX Runtime": (int8, "onnx")}
    if importlib.util.find_spec("openvino"):
        runs["int8 OpenVINO"] = (int8, "openvino")
    scores = {label: score(args.task, path, args.data, engine) for label, (path, engine) in runs.items()}
    monitor = get_task_class(args.task).monitor[0].removeprefix("val_")
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": " ".join(sys.argv[1:]),
              "task": args.task, "checkpoint": str(args.checkpoint), "calibrate": args.calibrate, "monitor": monitor,
              "int8_vs_fp32_outputs": gap, "scores": scores, "wall_s": round(time.time() - start, 1)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"int8_{args.task}.json").write_text(json.dumps(record, indent=2))
    print(render(record))


def render(record: dict) -> str:
    scores, monitor = record["scores"], record["monitor"]
    keys = [k for k, v in scores["torch fp32"].items() if isinstance(v, float)]
    lines = [f"### int8 on real data: {record['task']}", "",
             f"`python benchmarks/int8_accuracy.py {record['argv']}`, {record['date']}, wall {record['wall_s']} s; "
             f"calibrated on {record['calibrate']} training items.", "",
             "| engine | " + " | ".join(keys) + f" | {monitor} change vs ONNX Runtime fp32 (points) |",
             "|---|" + "---|" * (len(keys) + 1)]
    reference = scores["ONNX Runtime fp32"].get(monitor)
    for label, metrics in scores.items():
        change = (100 * (metrics[monitor] - reference)) if reference is not None and monitor in metrics else float("nan")
        lines.append(f"| {label} | " + " | ".join(f"{metrics.get(k, float('nan')):.4f}" for k in keys)
                     + f" | {change:+.2f} |")
    return "\n".join([*lines, "", *record["int8_vs_fp32_outputs"]]) + "\n"


if __name__ == "__main__":
    main()
