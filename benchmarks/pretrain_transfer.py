"""scrap_cls from scratch against scrap_cls from a SimCLR-pretrained backbone, same folds and same seeds.

The folds, the fine-tuning recipe and the scoring are those of benchmarks/scrap_cls_cv.py (stratified
3-fold CV of the real scrap photos, tinynet_e, 112 px, 20 epochs, last epoch scored). For each fold the
backbone is pretrained (``pretrain`` task, labels ignored) on the photos of the two TRAINING folds only,
so no scored photo is ever seen in pretraining; one pretraining per fold serves every seed and variant.
``--snapshots`` also fine-tunes from the backbone as it was after those pretraining epochs: transfer
accuracy against pretraining time from one pretraining run (its cosine schedule is that of the full run).

    python benchmarks/pretrain_transfer.py --seeds 0 --fold-list 0,1      # two processes side by side,
    python benchmarks/pretrain_transfer.py --seeds 0 --fold-list 2        # one thread each
    python benchmarks/pretrain_transfer.py --seeds 0,1,2,3 --variants baseline,clfsef   # full scale
    python benchmarks/pretrain_transfer.py --report                       # rebuild the markdown
    python benchmarks/pretrain_transfer.py --pretrain-epochs 60 --frozen --arms pretrained-frozen  # one more arm
    python benchmarks/pretrain_transfer.py --pretrain-epochs 180 --ema 0.99 --arms pretrained+ema  # weight average
    python benchmarks/pretrain_transfer.py --pretrain-epochs 180 --arms pretrained --test-time hflip@128 --tag rerun

Pretrained backbones are kept in ``--work`` (default /tmp/pretrain_transfer), keyed by fold and pretraining
recipe, so later processes (more seeds, other variants) reuse them; an interrupted pretraining resumes.
Results of separate processes merge by (recipe, arm, variant, seed, fold) in results/pretrain_transfer.json (a
longer pretraining is another recipe beside the first, not a replacement);
a seed is summarised once all its folds are in.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_env import locked_json_update, machine, now  # noqa: E402
from benchmarks.scrap_cls_ablation import recipe, shared_recipe  # noqa: E402
from benchmarks.scrap_cls_common import RESULTS  # noqa: E402
from benchmarks.scrap_cls_cv import paired_gain, parse_setting, run_fold, summary  # noqa: E402
from scrapvision.config import load_config  # noqa: E402
from scrapvision.data.classification import find_records, split_indices  # noqa: E402
from scrapvision.heads.pretrain import BACKBONE_FILE, PretrainConfig, PretrainTask  # noqa: E402
from scrapvision.heads.scrap_cls_parts.report import classification_metrics  # noqa: E402
from scrapvision.trainer import Trainer  # noqa: E402

JSON, MD, PLOT = RESULTS / "pretrain_transfer.json", RESULTS / "pretrain_transfer.md", RESULTS / "pretrain_transfer.png"


def pretrain_recipe(args: argparse.Namespace) -> list[str]:
    return ["model.backbone=tinynet_e", f"data.crop_size={args.crop}", "data.val_fraction=0", "data.unreadable=skip",
            f"train.epochs={args.pretrain_epochs}", f"train.batch_size={args.batch}", "train.seed=0",
            "train.device=cpu", *args.pretrain_set]


def training_photos(data: Path, folds: int, fold: int) -> list[Path]:
    """The photos scrap_cls trains on for ``fold`` (its own split: data.split_seed=0, records incl. unreadable)."""
    records = find_records(data)
    train, _ = split_indices([r.label for r in records], seed=0, folds=folds, fold=fold)
    return [records[i].path for i in train]


class SnapshotPretrain(PretrainTask):
    """Also keeps a copy of the backbone after each epoch listed in ``snapshots``."""

    snapshots: tuple[int, ...] = ()

    def after_checkpoint(self, model, run_dir, final):
        super().after_checkpoint(model, run_dir, final)
        epoch = int(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["epoch"])
        if epoch in self.snapshots:
            shutil.copyfile(run_dir / BACKBONE_FILE, run_dir / f"backbone_epoch{epoch}.safetensors")


def pretrain_fold(fold: int, args: argparse.Namespace) -> dict:
    """Pretrain on the training folds of ``fold`` (cached in --work; resumed when interrupted)."""
    overrides = pretrain_recipe(args)
    key = hashlib.sha1(json.dumps([overrides, args.folds, str(args.data), args.extra]).encode()).hexdigest()[:10]
    work = args.work / f"{key}_fold{fold}"
    done = work / "pretrain.json"
    if done.exists():
        return json.loads(done.read_text())
    photos = work / "photos"  # links to the training-fold photos: the pretraining task reads folders
    shutil.rmtree(photos, ignore_errors=True)
    photos.mkdir(parents=True)
    for i, path in enumerate(training_photos(args.data, args.folds, fold)):
        (photos / f"{i:04d}{path.suffix}").symlink_to(path)
    roots = ",".join([str(photos), *args.extra])
    task = SnapshotPretrain(load_config(PretrainConfig, overrides=[*overrides, f"data.root={roots}"]))
    task.snapshots = tuple(args.snapshot_list)
    run = work / "run"
    start = time.perf_counter()
    Trainer(task, run_dir=run, resume=run if (run / "last.pt").exists() else None).fit()
    seconds = time.perf_counter() - start
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = {r["epoch"]: r for r in rows if r.get("kind") == "epoch"}
    steps, loop_s = epochs[max(epochs)]["step"], epochs[max(epochs)]["elapsed_s"]  # elapsed_s: training loop only
    info = {"fold": fold, "key": key, "images": len(task.images()), "steps": steps, "seconds": round(seconds, 1),
            "loop_seconds": loop_s, "images_per_s": round(steps * args.batch / loop_s, 2),
            "first_loss": round(epochs[1]["train_loss"], 4),
            "last_loss": round(epochs[max(epochs)]["train_loss"], 4), "backbone": str(run / BACKBONE_FILE),
            "snapshots": {e: {"file": str(run / f"backbone_epoch{e}.safetensors"), "steps": epochs[e]["step"],
                              "seconds": epochs[e]["elapsed_s"]} for e in args.snapshot_list if e in epochs}}
    done.write_text(json.dumps(info, indent=1))
    return info


def arms(info: dict, args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """(arm name, extra scrap_cls overrides): scratch, every snapshot, the full pretraining."""
    out = [("scratch", [])]
    out += [(f"pretrained@{e}ep", [f"model.weights={s['file']}"]) for e, s in sorted(info["snapshots"].items(),
                                                                                      key=lambda kv: int(kv[0]))]
    out.append(("pretrained", [f"model.weights={info['backbone']}"]))
    if args.frozen:  # the same backbone kept as pretrained: only the new head learns
        out.append(("pretrained-frozen", [f"model.weights={info['backbone']}", "optim.backbone_lr_scale=0"]))
    if args.ema:  # scratch and the full pretraining again, scoring a moving average of the fine-tuned weights
        out += [(f"{arm}+ema", [*extra, f"train.ema_decay={args.ema}"]) for arm, extra in out
                if arm in ("scratch", "pretrained")]
    wanted = [a for a in args.arms.split(",") if a]
    return [(arm, extra) for arm, extra in out if not wanted or arm in wanted]


def load_all() -> list[dict]:
    """Every recorded recipe (fine-tuning, pretraining, folds), each with its own runs and fold results."""
    if not JSON.exists():
        return []
    data = json.loads(JSON.read_text())
    return data["recipes"] if "recipes" in data else [data]  # before 2026-12-01 the file held one recipe


def update(recipe_now: dict, change: Callable[[dict], None]) -> list[dict]:
    """Change the record of ``recipe_now`` under a file lock (``locked_json_update``): a run of another recipe
    (say, a longer pretraining) keeps the others."""

    def change_recipe(data: dict) -> None:
        if "recipes" not in data:  # before 2026-12-01 the file held one recipe
            legacy = dict(data)
            data.clear()
            data["recipes"] = [legacy]
        payload = next((p for p in data["recipes"] if p["recipe"] == recipe_now), None)
        if payload is None:
            payload = {"recipe": recipe_now, "runs": [], "pretraining": {}, "folds": []}
            data["recipes"].append(payload)
        change(payload)

    return locked_json_update(JSON, change_recipe, lambda: {"recipes": []})["recipes"]


def add_fold(payload: dict, entry: dict) -> None:
    """One fold result, replacing an earlier one of the same arm, variant, seed and fold."""
    same = ("arm", "variant", "seed", "fold")
    payload["folds"] = [f for f in payload["folds"] if any(f[k] != entry[k] for k in same)] + [entry]


def summaries(payload: dict, n_folds: int) -> dict[tuple[str, str], dict]:
    """(arm, variant) -> scrap_cls_cv's summary over the seeds whose folds are all in."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for f in payload["folds"]:
        groups.setdefault((f["arm"], f["variant"], f["seed"]), []).append(f)
    per: dict[tuple[str, str], list[dict]] = {}
    for (arm, variant, seed), folds in groups.items():
        if len(folds) != n_folds:
            continue
        folds = sorted(folds, key=lambda f: f["fold"])
        pooled = classification_metrics(np.concatenate([f["y_true"] for f in folds]),
                                        np.concatenate([f["y_pred"] for f in folds]))
        per.setdefault((arm, variant), []).append({
            "seed": seed, "images": sum(len(f["y_true"]) for f in folds),
            "accuracy": round(100 * pooled["accuracy"], 2), "macro_f1": round(100 * pooled["macro_f1"], 2),
            "fold_accuracy": [round(100 * float(np.mean(np.array(f["y_true"]) == np.array(f["y_pred"]))), 2)
                              for f in folds],
            "train_s": round(sum(f["train_s"] for f in folds), 1)})
    return {k: summary(k[1], v) for k, v in per.items()}


def test_time_arm(arm: str, setting: str) -> str:
    """``pretrained`` scored under ``hflip@128`` -> ``pretrained [hflip, 128 px]``."""
    tta, size = parse_setting(setting)
    return f"{arm} [{tta}, {size} px]"


def base_arm(arm: str) -> str:
    """The trained arm behind a test-time arm (the arm itself otherwise)."""
    return arm.split(" [")[0]


def arm_order(arm: str) -> tuple[int, int, str]:
    if " [" in arm:
        return (*arm_order(base_arm(arm))[:2], arm)
    if arm.endswith("+ema"):
        return (3, arm_order(arm.removesuffix("+ema"))[0], "")
    if arm == "scratch":
        return (0, 0, "")
    if "@" in arm:
        return (1, int(arm.split("@")[1].removesuffix("ep")), "")
    return (2, 1 if arm.endswith("-frozen") else 0, "")


def _pretrain_value(payload: dict, key: str) -> int:
    return int(next(o for o in payload["recipe"]["pretrain"] if o.startswith(f"{key}=")).split("=")[1])


def finetune_size(payload: dict) -> int:
    """The input size a recipe trained and scored scrap_cls at (the last ``data.image_size``: overrides come later)."""
    return int([o for o in payload["recipe"]["finetune"] if o.startswith("data.image_size=")][-1].split("=")[1])


def pretrain_epochs(payload: dict) -> int:
    return _pretrain_value(payload, "train.epochs")


def arm_steps(payload: dict) -> dict[str, float]:
    """Pretraining steps (mean over folds) behind each arm; 0 for scratch. Steps, not the wall clock, compare
    runs made under different machine loads."""
    pretraining = list(payload["pretraining"].values())
    full = [p["steps"] for p in pretraining]
    steps: dict[str, list[float]] = {"scratch": [0.0], "pretrained": full, "pretrained-frozen": full,
                                     "scratch+ema": [0.0], "pretrained+ema": full}
    for p in pretraining:
        for e, snap in p["snapshots"].items():
            steps.setdefault(f"pretrained@{e}ep", []).append(snap["steps"])
    return {k: float(np.mean(v)) for k, v in steps.items()}


def best_rate(every: list[dict]) -> float:
    """The fastest pretraining throughput measured (images/s, 2 views each): steps -> minutes on a quiet machine."""
    return max(p["images_per_s"] for payload in every for p in payload["pretraining"].values())


def minutes(payload: dict, steps: float, rate: float) -> float:
    return steps * _pretrain_value(payload, "train.batch_size") / rate / 60


def plot_curve(every: list[dict], n_folds: int) -> Path | None:
    """Pooled top-1 against pretraining steps (0 = from scratch), with minutes at the best measured rate on a
    second axis: one line per recipe and variant."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for payload in sorted(every, key=pretrain_epochs):
        table, steps = summaries(payload, n_folds), arm_steps(payload)
        for variant in sorted({v for _, v in table}):
            points = sorted((steps[a], r["accuracy"], r["accuracy_sd"], len(r["per_seed"]))
                            for (a, v), r in table.items()
                            if v == variant and a in steps and "frozen" not in a and "+ema" not in a)
            if len(points) >= 2:
                x, y, e, n = zip(*points)
                ax.errorbar(x, y, yerr=e, marker="o", capsize=3,
                            label=f"{variant} at {finetune_size(payload)} px, {pretrain_epochs(payload)}-epoch pretraining "
                                  f"({'-'.join(map(str, sorted({min(n), max(n)})))} seed(s))")
    if not ax.lines:
        return None
    rate, batch = best_rate(every), _pretrain_value(every[0], "train.batch_size")
    ax.set(xlabel=f"SimCLR steps per fold (batch {batch})", ylabel="scrap_cls top-1 % (3-fold CV)",
           title="transfer accuracy against pretraining time")
    top = ax.secondary_xaxis("top", functions=(lambda s: s * batch / rate / 60, lambda m: m * 60 * rate / batch))
    top.set_xlabel(f"minutes per fold at the best measured rate ({rate:.1f} images/s, 1 thread)")
    ax.legend(fontsize=8)
    fig.savefig(PLOT, dpi=100, bbox_inches="tight")
    return PLOT


def _se(value: float) -> str:
    return "n/a (1 seed)" if np.isnan(value) else f"{value:.2f}"


def recipe_markdown(payload: dict, n_folds: int, rate: float) -> list[str]:
    """Commands, recipe, pretraining table, accuracy table and paired gains of one recipe."""
    table, steps = summaries(payload, n_folds), arm_steps(payload)
    pretraining = [payload["pretraining"][k] for k in sorted(payload["pretraining"])]
    setup = payload["recipe"]
    tag = f" ({setup['tag']})" if setup.get("tag") else ""
    root = next(o.partition("=")[2] for o in setup["finetune"] if o.startswith("data.root="))
    changed = [o for o in setup["finetune"] if o not in shared_recipe(recipe(False, Path(root), "VARIANT", ""))]
    tag += f", fine-tuned with `{' '.join(changed)}`" if changed else ""  # e.g. the linear-probe recipe
    lines = [f"### {pretrain_epochs(payload)} epochs of SimCLR pretraining per fold{tag}", "",
             "- Commands: " + "; ".join(f"`{r['command']}` ({r['date']}, wall {r['wall_s'] / 60:.1f} min, "
                                       f"{r['machine']})" for r in payload["runs"]),
             f"- Fine-tuning recipe (as benchmarks/scrap_cls_cv.py): `{' '.join(setup['finetune'])}`; "
             "last epoch scored; folds from StratifiedKFold (seed 0), the same for every seed and arm.",
             f"- Pretraining (one per fold, seed 0, labels ignored, only the photos of that fold's training folds"
             f"{' plus ' + ', '.join(setup['extra']) if setup['extra'] else ''}): "
             f"SimCLR, `{' '.join(setup['pretrain'])}`.",
             *(f"- {note}" for note in payload.get("notes", [])), ""]  # e.g. a run stopped part-way
    if pretraining:
        lines += ["| fold | images | steps | wall min (decode + train) | training images/s (2 views each) | "
                  "NT-Xent first -> last epoch |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['fold']} | {p['images']} | {p['steps']} | {p['seconds'] / 60:.1f} | {p['images_per_s']:.1f} | "
                  f"{p['first_loss']:.3f} -> {p['last_loss']:.3f} |" for p in pretraining]
        lines += ["", "A resumed pretraining counts only the time of its last process. Wall times depend on the "
                  "machine's load (given with each command).", ""]
    lines += [f"| arm | pretraining steps per fold (min at {rate:.1f} images/s) | variant | seeds | images scored | top-1 % (mean +- sd) | macro-F1 % | "
              "top-1 per seed |", "|---|---|---|---|---|---|---|---|"]
    ordered = sorted(table.items(), key=lambda kv: (kv[0][1], arm_order(kv[0][0])))
    for (arm, variant), r in ordered:
        per_seed = " / ".join(f"{s['accuracy']:.1f}" for s in r["per_seed"])
        n_steps = steps[base_arm(arm)]
        lines.append(f"| {arm} | {n_steps:.0f} ({minutes(payload, n_steps, rate):.1f}) | {variant} | {len(r['per_seed'])} | {r['images']} | "
                     f"{r['accuracy']:.2f} +- {r['accuracy_sd']:.2f} | {r['macro_f1']:.2f} +- {r['macro_f1_sd']:.2f} | "
                     f"{per_seed} |")
    gains = []
    for (arm, variant), r in ordered:
        # +ema: against the same arm without; a test-time arm: against the same models scored plainly
        base = base_arm(arm) if " [" in arm else arm.removesuffix("+ema") if arm.endswith("+ema") else "scratch"
        if arm != "scratch" and (base, variant) in table:
            acc, acc_se, n = paired_gain(table[(base, variant)], r)
            f1, f1_se, _ = paired_gain(table[(base, variant)], r, "macro_f1")
            gains.append(f"- {variant}, {arm} - {base}: {acc:+.2f} +- {_se(acc_se)} top-1 points, {f1:+.2f} +- "
                         f"{_se(f1_se)} macro-F1 points ({n} seed(s), paired by seed)")
    if gains:
        lines += ["", "Gain from pretraining (for the +ema arms, from the weight average; for the [TTA, size] arms, "
                  "from those test-time settings on the same trained models), paired by seed "
                  "(mean +- standard error of the per-seed differences):", "", *gains]
    incomplete = sorted({(f["arm"], f["variant"], f["seed"]) for f in payload["folds"]}
                        - {(a, v, s["seed"]) for (a, v), r in table.items() for s in r["per_seed"]})
    if incomplete:
        lines += ["", "Not summarised yet (folds missing): " + ", ".join(f"{a}/{v}/seed {s}" for a, v, s in incomplete)]
    return lines + [""]


def markdown(every: list[dict], n_folds: int) -> str:
    """Every recipe's section, shortest pretraining first, then the transfer curve over all of them (image path
    as seen from RESULTS.md, which ``python -m benchmarks assemble`` builds from this file)."""
    lines = ["## scrap_cls from scratch vs from a SimCLR-pretrained backbone (3-fold CV, real scrap photos)", ""]
    for payload in sorted(every, key=pretrain_epochs):
        lines += recipe_markdown(payload, n_folds, best_rate(every))
    if plot_curve(every, n_folds):
        lines += [f"![transfer accuracy against pretraining time](results/{PLOT.name})"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=data / "scrap_grades")
    parser.add_argument("--extra", default="", help="comma-separated unlabeled folders added to every pretraining")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-list", default="", help="folds this process runs (default: all)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default="baseline")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=20, help="scrap_cls fine-tuning epochs")
    parser.add_argument("--crop", type=int, default=112)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--pretrain-epochs", type=int, default=150)
    parser.add_argument("--snapshots", default="", help="pretraining epochs to fine-tune from as well, e.g. 25,75")
    parser.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra pretrain overrides (part of the pretraining recipe)")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                        help="scrap_cls overrides on top of the fine-tuning recipe (part of it, so recorded as a recipe "
                        "of its own), e.g. --variants probe --finetune-set data.augment=none")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pretrain_transfer")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain-only", action="store_true", help="only pretrain (and cache) the folds")
    parser.add_argument("--frozen", action="store_true",
                        help="add the arm pretrained-frozen: the pretrained backbone not fine-tuned "
                             "(optim.backbone_lr_scale=0)")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="add the arms scratch+ema and pretrained+ema: fine-tuned with train.ema_decay=EMA")
    parser.add_argument("--arms", default="", help="run only these arms (comma-separated names, e.g. "
                                                   "pretrained-frozen); default: all")
    parser.add_argument("--test-time", default="",
                        help="also score each fine-tuned model with these scrap_cls test-time settings TTA@SIZE "
                             "(eval.tta, eval.image_size), comma-separated, e.g. hflip@128; recorded as the arm "
                             "'ARM [hflip, 128 px]'")
    parser.add_argument("--tag", default="", help="record the runs as a recipe of their own beside the untagged one "
                        "(e.g. a rerun on later code: its pretraining and arms never replace the recorded ones)")
    parser.add_argument("--report", action="store_true", help="only rebuild the markdown from the JSON file")
    args = parser.parse_args()
    args.quick = False
    args.test_time = [s for s in args.test_time.split(",") if s]
    for setting in args.test_time:
        parse_setting(setting)  # a typo stops the run now, not after the first fine-tuning
    args.extra = [e for e in args.extra.split(",") if e]
    args.snapshot_list = sorted(int(e) for e in args.snapshots.split(",") if e)
    recipe_now = {"finetune": shared_recipe(recipe(False, args.data, "VARIANT", "", args.image_size, args.epochs))
                  + args.finetune_set,
                  "pretrain": pretrain_recipe(args), "extra": args.extra, "folds": args.folds,
                  **({"tag": args.tag} if args.tag else {})}
    if args.report:
        if not JSON.exists():
            sys.exit(f"{JSON}: no recorded run yet")
        MD.write_text(markdown(load_all(), args.folds))
        print(MD.read_text())
        return
    torch.set_num_threads(args.threads)
    folds = [int(k) for k in args.fold_list.split(",")] if args.fold_list else list(range(args.folds))
    seeds = [int(s) for s in args.seeds.split(",")]
    start, started, where = time.perf_counter(), now(), machine()
    for fold in folds:
        info = pretrain_fold(fold, args)
        update(recipe_now, lambda p, fold=fold, info=info: p["pretraining"].__setitem__(str(fold), info))
        for seed in [] if args.pretrain_only else seeds:
            for variant in args.variants.split(","):
                for arm, extra in arms(info, args):
                    with tempfile.TemporaryDirectory(prefix="pretrain_transfer_") as tmp:
                        result = run_fold(variant, fold, seed, args, Path(tmp), [*args.finetune_set, *extra],
                                          args.test_time)
                    scored = {arm: result["y_pred"]}  # the same trained model, also under each test-time setting
                    scored |= {test_time_arm(arm, s): p for s, p in result.pop("test_time", {}).items()}
                    for name, y_pred in scored.items():
                        entry = {"arm": name, "variant": variant, "seed": seed, **result, "y_pred": y_pred}
                        update(recipe_now, lambda p, entry=entry: add_fold(p, entry))
                        acc = np.mean(np.array(result["y_true"]) == np.array(y_pred))
                        print(f"fold {fold} seed {seed} {variant} {name}: top-1 {100 * acc:.1f} %", flush=True)
    command = "python benchmarks/pretrain_transfer.py " + " ".join(sys.argv[1:])
    run = {"command": command.strip(), "date": started, "wall_s": round(time.perf_counter() - start, 1),
           "machine": where, "load_at_end": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    MD.write_text(markdown(update(recipe_now, lambda p: p["runs"].append(run)), args.folds))
    print(MD.read_text())


if __name__ == "__main__":
    main()
