"""scrap_cls stratified k-fold on the real scrap photos, repeated over training seeds.

Every photo is scored once per seed, so a variant's accuracy rests on ~331 images instead of 67 (one image
= 0.3 points, not 1.5). The folds stay fixed; only ``train.seed`` (initialisation, augmentation, batch order)
changes between repeats. With 24 grades and ~220 training photos per fold a single run of one variant moves
by several points from seed to seed, so the CLFSEF gain is read as the mean of the per-seed paired
differences (same seed, same folds) with its standard error, not as one run against another.

    python benchmarks/scrap_cls_cv.py --variants baseline,clfsef --seeds 0,1,2,3      # the recorded runs,
    python benchmarks/scrap_cls_cv.py --variants baseline,clfsef --seeds 4,5,6,7      # one or two at a time
    python benchmarks/scrap_cls_cv.py --variants clf,sef --seeds 0,1,2,3
    python benchmarks/scrap_cls_cv.py --report      # rebuild the markdown from scrap_cls_cv.json
    python benchmarks/scrap_cls_cv.py --quick                                          # synthetic smoke run

Same recipe as benchmarks/scrap_cls_ablation.py (last epoch, no checkpoint chosen on the held-out fold).
Writes benchmarks/results/scrap_cls_cv.json and a section of benchmarks/results/scrap_cls.md. Results of
separate processes with the same recipe and folds are merged by (variant, seed), so variants and seeds can
be added later; the paired gains use the seeds both variants have.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_env import machine, write_section  # noqa: E402
from benchmarks.scrap_cls_ablation import PAPER, predictions, recipe, shared_recipe  # noqa: E402
from benchmarks.scrap_cls_common import MARKDOWN, RESULTS  # noqa: E402
from scrapvision.config import load_config  # noqa: E402
from scrapvision.heads.scrap_cls import ScrapClsConfig, ScrapClsTask  # noqa: E402
from scrapvision.heads.scrap_cls_parts.report import classification_metrics  # noqa: E402
from scrapvision.models.clfsef import VARIANTS  # noqa: E402
from scrapvision.trainer import Trainer  # noqa: E402
from scrapvision.tta import TTA_MODES  # noqa: E402


def run_fold(variant: str, fold: int, seed: int, args: argparse.Namespace, runs: Path,
             extra: Sequence[str] = (), test_time: Sequence[str] = ()) -> dict:
    """One variant trained on the other folds and scored on ``fold``; ``extra`` overrides (e.g. model.weights).
    ``test_time`` settings (``TTA@SIZE``) score the same trained model again, under ``test_time``."""
    overrides = recipe(args.quick, args.data, variant, str(runs), args.image_size, args.epochs, seed)
    if not args.quick:
        overrides += [f"data.folds={args.folds}", f"data.fold={fold}"]
    overrides += list(extra)
    task = ScrapClsTask(load_config(ScrapClsConfig, overrides=overrides))
    start = time.perf_counter()
    result = Trainer(task, run_dir=runs / f"{variant}_{seed}_{fold}").fit()
    seconds = time.perf_counter() - start
    model = task.build_model()
    state = torch.load(result.last_path, map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(state)
    y_true, y_pred = predictions(task, model)
    out = {"fold": fold, "train_s": round(seconds, 1), "y_true": y_true.tolist(), "y_pred": y_pred.tolist()}
    if test_time:
        scored = predictions_at(overrides, state, test_time)
        assert all(np.array_equal(t, y_true) for t, _ in scored.values()), "test-time splits differ"
        out["test_time"] = {s: p.tolist() for s, (_, p) in scored.items()}
    return out


def parse_setting(setting: str) -> tuple[str, int]:
    """``hflip@128`` -> ("hflip", 128): scrap_cls's eval.tta and eval.image_size."""
    tta, _, size = setting.partition("@")
    if tta not in TTA_MODES or not size.isdigit():
        sys.exit(f"test-time setting {setting!r}: expected TTA@SIZE, e.g. hflip@128 (TTA: {', '.join(TTA_MODES)})")
    return tta, int(size)


def predictions_at(overrides: Sequence[str], state: dict,
                   settings: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(y_true, y_pred) of the trained weights ``state`` on the validation split of ``overrides`` under each
    test-time setting: what ``scrapvision eval --tta TTA --set eval.image_size=SIZE`` of that checkpoint scores."""
    out = {}
    for setting in settings:
        tta, size = parse_setting(setting)
        task = ScrapClsTask(load_config(ScrapClsConfig, overrides=[*overrides, f"eval.tta={tta}",
                                                                   f"eval.image_size={size}"]))
        model = task.build_model()
        model.load_state_dict(state)
        out[setting] = predictions(task, model)
    return out


def run_variant(variant: str, args: argparse.Namespace, runs: Path) -> dict:
    """All seeds x folds of one variant: pooled accuracy / macro-F1 and training seconds per seed."""
    per_seed = []
    for seed in args.seed_list:
        folds = [run_fold(variant, k, seed, args, runs) for k in range(args.folds)]
        pooled = classification_metrics(np.concatenate([f["y_true"] for f in folds]),
                                        np.concatenate([f["y_pred"] for f in folds]))
        per_seed.append({"seed": seed, "images": sum(len(f["y_true"]) for f in folds),
                         "accuracy": round(100 * pooled["accuracy"], 2), "macro_f1": round(100 * pooled["macro_f1"], 2),
                         "fold_accuracy": [round(100 * classification_metrics(np.array(f["y_true"]),
                                                                              np.array(f["y_pred"]))["accuracy"], 2)
                                           for f in folds],
                         "train_s": round(sum(f["train_s"] for f in folds), 1)})
        print(f"{variant} seed {seed}: {per_seed[-1]}", flush=True)
    return summary(variant, per_seed)


def summary(variant: str, per_seed: list[dict]) -> dict:
    """Mean and standard deviation over seeds of the pooled accuracy and macro-F1."""
    per_seed = sorted(per_seed, key=lambda r: r["seed"])
    acc = np.array([r["accuracy"] for r in per_seed])
    f1 = np.array([r["macro_f1"] for r in per_seed])
    sd = lambda a: round(float(a.std(ddof=1)), 2) if len(a) > 1 else 0.0  # noqa: E731
    timed = [r for r in per_seed if "train_s" in r]  # the first recorded run did not time each seed
    return {"variant": variant, "images": per_seed[0]["images"], "per_seed": per_seed,
            "accuracy": round(float(acc.mean()), 2), "accuracy_sd": sd(acc),
            "macro_f1": round(float(f1.mean()), 2), "macro_f1_sd": sd(f1),
            "train_s_per_fold": round(float(np.mean([r["train_s"] / len(r["fold_accuracy"]) for r in timed])), 1)
            if timed else None, "timed_seeds": len(timed)}


def paired_gain(a: dict, b: dict, key: str = "accuracy") -> tuple[float, float, int]:
    """Mean and standard error of ``b - a`` over the seeds both variants ran (same seed = same folds)."""
    sa = {s["seed"]: s[key] for s in a["per_seed"]}
    diffs = np.array([s[key] - sa[s["seed"]] for s in b["per_seed"] if s["seed"] in sa])
    if len(diffs) == 0:
        return float("nan"), float("nan"), 0
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    return float(diffs.mean()), se, len(diffs)


def merge_earlier(path: Path, args: argparse.Namespace, run: dict, results: list[dict]) -> dict:
    """Add this run's (variant, seed) results to those of earlier runs with the same recipe and folds, so
    variants and seeds can run as separate processes; a (variant, seed) run again replaces the old one."""
    recipe_now = shared_recipe(recipe(args.quick, args.data, VARIANTS[0], "", args.image_size, args.epochs))
    runs, seeds = [run], {}
    if path.exists():
        earlier = json.loads(path.read_text())
        if shared_recipe(earlier.get("recipe", [])) == recipe_now and earlier.get("folds") == args.folds:
            runs = earlier.get("runs", []) + runs
            for r in earlier["results"]:
                for entry in r["per_seed"]:
                    seeds[(r["variant"], entry["seed"])] = entry
    for r in results:
        for entry in r["per_seed"]:
            seeds[(r["variant"], entry["seed"])] = entry
    merged = [summary(v, [e for (variant, _), e in seeds.items() if variant == v])
              for v in VARIANTS if any(variant == v for variant, _ in seeds)]
    return {"folds": args.folds, "threads": args.threads, "recipe": recipe_now, "runs": runs, "results": merged}


def markdown(payload: dict, args: argparse.Namespace) -> str:
    results = payload["results"]
    command = "; ".join(r["command"] for r in payload["runs"])
    wall = sum(r["wall_s"] for r in payload["runs"])
    seeds = sorted({e["seed"] for r in results for e in r["per_seed"]})
    legacy = f"{os.cpu_count()}-core CPU, torch threads {args.threads}"  # runs recorded without their machine
    hosts = " / ".join(dict.fromkeys(r.get("machine", legacy) for r in payload["runs"]))
    lines = [f"## scrap_cls: stratified {args.folds}-fold cross-validation on real scrap photos, repeated over seeds"
             + (" (QUICK, synthetic)" if args.quick else ""), "",
             f"- Command: `{command}`",
             f"- Date: {' / '.join(r['date'] for r in payload['runs'])}; machine: {hosts}; wall {wall / 60:.1f} min in all (processes may have run side by side)",
             f"- Recipe (every variant): `{' '.join(shared_recipe(payload['recipe']))}`; "
             f"last epoch scored; folds from `data.folds`/`data.fold` (StratifiedKFold, seed 0, the same for every "
             f"seed); `train.seed` in {seeds}; the 2 truncated JPEGs skipped. Accuracy pooled over the folds of a "
             "seed, then mean and standard deviation over seeds.",
             "", "| variant | images scored | seeds | top-1 acc % (mean +- sd over seeds) | macro-F1 % | acc % per seed | "
             "paper acc % | train s per fold (seeds timed) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        paper = f"{PAPER[r['variant']]:.2f}" if r["variant"] in PAPER else "-"
        per_seed = " / ".join(f"{s['accuracy']:.1f}" for s in r["per_seed"])
        train = "-" if r["train_s_per_fold"] is None else f"{r['train_s_per_fold']:.0f} ({r['timed_seeds']} seeds)"
        lines.append(f"| {r['variant']} | {r['images']} | {len(r['per_seed'])} | {r['accuracy']:.2f} +- {r['accuracy_sd']:.2f} | "
                     f"{r['macro_f1']:.2f} +- {r['macro_f1_sd']:.2f} | "
                     f"{per_seed} | {paper} | {train} |")
    by = {r["variant"]: r for r in results}
    if "baseline" in by:
        lines += ["", "Gain over the baseline, paired by seed (mean +- standard error of the per-seed differences):", ""]
        for variant in VARIANTS:
            if variant in by and variant != "baseline":
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
    parser.add_argument("--report", action="store_true", help="only rebuild the markdown section from the JSON file")
    args = parser.parse_args()
    if args.report:
        path = RESULTS / "scrap_cls_cv.json"
        if not path.exists():
            sys.exit(f"{path}: no recorded run yet")
        payload = json.loads(path.read_text())
        payload["results"] = [summary(r["variant"], r["per_seed"]) for r in payload["results"]]
        path.write_text(json.dumps(payload, indent=1))
        args.folds = payload["folds"]
        write_section(MARKDOWN, "scrap_cls:cv", markdown(payload, args))
        return
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
    host = machine()  # before training: the load at start
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scrap_cls_cv_") as tmp:
        results = [run_variant(v, args, Path(tmp)) for v in variants]
    command = "python benchmarks/scrap_cls_cv.py " + " ".join(sys.argv[1:])
    run = {"command": command.strip(), "date": time.strftime("%Y-%m-%d %H:%M %Z"), "machine": host,
           "wall_s": round(time.perf_counter() - start, 1), "variants": variants}
    name = "scrap_cls_cv_quick" if args.quick else "scrap_cls_cv"
    payload = merge_earlier(RESULTS / f"{name}.json", args, run, results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    section = markdown(payload, args)
    write_section(MARKDOWN, "scrap_cls:cv", section, quick=args.quick)
    print(section)


if __name__ == "__main__":
    main()
