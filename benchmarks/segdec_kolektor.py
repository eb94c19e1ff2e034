"""3-fold cross-validation of ``segdec`` on the real KolektorSDD: full, weak, mixed-5 and mixed-10 supervision.

    python benchmarks/segdec_kolektor.py --modes full,weak &        # the recorded runs at 512x208: two
    python benchmarks/segdec_kolektor.py --modes mixed10,mixed5 &   # processes, about 60 min each on 2 cores
    python benchmarks/segdec_kolektor.py --modes full --folds 0,1 --height 704 --width 288 &  # full supervision
    python benchmarks/segdec_kolektor.py --modes full --folds 2 --height 704 --width 288 &    # at 704x288: 42 min
    python benchmarks/segdec_kolektor.py --report                   # inference speed + markdown
    python benchmarks/segdec_kolektor.py --quick                    # fold 0, full, 2 epochs (smoke run)

Recipe (the defaults): 512x208 input (0.42x of KolektorSDD), 30 epochs of balanced sampling, one thread per
process; each fold takes about 10 min on this 2-core CPU, so all four modes take about 120 min of CPU (60 min of wall
time as two processes). Full supervision is also recorded at 704x288 (0.58x, about 20 min per fold), the size at
which it reaches the 99 % AP goal. Until 2026-11-24 the recipe was 320x128 (4 min per fold), where the faint cracks
(2-4 px wide in the photo) are at most one pixel wide and fold 2's faint positives scored lowest in every mode.

Folds of one run may also go to parallel processes (``--folds 0,1`` and ``--folds 2`` with the same other
arguments): each merges its folds into the run's JSON. A seed other than 0 or another input size writes its
own run (``<mode>_seed<N>``, ``<mode>_<W>x<H>``), shown as an extra row.

Writes ``benchmarks/results/segdec_kolektor_<mode>.json``, the PR curves ``segdec_kolektor_pr_<mode>.png``
(all folds' test scores pooled) and the "KolektorSDD 3-fold CV" section of ``benchmarks/results/segdec.md``.
Each fold trains from scratch on the other two folds (less their validation items, ``data.val_fraction``) and
is scored with its final-epoch weights.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_env import forward_rate, machine, now, write_section
from segdec_common import (
    DATA,
    RESULTS,
    commands_line,
    pct,
    read_runs,
    recipe,
    run_fold,
    summarise,
    write_json,
)

from scrapvision.config import load_config
from scrapvision.heads.segdec import SegDecConfig, SegDecTask
from scrapvision.plots import save_pr_curve

MODES = {
    "full": ["data.supervision=full"],
    "weak": ["data.supervision=weak"],
    "mixed5": ["data.supervision=mixed", "data.n_labelled=5"],
    "mixed10": ["data.supervision=mixed", "data.n_labelled=10"],
}
SEED = re.compile(r"_seed(\d+)")
DEFAULT_SIZE = (512, 208)  # height, width: 0.42x of KolektorSDD
PAPER = {"full": "99.9 (Tabernik et al. 2019, full res, from scratch)", "weak": "-", "mixed5": "-",
         "mixed10": "-"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--folds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--height", type=int, default=DEFAULT_SIZE[0])
    parser.add_argument("--width", type=int, default=DEFAULT_SIZE[1], help="another size than 512x208 writes "
                        "<mode>_<width>x<height> files and rows, next to the default's")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on the shared, oversubscribed CPU")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (init, sampling, flips); folds and labelled positives stay fixed. "
                             "A seed other than 0 writes <mode>_seed<N> files and rows, to measure seed noise")
    parser.add_argument("--report", action="store_true",
                        help="only measure inference speed and rebuild the markdown from the per-mode JSON files")
    args = parser.parse_args()
    if args.quick:
        args.modes, args.folds, args.epochs = "full", "0", 2
    if not DATA.is_dir():
        sys.exit(f"KolektorSDD not found at {DATA} (set SCRAPVISION_DATA)")
    torch.set_num_threads(args.threads)
    base = [f"data.root={DATA}", f"data.height={args.height}", f"data.width={args.width}",
            f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}", "train.log_every=100000",
            f"train.seed={args.seed}",
            "train.device=cpu"]
    if args.report:
        task = SegDecTask(load_config(SegDecConfig, None, base))
        model = task.build_model()
        speed = {f"batch{b}": round(forward_rate(model, task.example_input(b)), 2) for b in (1, 8)}
        write_json("segdec_kolektor_speed.json", {"command": "python benchmarks/segdec_kolektor.py --report",
                                                  "date": now(), "machine": machine(),
                                                  "resolution": [args.height, args.width], "images_per_s": speed})
        write_markdown()
        return
    suffix = "_quick" if args.quick else ""
    command = "python benchmarks/segdec_kolektor.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="segdec_cv_") as tmp:
        for mode in args.modes.split(","):
            t0 = time.time()
            key = run_key(mode, args.seed, args.height, args.width)
            path = RESULTS / f"segdec_kolektor_{key}{suffix}.json"
            payload = {"command": command, "date": now(), "machine": machine(), "mode": mode, "seed": args.seed,
                       "resolution": [args.height, args.width], "epochs": args.epochs,
                       "overrides": [*base, *MODES[mode]]}
            wanted = [int(f) for f in args.folds.split(",")]
            folds = []
            for fold in wanted:
                folds.append({"fold": fold, **run_fold([*base, *MODES[mode], f"data.fold={fold}"],
                                                       Path(tmp) / f"{mode}_{fold}")})
                m = folds[-1]["metrics"]
                print(f"{mode} fold {fold}: AP {m['ap']:.4f} AUC {m['auroc']:.4f} F1 {m['f1']:.4f} "
                      f"FP {m['fp']:.0f} FN {m['fn']:.0f} ({folds[-1]['train_s']:.0f} s)", flush=True)
                earlier, processes = earlier_folds(path, payload, wanted)  # read now: a parallel process may have written
                done = sorted(earlier + folds, key=lambda f: f["fold"])
                mine = {"command": command, "date": payload["date"], "folds": [f["fold"] for f in folds],
                        "wall_s": round(time.time() - t0, 1)}
                payload.update({**summarise(done), "folds": done, "processes": [*processes, mine],
                                "wall_s": round(sum(p["wall_s"] for p in [*processes, mine]), 1)})
                write_json(path.name, payload)  # partial results survive a stop
            labels = np.concatenate([f["labels"] for f in done]) > 0.5
            scores = np.concatenate([f["scores"] for f in done])
            save_pr_curve(labels, scores, RESULTS / f"segdec_kolektor_pr_{key}{suffix}.png",
                          title=f"KolektorSDD {mode}, seed {args.seed}, {len(done)} fold(s) pooled")
            if not args.quick:
                write_markdown()


def write_markdown() -> Path:
    """The "KolektorSDD 3-fold CV" section of ``segdec.md``, from every run's JSON."""
    return write_section(RESULTS / "segdec.md", "segdec_kolektor", "## KolektorSDD 3-fold CV\n" + _markdown())


def run_key(mode: str, seed: int, height: int, width: int) -> str:
    """File key of a run: the mode, then the seed and the input size when they are not the defaults."""
    key = mode if seed == 0 else f"{mode}_seed{seed}"
    return key if (height, width) == DEFAULT_SIZE else f"{key}_{width}x{height}"


def earlier_folds(path: Path, payload: dict, wanted: list[int]) -> tuple[list[dict], list[dict]]:
    """Folds of the same run (mode, seed, size, epochs, settings) that another process already wrote, so that
    folds can run as parallel processes (``--folds 0,1`` and ``--folds 2``) and merge into one row."""
    if not path.exists():
        return [], []
    old = json.loads(path.read_text())
    same = all(old.get(k) == payload[k] for k in ("mode", "seed", "resolution", "epochs", "overrides"))
    kept = [f for f in old.get("folds", []) if "fold" in f and f["fold"] not in wanted]  # older files: no ids
    ids = {f["fold"] for f in kept}
    owners = [p for p in old.get("processes", []) if ids & set(p["folds"])]  # not this process's own entry
    return (kept, owners) if same and kept else ([], [])


def run_keys() -> list[str]:
    """Every mode, each followed by its other runs on disk (``<mode>_seed<N>``, ``<mode>_<W>x<H>``): seeds
    first, in seed order, then other input sizes."""
    keys = []
    for mode in MODES:
        extra = [p.stem.removeprefix("segdec_kolektor_") for p in RESULTS.glob(f"segdec_kolektor_{mode}_*.json")
                 if not p.stem.endswith("_quick")]
        keys += [mode, *sorted(extra, key=lambda k: ("x" in k, int(m.group(1)) if (m := SEED.search(k)) else 0, k))]
    return keys


def _label(run: dict, first: dict) -> str:
    """Row name: the mode, its seed when not 0, and its input size when it differs from the first row's."""
    label = run["mode"] + (f" (seed {run['seed']})" if run.get("seed", 0) else "")
    if run["resolution"] != first["resolution"]:
        label += f" at {run['resolution'][1]}x{run['resolution'][0]}"
    return label


def _hardest_negative(run: dict) -> str:
    """The defect-free image the run scores highest, and how many positives it outranks (each costs AP)."""
    names = [n for f in run["folds"] for n in f["names"]]
    scores = np.concatenate([f["scores"] for f in run["folds"]])
    positive = np.concatenate([f["labels"] for f in run["folds"]]) > 0.5
    top = int(np.argmax(np.where(positive, -np.inf, scores)))
    below = sorted(n for n, sc, pos in zip(names, scores, positive) if pos and sc < scores[top])
    listed = f" ({', '.join(below)})" if len(below) <= 8 else ""
    return f"`{names[top]}` {scores[top]:.3f}; {len(below)} positives below it{listed}"


def _wall(run: dict) -> str:
    """Minutes of training time; a run whose folds ran as parallel processes says so (their sum, not the wall)."""
    processes = run.get("processes", [])
    if len(processes) > 1:
        return f"{run['wall_s'] / 60:.0f} min in {len(processes)} processes (folds side by side)"
    return f"{run['wall_s'] / 60:.0f} min"


def _seed_lines(runs: dict[str, dict], first: dict) -> list[str]:
    """Seed noise: pooled AP of every seed of a mode, for the modes that ran more than one complete seed."""
    by_mode: dict[str, list[dict]] = {}
    for r in runs.values():
        if len(r["per_fold"]) == 3 and r["resolution"] == first["resolution"]:
            by_mode.setdefault(r["mode"], []).append(r)
    lines = [f"- {mode}: pooled AP " + ", ".join(f"{pct(r['pooled']['ap'])} (seed {r.get('seed', 0)})" for r in rs)
             + f"; mean {pct(float(np.mean([r['pooled']['ap'] for r in rs])))}"
             for mode, rs in by_mode.items() if len(rs) > 1]
    return ["", "Seed noise (same folds and labelled positives, another training seed):", "", *lines] if lines else []


def _markdown() -> str:
    """The section from every ``segdec_kolektor_<mode>.json`` present (modes may run as separate processes)."""
    runs = read_runs("segdec_kolektor", run_keys())
    if not runs:
        return "No run yet."
    first = next(iter(runs.values()))
    h, w = first["resolution"]
    lines = [commands_line(runs),
             f"Machine: {first['machine']}.  ",
             f"Setup: paper network from scratch, input {w}x{h} (KolektorSDD is ~500x1250, so {w / 500:.2f}x), "
             f"{first['epochs']} epochs of balanced sampling (every positive + as many negatives), "
             f"{recipe(first['overrides'])}; 3 folds by item (duplicates kept together), final-epoch weights "
             "(no checkpoint picked on the test fold).",
             "",
             "| supervision | AP (pooled) | AP mean of folds | AP trapz (pooled) | AUC (pooled) | F1 (pooled) | "
             "FP | FN | date, wall | paper AP |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs.values():
        q, n = r["pooled"], len(r["per_fold"])
        lines.append(f"| {_label(r, first)}{'' if n == 3 else f' ({n} of 3 folds)'} | {pct(q['ap'])} | {pct(r['mean']['ap'])} | {pct(q['ap_trapz'])} | "
                     f"{pct(q['auroc'])} | {pct(q['f1'])} | {q['fp']:.0f} | {q['fn']:.0f} | "
                     f"{r['date']}, {_wall(r)} | {PAPER[r['mode']]} |")
    lines += ["", "Per fold (AP / AUC / F1 / FP / FN):", ""]
    for r in runs.values():
        ids = [f.get("fold", i) for i, f in enumerate(r["folds"])]
        cells = [f"fold {i}: {pct(f['ap'])} / {pct(f['auroc'])} / {pct(f['f1'])} / {f['fp']:.0f} / {f['fn']:.0f}"
                 for i, f in zip(ids, r["per_fold"])]
        lines.append(f"- {_label(r, first)}: " + "; ".join(cells) + f" (train s per fold: {r['train_s']})")
    lines += ["", "Top-scored negative of all folds pooled, and the positives scored below it:", ""]
    lines += [f"- {_label(r, first)}: {_hardest_negative(r)}" for r in runs.values()]
    lines += _seed_lines(runs, first)
    lines += ["", "Pooled = the three test folds' scores ranked together (as Tabernik et al. report); FP / FN at "
              "the best-F1 threshold of the pooled scores."]
    speed_file = RESULTS / "segdec_kolektor_speed.json"
    if speed_file.exists():
        s = json.loads(speed_file.read_text())
        sh, sw = s["resolution"]
        stale = "" if [sh, sw] == [h, w] else " (NOT the CV resolution: rerun `--report`)"
        lines.append(f"CPU inference at {sw}x{sh}{stale} ({s['date']}): {s['images_per_s']['batch1']} img/s "
                     f"(batch 1), {s['images_per_s']['batch8']} img/s (batch 8), one thread.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
