"""The accuracy cost of int8 (`scrapvision export --int8`) and of bf16 (`--precision bf16`) on real data, next to fp32.

    python benchmarks/int8_accuracy.py --recipe scrap_cls     # trains fold 0 of 3 on the real scrap photos, scores fold 0
    python benchmarks/int8_accuracy.py --recipe segdec        # KolektorSDD fold 0, the default CPU recipe
    python benchmarks/int8_accuracy.py --recipe severstal     # the synthetic CPU recipe, scored on the real sample
    python benchmarks/int8_accuracy.py --recipe clip_anomaly  # the tiled KolektorSDD recipe at 24 epochs, fold 0
    python benchmarks/int8_accuracy.py --task segdec --checkpoint runs/segdec/<time>/best.pt   # a model of yours

``--recipe`` trains the checkpoint first (its overrides are in ``RECIPES``) and records a section in
results/speed.md. The checkpoint (and its CKPT.tuned.yaml) is copied to a temporary folder, so nothing is written
next to it; fp32 and int8 graphs are exported there, each int8 graph calibrated on the first N items of the
checkpoint's own training split (its config's data, not --data) by one ``--calibration`` method. The evaluation split (the config's data and fold,
or --data) is then scored with torch fp32, ONNX Runtime fp32, the bf16 engines on a CPU with bf16 units (torch
autocast, OpenVINO's bf16 mode) and every int8 graph on ONNX Runtime (and OpenVINO, when installed), same
post-processing. It also states what `--engine auto` picks for the checkpoint, and the bf16 engines' distance from
fp32 by auto's own rule on the trained weights. Writes RESULTS/int8_<task>.json and prints a markdown table: every metric
and the int8 change in points of the head's monitored metric (the issue's goal: within 0.5 point).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import machine, write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DATA = Path(os.environ.get("SCRAPVISION_DATA", ROOT.parent / "shared" / "data"))

#: recipe -> (task, training overrides, checkpoint scored, --data of the scoring or None = the checkpoint's split,
#: recipe file under tasks/ or None = the defaults)
RECIPES = {
    # benchmarks/scrap_cls_cv.py's recipe and folds (StratifiedKFold seed 0), clfsef from scratch, fold 0 held out;
    # the last epoch, as that benchmark scores it
    "scrap_cls": ("scrap_cls", [f"data.root={DATA / 'scrap_grades'}", "model.variant=clfsef", "model.backbone=tinynet_e",
                                "data.image_size=112", "data.folds=3", "data.fold=0", "data.split_seed=0",
                                "data.unreadable=skip", "data.augment=strong", "train.epochs=20", "train.batch_size=32",
                                "train.seed=0", "optim.lr=0.003", "optim.weight_decay=0.05", "optim.warmup_epochs=1.0"],
                  "last.pt", None, None),
    # segdec's default CPU recipe on KolektorSDD fold 0 (checkpoint chosen on the validation carved from the
    # training folds), the held-out fold scored
    "segdec": ("segdec", [f"data.root={DATA / 'kolektorsdd'}", "data.fold=0"], "best.pt", None, None),
    # the shipped tiled KolektorSDD recipe shortened to 24 epochs (as benchmarks/pretrain_transfer_defects.py's
    # kolektor_tiled part runs it), fold 0 held out, the checkpoint of the best validation pixel AP
    "clip_anomaly": ("clip_anomaly", [f"data.root={DATA / 'kolektorsdd'}", "data.format=kolektor", "data.fold=0",
                                      "train.epochs=24"], "best.pt",
                     None, "clip_anomaly-kolektor.yaml"),
    # the synthetic CPU recipe (the defaults), scored on the real sample's 16 completely labelled images
    "severstal": ("severstal", [], "best.pt", str(DATA / "severstal_sample"), None),
}


def score(task_name: str, checkpoint: Path, data: str | None, engine: str, precision: str = "fp32") -> dict[str, float]:
    from scrapvision.api import evaluate, load_engine

    task, model = load_engine(task_name, checkpoint, data=data, engine=engine, precision=precision)
    return evaluate(task, model)


def auto_pick(task_name: str, checkpoint: Path) -> tuple[str, str]:
    """(engine name, precision) that ``--engine auto`` runs for this trained checkpoint on this machine."""
    from scrapvision.api import load_engine

    engine = load_engine(task_name, checkpoint, engine="auto")[1]
    name = getattr(engine, "auto_name", "torch")
    if name.endswith("-bf16"):
        return name.removesuffix("-bf16"), "bf16"
    return name, "fp32"


def bf16_gaps(task, model, fp32_onnx: Path) -> dict[str, float]:
    """The bf16 engines' distance from fp32 by auto's own rule (scrapvision.engines.parity_gap, relative, on the
    head's seeded example input), for the trained weights: auto runs bf16 only within BF16_RTOL."""
    from scrapvision.engines import auto_candidate, parity_example, parity_gap

    names = {"torch bf16": "torch-bf16", **({"OpenVINO bf16": "openvino-bf16"} if importlib.util.find_spec("openvino") else {})}
    return {label: parity_gap(model, auto_candidate(name, model, fp32_onnx), parity_example(task), relative=True)
            for label, name in names.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), help="train this recipe's checkpoint, then score it")
    parser.add_argument("--task", help="with --checkpoint: a model of yours")
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--data", help="dataset folder (default: the checkpoint's data.root)")
    parser.add_argument("--calibrate", type=int, default=64, help="training items that set the int8 scales")
    parser.add_argument("--calibration", default="minmax,percentile",
                        help="comma-separated activation-range methods, one int8 graph each (minmax, percentile, entropy)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the exported engines use their defaults)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--rerender", metavar="TASK", help="rewrite TASK's section from RESULTS/int8_TASK.json, measuring nothing")
    args = parser.parse_args(argv)
    if args.rerender:
        record = json.loads((args.results / f"int8_{args.rerender}.json").read_text())
        write_section(args.results / "speed.md", f"int8_{args.rerender}", render(record))
        return
    if (args.recipe is None) != (args.task is not None and args.checkpoint is not None) or (
            args.recipe and (args.task or args.checkpoint)):
        parser.error("give --recipe, or --task and --checkpoint")
    import torch

    from scrapvision.api import load_trained, train
    from scrapvision.engines import cpu_has_bf16
    from scrapvision.export import export_onnx
    from scrapvision.quantize import int8_gap, quantize_int8
    from scrapvision.tuning import tuned_path

    torch.set_num_threads(args.threads)
    host, start, work = machine(), time.time(), Path(tempfile.mkdtemp(prefix="int8_accuracy_"))  # load at start
    train_s = None
    if args.recipe:
        args.task, overrides, chosen, data, recipe_file = RECIPES[args.recipe]
        args.data = args.data or data
        result = train(args.task, config=recipe_file and ROOT / "tasks" / recipe_file,
                       overrides=[*overrides, "train.device=cpu", "train.log_every=100000"], run_dir=work / "run")
        train_s = round(time.time() - start, 1)
        args.checkpoint = Path(result.run_dir) / chosen
    checkpoint = work / "model.pt"
    shutil.copy(args.checkpoint, checkpoint)
    if tuned_path(args.checkpoint).is_file():
        shutil.copy(tuned_path(args.checkpoint), tuned_path(checkpoint))
    task, model = load_trained(args.task, checkpoint)  # calibration: the checkpoint's own training data
    fp32 = export_onnx(task, model, checkpoint.with_suffix(".onnx"))
    runs = {"torch fp32": (checkpoint, "torch", "fp32"), "ONNX Runtime fp32": (fp32, "onnx", "fp32")}
    if cpu_has_bf16():  # bf16 rows: the other narrow type --engine auto may choose (--precision bf16 forces it)
        runs["torch bf16"] = (checkpoint, "torch", "bf16")
        if importlib.util.find_spec("openvino"):
            runs["OpenVINO bf16"] = (fp32, "openvino", "bf16")
    bf16 = bf16_gaps(task, model, fp32) if cpu_has_bf16() else {}
    picked = auto_pick(args.task, checkpoint)  # before the int8 graphs exist next to it
    gaps = {}
    for method in args.calibration.split(","):
        int8 = quantize_int8(task, fp32, args.calibrate, out=work / f"model.{method}.int8.onnx", calibration=method)
        gaps[method] = int8_gap(task, fp32, int8, args.calibrate)
        runs[f"int8 ONNX Runtime, {method}"] = (int8, "onnx", "fp32")
        if importlib.util.find_spec("openvino"):
            runs[f"int8 OpenVINO, {method}"] = (int8, "openvino", "fp32")
    scores = {label: score(args.task, path, args.data, engine, precision)
              for label, (path, engine, precision) in runs.items()}
    monitor = task.monitor[0].removeprefix("val_")  # the checkpoint's own (clip_anomaly's recipe: pixel_ap)
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": " ".join(sys.argv[1:]),
              "machine": host, "task": args.task, "recipe": args.recipe,
              "checkpoint": str(args.checkpoint), "data": args.data, "calibrate": args.calibrate, "monitor": monitor,
              "int8_vs_fp32_outputs": gaps, "bf16_parity_gap": bf16, "auto": picked, "scores": scores, "train_s": train_s,
              "wall_s": round(time.time() - start, 1)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"int8_{args.task}.json").write_text(json.dumps(record, indent=2))
    text = render(record)
    if args.recipe:
        write_section(args.results / "speed.md", f"int8_{args.task}", text)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


def render(record: dict) -> str:
    scores, monitor = record["scores"], record["monitor"]
    keys = [k for k, v in scores["torch fp32"].items() if isinstance(v, float)]
    trained = f" (training {record['train_s']:.0f} s of it)" if record.get("train_s") else ""
    what = (f"recipe `{record['recipe']}`: " + RECIPE_TEXT[record["recipe"]]) if record.get("recipe") else (
        f"checkpoint {record['checkpoint']}")
    lines = [f"### int8 and bf16 on real data: {record['task']}", "",
             f"`python benchmarks/int8_accuracy.py {record['argv']}` on {record.get('machine', 'this machine')}, "
             f"{record['date']}, wall {record['wall_s']:.0f} s{trained}. {what}. Each int8 graph calibrated on the "
             f"first {record['calibrate']} training items by the method its row names.", "",
             "| engine | " + " | ".join(keys) + f" | {monitor} change vs ONNX Runtime fp32 (points) |",
             "|---|" + "---|" * (len(keys) + 1)]
    reference = scores["ONNX Runtime fp32"].get(monitor)
    for label, metrics in scores.items():
        change = (100 * (metrics[monitor] - reference)) if reference is not None and monitor in metrics else float("nan")
        lines.append(f"| {label} | " + " | ".join(cell(metrics.get(k, float("nan"))) for k in keys)
                     + f" | {change:+.2f} |")
    if record.get("bf16_parity_gap"):
        from scrapvision.engines import BF16_RTOL

        lines += ["", "bf16 against fp32 by `--engine auto`'s rule (largest difference over the largest |fp32| value of "
                  f"each output, on the head's seeded example input; auto accepts up to {BF16_RTOL:.0%}): "
                  + ", ".join(f"{label} {gap:.2%}" for label, gap in record["bf16_parity_gap"].items()) + "."]
    if record.get("auto"):
        engine, precision = record["auto"]
        lines += ["", f"`--engine auto` picks for this checkpoint: {engine}, {precision}."]
    gaps = record["int8_vs_fp32_outputs"]
    gaps = gaps if isinstance(gaps, dict) else {"minmax": gaps}
    for method, gap in gaps.items():
        lines += ["", f"Outputs, {method} calibration: " + gap[0], *gap[1:]]
    return "\n".join(lines) + "\n"


def cell(value: float) -> str:
    """A metric to 4 decimals, a count (images) as an integer."""
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"


#: how each recipe's checkpoint was trained and scored, for the section
RECIPE_TEXT = {
    "scrap_cls": "clfsef from scratch (benchmarks/scrap_cls_cv.py's recipe) on folds 1-2 of the 3-fold split of the "
                 "real scrap photos, last epoch, scored on fold 0 (top-1 = accuracy)",
    "segdec": "the default CPU recipe on KolektorSDD folds 1-2, best validation epoch, scored on fold 0",
    "severstal": "the synthetic CPU recipe (the defaults), scored on the 16 completely labelled real images of "
                 "the Kaggle sample (Kaggle Dice)",
    "clip_anomaly": "tasks/clip_anomaly-kolektor.yaml (tiles of the image at 512x208) at 24 epochs instead of 96, on "
                    "KolektorSDD folds 1-2, best validation pixel AP, scored on fold 0",
}


if __name__ == "__main__":
    main()
