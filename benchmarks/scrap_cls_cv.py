"""scrap_cls stratified k-fold on the real scrap photos: every photo is scored once, so a variant's
accuracy rests on ~331 images instead of 67 (one image = 0.3 points, not 1.5).

    python benchmarks/scrap_cls_cv.py --folds 3 --variants baseline,clfsef    # ~50 min on the shared CPU
    python benchmarks/scrap_cls_cv.py --quick                                 # synthetic, checks the script

Same recipe as benchmarks/scrap_cls_ablation.py (last epoch, no checkpoint chosen on the held-out fold).
Writes benchmarks/results/scrap_cls_cv.json and a section of benchmarks/results/scrap_cls.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.scrap_cls_ablation import PAPER, predictions, recipe  # noqa: E402
from benchmarks.scrap_cls_common import RESULTS, update_section  # noqa: E402
from scrapvision.config import load_config  # noqa: E402
from scrapvision.heads.scrap_cls import ScrapClsConfig, ScrapClsTask  # noqa: E402
from scrapvision.heads.scrap_cls_parts.report import classification_metrics  # noqa: E402
from scrapvision.models.clfsef import VARIANTS  # noqa: E402
from scrapvision.trainer import Trainer  # noqa: E402


def run_fold(variant: str, fold: int, args: argparse.Namespace, runs: Path) -> dict:
    overrides = recipe(args.quick, args.data, variant, str(runs))
    if not args.quick:
        overrides += [f"data.folds={args.folds}", f"data.fold={fold}"]
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=overrides))
    start = time.perf_counter()
    result = Trainer(task, run_dir=runs / f"{variant}_{fold}").fit()
    seconds = time.perf_counter() - start
    model = task.build_model()
    model.load_state_dict(torch.load(result.last_path, map_location="cpu", weights_only=True)["model"])
    y_true, y_pred = predictions(task, model)
    return {"fold": fold, "train_s": round(seconds, 1), "y_true": y_true.tolist(), "y_pred": y_pred.tolist()}


def merge_earlier(path: Path, args: argparse.Namespace, run: dict, results: list[dict]) -> dict:
    """Keep the variants of earlier runs with the same folds and recipe, so variants can run separately."""
    recipe_now = recipe(args.quick, args.data, "VARIANT", "OUT")
    runs, kept = [run], []
    if path.exists():
        earlier = json.loads(path.read_text())
        if earlier.get("recipe") == recipe_now and earlier.get("folds") == args.folds:
            rerun = {r["variant"] for r in results}
            kept = [r for r in earlier["results"] if r["variant"] not in rerun]
            runs = [r for r in earlier.get("runs", []) if set(r["variants"]) - rerun] + runs
    order = {v: i for i, v in enumerate(VARIANTS)}
    merged = sorted(kept + results, key=lambda r: order[r["variant"]])
    return {"folds": args.folds, "threads": args.threads, "recipe": recipe_now, "runs": runs, "results": merged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--variants", default="baseline,clfsef")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))
                        / "scrap_grades")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.quick:
        args.folds = 2
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="scrap_cls_cv_") as tmp:
        for variant in variants:
            folds = [run_fold(variant, k, args, Path(tmp)) for k in range(args.folds)]
            y_true = np.concatenate([f["y_true"] for f in folds])
            y_pred = np.concatenate([f["y_pred"] for f in folds])
            pooled = classification_metrics(y_true, y_pred)
            per_fold = [100 * classification_metrics(np.array(f["y_true"]), np.array(f["y_pred"]))["accuracy"]
                        for f in folds]
            results.append({"variant": variant, "images": int(len(y_true)),
                            "accuracy": round(100 * pooled["accuracy"], 2), "macro_f1": round(100 * pooled["macro_f1"], 2),
                            "fold_accuracy": [round(a, 2) for a in per_fold],
                            "train_s": round(sum(f["train_s"] for f in folds), 1)})
            print(results[-1], flush=True)
    wall = time.perf_counter() - start
    command = "python benchmarks/scrap_cls_cv.py " + (
        "--quick" if args.quick else f"--folds {args.folds} --variants {args.variants}")
    run = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "wall_s": round(wall, 1),
           "variants": variants}
    name = "scrap_cls_cv_quick" if args.quick else "scrap_cls_cv"
    payload = merge_earlier(RESULTS / f"{name}.json", args, run, results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    results = payload["results"]
    command = "; ".join(r["command"] for r in payload["runs"])
    wall = sum(r["wall_s"] for r in payload["runs"])
    lines = [f"## scrap_cls: stratified {args.folds}-fold cross-validation on real scrap photos"
             + (" (QUICK, synthetic)" if args.quick else ""), "",
             f"- Command: `{command}`",
             f"- Date: {' / '.join(r['date'] for r in payload['runs'])}; machine: {os.cpu_count()}-core CPU shared "
             f"with other jobs, torch threads {args.threads}; wall {wall / 60:.1f} min in all",
             "- Same recipe as the ablation above (tinynet_e, 112 px, 20 epochs, last epoch scored); folds from "
             "`data.folds`/`data.fold` (StratifiedKFold, seed 0); the 2 truncated JPEGs skipped; pooled over folds.",
             "", "| variant | images scored | top-1 acc % (pooled) | macro-F1 % (pooled) | acc % per fold | paper acc % | train s (all folds) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        paper = f"{PAPER[r['variant']]:.2f}" if r["variant"] in PAPER else "-"
        lines.append(f"| {r['variant']} | {r['images']} | {r['accuracy']:.2f} | {r['macro_f1']:.2f} | "
                     f"{' / '.join(f'{a:.1f}' for a in r['fold_accuracy'])} | {paper} | {r['train_s']:.0f} |")
    by = {r["variant"]: r for r in results}
    if "baseline" in by and "clfsef" in by:
        lines += ["", f"CLFSEF - baseline (pooled): {by['clfsef']['accuracy'] - by['baseline']['accuracy']:+.2f} accuracy "
                  f"points, {by['clfsef']['macro_f1'] - by['baseline']['macro_f1']:+.2f} macro-F1 points."]
    section = "\n".join(lines) + "\n"
    if args.quick:
        (RESULTS / f"{name}.md").write_text(section)
    else:
        update_section("cv", section)
    print(section)


if __name__ == "__main__":
    main()
