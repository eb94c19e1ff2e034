"""scrap_cls stratified k-fold on the real scrap photos, repeated over training seeds.

Every photo is scored once per seed, so a variant's accuracy rests on ~331 images instead of 67 (one image
= 0.3 points, not 1.5). The folds stay fixed; only ``train.seed`` (initialisation, augmentation, batch order)
changes between repeats. With 24 grades and ~220 training photos per fold a single run of one variant moves
by several points from seed to seed, so the CLFSEF gain is read as the mean of the per-seed paired
differences (same seed, same folds) with its standard error, not as one run against another.

    python benchmarks/scrap_cls_cv.py --variants baseline,clfsef --seeds 0,1,2,3,4 &   # the recorded run:
    python benchmarks/scrap_cls_cv.py --variants clf,sef --seeds 0,1,2,3,4 &           # two processes
    python benchmarks/scrap_cls_cv.py --quick                                          # synthetic smoke run

Same recipe as benchmarks/scrap_cls_ablation.py (last epoch, no checkpoint chosen on the held-out fold).
Writes benchmarks/results/scrap_cls_cv.json and a section of benchmarks/results/scrap_cls.md. Variants run
by separate processes with the same recipe, folds and seeds are merged into one table.
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


def run_fold(variant: str, fold: int, seed: int, args: argparse.Namespace, runs: Path) -> dict:
    overrides = recipe(args.quick, args.data, variant, str(runs), args.image_size, args.epochs, seed)
    if not args.quick:
        overrides += [f"data.folds={args.folds}", f"data.fold={fold}"]
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=overrides))
    start = time.perf_counter()
    result = Trainer(task, run_dir=runs / f"{variant}_{seed}_{fold}").fit()
    seconds = time.perf_counter() - start
    model = task.build_model()
    model.load_state_dict(torch.load(result.last_path, map_location="cpu", weights_only=True)["model"])
    y_true, y_pred = predictions(task, model)
    return {"fold": fold, "train_s": round(seconds, 1), "y_true": y_true.tolist(), "y_pred": y_pred.tolist()}


def run_variant(variant: str, args: argparse.Namespace, runs: Path) -> dict:
    """All seeds x folds of one variant: pooled accuracy / macro-F1 per seed, and their mean and spread."""
    per_seed, train_s = [], 0.0
    for seed in args.seed_list:
        folds = [run_fold(variant, k, seed, args, runs) for k in range(args.folds)]
        pooled = classification_metrics(np.concatenate([f["y_true"] for f in folds]),
                                        np.concatenate([f["y_pred"] for f in folds]))
        per_seed.append({"seed": seed, "images": sum(len(f["y_true"]) for f in folds),
                         "accuracy": round(100 * pooled["accuracy"], 2), "macro_f1": round(100 * pooled["macro_f1"], 2),
                         "fold_accuracy": [round(100 * classification_metrics(np.array(f["y_true"]),
                                                                              np.array(f["y_pred"]))["accuracy"], 2)
                                           for f in folds]})
        train_s += sum(f["train_s"] for f in folds)
        print(f"{variant} seed {seed}: {per_seed[-1]}", flush=True)
    acc = np.array([s["accuracy"] for s in per_seed])
    f1 = np.array([s["macro_f1"] for s in per_seed])
    return {"variant": variant, "images": per_seed[0]["images"], "per_seed": per_seed,
            "accuracy": round(float(acc.mean()), 2), "accuracy_sd": round(float(acc.std(ddof=1)), 2) if len(acc) > 1 else 0.0,
            "macro_f1": round(float(f1.mean()), 2), "macro_f1_sd": round(float(f1.std(ddof=1)), 2) if len(f1) > 1 else 0.0,
            "train_s": round(train_s, 1)}


def paired_gain(a: dict, b: dict, key: str = "accuracy") -> tuple[float, float, int]:
    """Mean and standard error of ``b - a`` over the seeds both variants ran (same seed = same folds)."""
    sa = {s["seed"]: s[key] for s in a["per_seed"]}
    diffs = np.array([s[key] - sa[s["seed"]] for s in b["per_seed"] if s["seed"] in sa])
    if len(diffs) == 0:
        return float("nan"), float("nan"), 0
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return float(diffs.mean()), se, len(diffs)


def merge_earlier(path: Path, args: argparse.Namespace, run: dict, results: list[dict]) -> dict:
    """Keep the variants of earlier runs with the same recipe, folds and seeds, so variants can run separately."""
    recipe_now = recipe(args.quick, args.data, "VARIANT", "OUT", args.image_size, args.epochs, -1)
    runs, kept = [run], []
    if path.exists():
        earlier = json.loads(path.read_text())
        if (earlier.get("recipe") == recipe_now and earlier.get("folds") == args.folds
                and earlier.get("seeds") == args.seed_list):
            rerun = {r["variant"] for r in results}
            kept = [r for r in earlier["results"] if r["variant"] not in rerun]
            runs = [r for r in earlier.get("runs", []) if set(r["variants"]) - rerun] + runs
    order = {v: i for i, v in enumerate(VARIANTS)}
    merged = sorted(kept + results, key=lambda r: order[r["variant"]])
    return {"folds": args.folds, "seeds": args.seed_list, "threads": args.threads, "recipe": recipe_now,
            "runs": runs, "results": merged}


def markdown(payload: dict, args: argparse.Namespace) -> str:
    results = payload["results"]
    command = "; ".join(r["command"] for r in payload["runs"])
    wall = sum(r["wall_s"] for r in payload["runs"])
    seeds = payload["seeds"]
    lines = [f"## scrap_cls: stratified {args.folds}-fold cross-validation on real scrap photos, {len(seeds)} seed(s)"
             + (" (QUICK, synthetic)" if args.quick else ""), "",
             f"- Command: `{command}`",
             f"- Date: {' / '.join(r['date'] for r in payload['runs'])}; machine: {os.cpu_count()}-core CPU, torch "
             f"threads {args.threads}; wall {wall / 60:.1f} min in all (processes may have run side by side)",
             f"- Recipe (every variant): `{' '.join(o for o in payload['recipe'] if 'VARIANT' not in o and 'OUT' not in o and 'seed=-1' not in o)}`; "
             f"last epoch scored; folds from `data.folds`/`data.fold` (StratifiedKFold, seed 0, the same for every "
             f"seed); `train.seed` in {seeds}; the 2 truncated JPEGs skipped. Accuracy pooled over the folds of a "
             "seed, then mean and standard deviation over seeds.",
             "", "| variant | images scored | top-1 acc % (mean +- sd over seeds) | macro-F1 % | acc % per seed | "
             "paper acc % | train s (all runs) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        paper = f"{PAPER[r['variant']]:.2f}" if r["variant"] in PAPER else "-"
        per_seed = " / ".join(f"{s['accuracy']:.1f}" for s in r["per_seed"])
        lines.append(f"| {r['variant']} | {r['images']} | {r['accuracy']:.2f} +- {r['accuracy_sd']:.2f} | "
                     f"{r['macro_f1']:.2f} +- {r['macro_f1_sd']:.2f} | "
                     f"{per_seed} | {paper} | {r['train_s']:.0f} |")
    by = {r["variant"]: r for r in results}
    if "baseline" in by:
        lines += ["", "Gain over the baseline, paired by seed (mean +- standard error of the per-seed differences):", ""]
        for variant in ("clf", "sef", "clfsef"):
            if variant in by:
                acc, acc_se, n = paired_gain(by["baseline"], by[variant])
                f1, f1_se, _ = paired_gain(by["baseline"], by[variant], "macro_f1")
                lines.append(f"- {variant} - baseline: {acc:+.2f} +- {acc_se:.2f} accuracy points, {f1:+.2f} +- "
                             f"{f1_se:.2f} macro-F1 points ({n} seeds)")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2,3,4")
    parser.add_argument("--variants", default="baseline,clfsef", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))
                        / "scrap_grades")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        sys.exit(f"--variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    try:
        args.seed_list = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        sys.exit(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2")
    if args.quick:
        args.folds = 2
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scrap_cls_cv_") as tmp:
        results = [run_variant(v, args, Path(tmp)) for v in variants]
    command = "python benchmarks/scrap_cls_cv.py " + " ".join(sys.argv[1:])
    run = {"command": command.strip(), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
           "wall_s": round(time.perf_counter() - start, 1), "variants": variants}
    name = "scrap_cls_cv_quick" if args.quick else "scrap_cls_cv"
    payload = merge_earlier(RESULTS / f"{name}.json", args, run, results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    section = markdown(payload, args)
    if args.quick:
        (RESULTS / f"{name}.md").write_text(section)
    else:
        update_section("cv", section)
    print(section)


if __name__ == "__main__":
    main()
