"""Severstal CPU recipe: train on the synthetic default, then score on held-out synthetic data and on the
real Kaggle sample (16 images with complete RLE); then compare post-processing on both: fixed, flip TTA, and
tuned by `scrapvision tune` on the synthetic validation split (never on the real images). Writes
benchmarks/results/severstal_train.json and the `severstal_train` and `severstal_post` sections of
benchmarks/results/severstal.md (`--quick`: severstal_train_quick.json and severstal_quick.md, which
RESULTS.md does not include).

    python benchmarks/severstal_train.py            # the default recipe, as `scrapvision train --task severstal`
    python benchmarks/severstal_train.py --quick    # 2 epochs, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from bench_env import machine, write_section

from scrapvision.api import evaluate, load_trained, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("SCRAPVISION_DATA", ROOT.parent / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="/tmp/scrapvision-bench/severstal")
    args = parser.parse_args()
    overrides = ["train.epochs=2"] if args.quick else []
    host = machine()  # before training: the load at start
    start = time.time()
    result = train("severstal", overrides=overrides, run_dir=Path(args.out) / time.strftime("%Y%m%d-%H%M%S"))
    train_s = time.time() - start
    task, model = load_trained("severstal", result.best_path)
    synthetic = evaluate(task, model)
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": host,
              "overrides": overrides, "train_wall_s": round(train_s, 1),
              "synthetic_val": synthetic}
    real_dir = SHARED / "severstal_sample"
    if real_dir.is_dir():
        task, model = load_trained("severstal", result.best_path, data=real_dir)
        record["real_sample"] = evaluate(task, model)
    # the score of predicting "no defect" everywhere: the floor any model must beat on Kaggle Dice
    task, _ = load_trained("severstal", result.best_path)
    record["empty_prediction_dice_synthetic"], record["empty_per_class_synthetic"] = empty_dice(task)
    if real_dir.is_dir():
        task, _ = load_trained("severstal", result.best_path, data=real_dir)
        record["empty_prediction_dice_real"], record["empty_per_class_real"] = empty_dice(task)
    if real_dir.is_dir():
        record["real_submission"] = real_submission(result.best_path, real_dir, Path(args.out) / "real_predictions")
    post_start = time.time()
    record["post"] = post_processing(result.best_path, real_dir if real_dir.is_dir() else None)
    record["post_wall_s"] = round(time.time() - post_start, 1)
    record["total_wall_s"] = round(time.time() - start, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"severstal_train{'_quick' if args.quick else ''}.json").write_text(json.dumps(record, indent=2))
    cmd = "python benchmarks/severstal_train.py" + (" --quick" if args.quick else "")
    s, r = record["synthetic_val"], record.get("real_sample")
    lines = [
        "### Severstal U-Net, CPU recipe (`tasks/severstal.yaml`: resnet18 U-Net from scratch, 64x400 input)",
        f"`{cmd}` on {record['machine']}, {record['date']}, train wall {record['train_wall_s']} s, total {record['total_wall_s']} s.",
        "",
        "| data | images | Kaggle Dice | Dice without post-processing | per class (1-4) | all-empty prediction |",
        "|---|---|---|---|---|---|",
        f"| synthetic held-out | {int(s['images'])} | {s['dice']:.4f} | {s['dice_raw']:.4f} | "
        + " / ".join(f"{s[f'dice_c{c}']:.3f}" for c in range(1, 5))
        + f" | {record['empty_prediction_dice_synthetic']:.4f} |",
    ]
    if r:
        lines.append(
            f"| real Kaggle sample (complete RLE) | {int(r['images'])} | {r['dice']:.4f} | {r['dice_raw']:.4f} | "
            + " / ".join(f"{r[f'dice_c{c}']:.3f}" for c in range(1, 5))
            + f" | {record['empty_prediction_dice_real']:.4f} |"
        )
    sub = record.get("real_submission")
    if sub:
        lines += ["", f"Real-sample submission: `{sub['command']}` wrote `submission.csv` with {sub['rows']} rows "
                  f"({sub['images']} images x 4 classes), {sub['non_empty_rows']} of them with a predicted defect, "
                  f"and {sub['overlays']} overlay PNGs in {sub['wall_s']} s."]
    lines += ["", "Kaggle Dice scores an empty prediction on an empty class as 1, so the all-empty column is the "
              "floor to beat. The real-sample row is a model trained only on synthetic strips: a domain-gap "
              "check, not a Kaggle result (the public leaderboard top was about 0.90 with full training)."]
    write_section(RESULTS / "severstal.md", "severstal_train", "\n".join(lines), quick=args.quick)
    write_section(RESULTS / "severstal.md", "severstal_post", post_section(record, cmd), quick=args.quick)
    print(json.dumps(record, indent=2))


#: (row label, use CKPT.tuned.yaml, --tta); a tuned row is tuned with the TTA it is scored with
POST_ROWS = (("fixed post-processing (config defaults)", False, "none"), ("fixed + hflip TTA", False, "hflip"),
             ("fixed + hvflip TTA", False, "hvflip"), ("tuned", True, "none"), ("tuned with hvflip TTA", True, "hvflip"))


def post_processing(checkpoint: Path, real_dir: Path | None) -> dict:
    """Kaggle Dice per class under each POST_ROWS setting on the synthetic validation split and the real
    sample. `scrapvision tune` (the library call) tunes on the synthetic validation split only."""
    from scrapvision.tuning import tune

    out: dict = {"rows": {}, "tuned": {}}
    datasets = {"synthetic_val": None, **({"real_sample": real_dir} if real_dir else {})}
    for label, tuned, tta in POST_ROWS:
        if tuned:
            start = time.time()
            _, doc = tune("severstal", checkpoint, tta=tta)
            out["tuned"][tta] = {**doc["config"]["post"], "wall_s": round(time.time() - start, 1)}
        out["rows"][label] = {}
        for name, data in datasets.items():
            task, model = load_trained("severstal", checkpoint, data=data, tuned=tuned, tta=tta)
            out["rows"][label][name] = evaluate(task, model)
    return out


def post_section(record: dict, cmd: str) -> str:
    post = record["post"]
    lines = ["### Severstal post-processing: fixed, flip TTA, tuned on synthetic validation",
             f"`{cmd}` (same run as above) on {record['machine']}, {record['date']}, post-processing part "
             f"{record['post_wall_s']} s wall (two `scrapvision tune` searches and ten evaluations).", ""]
    from scrapvision.heads.severstal_parts.post import GATES, MIN_AREA_FRACTIONS, THRESHOLDS

    empty = {"synthetic_val": (record["empty_prediction_dice_synthetic"], record["empty_per_class_synthetic"]),
             "real_sample": (record.get("empty_prediction_dice_real"), record.get("empty_per_class_real"))}
    for name, title in (("synthetic_val", "synthetic validation split (64 images; the tuned rows are tuned on it: "
                         "in-sample, optimistic)"), ("real_sample", "real Kaggle sample (16 images with complete RLE; "
                         "never used for tuning)")):
        if name not in next(iter(post["rows"].values())):
            continue
        lines += [f"**{title}**", "", "| post-processing | Kaggle Dice | class 1 | class 2 | class 3 | class 4 |",
                  "|---|---|---|---|---|---|", f"| all-empty answer | {empty[name][0]:.4f} | "
                  + " | ".join(f"{v:.3f}" for v in empty[name][1]) + " |"]
        for label, scores in post["rows"].items():
            s = scores[name]
            lines.append(f"| {label} | {s['dice']:.4f} | " + " | ".join(f"{s[f'dice_c{c}']:.3f}" for c in range(1, 5)) + " |")
        lines.append("")
    for tta, values in post["tuned"].items():
        lines.append(f"Tuned with TTA {tta} ({values['wall_s']} s): threshold {values['threshold']}, minimum area "
                     f"{values['min_area']} px, classifier gate {values['cls_threshold']} (per class 1-4).")
    lines += ["", "Fixed = `post` of the CPU recipe (threshold 0.5, no minimum area, no gate). The search runs on "
              f"probabilities computed once (`scrapvision tune`: {len(THRESHOLDS)} thresholds x {len(MIN_AREA_FRACTIONS)} "
              f"minimum areas x {len(GATES)} gates per class, the fixed values added). The all-empty answer scores "
              "per class the share of images without that class. hflip = 2 passes, hvflip = 4."]
    return "\n".join(lines)


def real_submission(checkpoint: Path, real_dir: Path, out: Path) -> dict:
    """``scrapvision predict`` on every real image (with or without RLE), as a user would run it."""
    import csv

    from scrapvision.cli import main as cli

    command = ["predict", "--task", "severstal", "--checkpoint", str(checkpoint),
               "--input", str(real_dir / "train_images"), "--out", str(out)]
    start = time.time()
    if cli(command) != 0:
        raise SystemExit("predict on the real sample failed")
    with open(out / "submission.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {"command": "scrapvision " + " ".join(command), "wall_s": round(time.time() - start, 1),
            "rows": len(rows), "images": len({r["ImageId"] for r in rows}),
            "non_empty_rows": sum(1 for r in rows if r["EncodedPixels"]),
            "overlays": len(list((out / "overlays").glob("*.png")))}


def empty_dice(task) -> tuple[float, list[float]]:
    """Kaggle Dice of predicting no defect anywhere, overall and per class."""
    from scrapvision.metrics import KaggleDiceMeter

    meter = KaggleDiceMeter()
    for item in task.build_eval_dataset():
        full = item["full_mask"][None]
        meter.update(torch.zeros_like(full, dtype=torch.bool), full)
    return meter.value(), meter.per_class()


if __name__ == "__main__":
    main()
