"""3-fold cross-validation of ``segdec`` on the real KolektorSDD: full, weak, mixed-5 and mixed-10 supervision.

    python benchmarks/segdec_kolektor.py            # the recorded run (about 40 min on the shared 2-core CPU)
    python benchmarks/segdec_kolektor.py --quick    # fold 0, full supervision, 3 epochs (smoke run)

Writes ``benchmarks/results/segdec_kolektor.json``, the PR curves ``segdec_kolektor_pr_<mode>.png`` (all
folds' test scores pooled) and the "KolektorSDD 3-fold CV" section of ``benchmarks/results/segdec.md``.
Each fold trains from scratch on the other two folds and is scored with its final-epoch weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from segdec_common import (
    DATA,
    RESULTS,
    inference_speed,
    machine,
    now,
    pct,
    run_fold,
    summarise,
    write_json,
    write_section,
)

from scrapvision.heads.segdec_parts.metrics import save_pr_curve

MODES = {
    "full": ["data.supervision=full"],
    "weak": ["data.supervision=weak"],
    "mixed5": ["data.supervision=mixed", "data.n_labelled=5"],
    "mixed10": ["data.supervision=mixed", "data.n_labelled=10"],
}
PAPER = {"full": "99.9 (Tabernik et al. 2019, full res, from scratch)", "weak": "-", "mixed5": "-",
         "mixed10": "-"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--folds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--height", type=int, default=200)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on the shared, oversubscribed CPU")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more config overrides")
    args = parser.parse_args()
    if args.quick:
        args.modes, args.folds, args.epochs = "full", "0", 3
    if not DATA.is_dir():
        sys.exit(f"KolektorSDD not found at {DATA} (set SCRAPVISION_DATA)")
    torch.set_num_threads(args.threads)
    base = [f"data.root={DATA}", f"data.height={args.height}", f"data.width={args.width}",
            f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}", "train.log_every=100000",
            "train.device=cpu", *args.extra]
    command = "python benchmarks/segdec_kolektor.py " + " ".join(sys.argv[1:])
    started, t0 = now(), time.time()
    results = {}
    with tempfile.TemporaryDirectory(prefix="segdec_cv_") as tmp:
        for mode in args.modes.split(","):
            folds = []
            for fold in [int(f) for f in args.folds.split(",")]:
                folds.append(run_fold([*base, *MODES[mode], f"data.fold={fold}"], Path(tmp) / f"{mode}_{fold}"))
                m = folds[-1]["metrics"]
                print(f"{mode} fold {fold}: AP {m['ap']:.4f} AUC {m['auroc']:.4f} F1 {m['f1']:.4f} "
                      f"FP {m['fp']:.0f} FN {m['fn']:.0f} ({folds[-1]['train_s']:.0f} s)", flush=True)
            results[mode] = {**summarise(folds), "folds": folds}
            labels = np.concatenate([f["labels"] for f in folds]) > 0.5
            scores = np.concatenate([f["scores"] for f in folds])
            save_pr_curve(labels, scores, RESULTS / f"segdec_kolektor_pr_{mode}{'_quick' if args.quick else ''}.png",
                          title=f"KolektorSDD {mode}, {len(folds)} fold(s) pooled")
    speed = {f"batch{b}": round(inference_speed(base, b), 2) for b in (1, 8)}
    wall = time.time() - t0
    payload = {"command": command, "date": started, "machine": machine(), "wall_s": round(wall, 1),
               "resolution": [args.height, args.width], "epochs": args.epochs, "folds": args.folds,
               "overrides": base, "inference_images_per_s": speed, "results": results}
    write_json(f"segdec_kolektor{'_quick' if args.quick else ''}.json", payload)
    if not args.quick:
        write_section("KolektorSDD 3-fold CV", _markdown(payload))
    print(f"done in {wall / 60:.1f} min; inference {speed} img/s")


def _markdown(p: dict) -> str:
    h, w = p["resolution"]
    lines = [
        f"Command: `{p['command']}`  ",
        f"Date: {p['date']}; machine: {p['machine']}; wall time {p['wall_s'] / 60:.1f} min.  ",
        f"Setup: paper network (SE + atrous, decay schedule) from scratch, input {w}x{h} (KolektorSDD is "
        f"~500x1250, so {w / 500:.2f}x), {p['epochs']} epochs of balanced sampling, folds {p['folds']} "
        "by item (duplicates kept together), final-epoch weights, no test-time selection.",
        "",
        "| supervision | AP (pooled) | AP mean over folds | AP trapz (pooled) | AUC (pooled) | F1 (pooled) | "
        "FP | FN | paper AP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, r in p["results"].items():
        q = r["pooled"]
        lines.append(f"| {mode} | {pct(q['ap'])} | {pct(r['mean']['ap'])} | {pct(q['ap_trapz'])} | "
                     f"{pct(q['auroc'])} | {pct(q['f1'])} | {q['fp']:.0f} | {q['fn']:.0f} | {PAPER[mode]} |")
    lines += ["", "Per fold (AP / AUC / F1 / FP / FN):", ""]
    for mode, r in p["results"].items():
        cells = [f"fold {i}: {pct(f['ap'])} / {pct(f['auroc'])} / {pct(f['f1'])} / {f['fp']:.0f} / {f['fn']:.0f}"
                 for i, f in enumerate(r["per_fold"])]
        lines.append(f"- {mode}: " + "; ".join(cells) + f" (train s per fold: {r['train_s']})")
    speed = p["inference_images_per_s"]
    lines += ["", f"CPU inference at {w}x{h}: {speed['batch1']} img/s (batch 1), {speed['batch8']} img/s "
              "(batch 8), one thread on the shared CPU.",
              "FP / FN are counted at the threshold of best F1 over the pooled scores."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
