"""segdec on KolektorSDD read natively and through the generic folder layout: the same per-image scores?

    python benchmarks/folder_layout_kolektor.py                       # fold 0, 256x104, 6 epochs, seed 0
    python benchmarks/folder_layout_kolektor.py --folds 0,1,2 --epochs 10

KolektorSDD is rewritten by ``kolektor_to_folder.py`` into a temporary folder, then segdec trains twice
with the same recipe, fold and seed: once on the native reader, once on the folder layout. The folds,
the validation split carved from the training folds, the sample order and the pixels must agree, so the
test fold's per-image scores must be equal. Writes ``results/folder_layout_kolektor.{json,md}``.
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
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import machine, now, write_section  # noqa: E402
from kolektor_to_folder import convert  # noqa: E402
from segdec_common import DATA, RESULTS, run_fold  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", default="0", help="comma-separated test folds of the 3-fold CV")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=104)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"KolektorSDD not found at {args.data} (set SCRAPVISION_DATA)")
    torch.set_num_threads(args.threads)
    start, started = time.time(), now()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = convert(args.data, Path(tmp) / "folder")
        for fold in [int(f) for f in args.folds.split(",")]:
            base = [f"data.height={args.height}", f"data.width={args.width}", f"train.epochs={args.epochs}",
                    f"data.fold={fold}", "train.device=cpu", f"train.out_dir={tmp}"]
            native = run_fold([*base, f"data.root={args.data}"], Path(tmp) / f"native{fold}")
            layout = run_fold([*base, f"data.root={folder}"], Path(tmp) / f"folder{fold}")
            same_images = native["names"] == layout["names"]
            diff = float(np.abs(np.array(native["scores"]) - np.array(layout["scores"])).max()) if same_images \
                else float("nan")
            rows.append({"fold": fold, "test_images": len(native["names"]), "same_images": same_images,
                         "max_abs_score_diff": diff, "native": native["metrics"], "folder": layout["metrics"],
                         "train_s": [native["train_s"], layout["train_s"]]})
            print(rows[-1], flush=True)
    wall = time.time() - start
    payload = {"command": "python benchmarks/folder_layout_kolektor.py " + " ".join(sys.argv[1:]), "date": started,
               "wall_s": round(wall, 1), "machine": machine(), "recipe": vars(args) | {"data": str(args.data)},
               "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "folder_layout_kolektor.json").write_text(json.dumps(payload, indent=1))
    lines = ["### KolektorSDD through the generic folder layout", "",
             f"- Command: `{payload['command'].strip()}`; {started}; wall {wall / 60:.1f} min; {payload['machine']}",
             f"- Recipe: segdec defaults at {args.height}x{args.width}, {args.epochs} epochs, last epoch scored, "
             "3 folds by item (duplicates joined), validation carved from the training folds", "",
             "| test fold | images | same images, same order | max abs score difference | AP native | AP folder "
             "| AUROC native | AUROC folder |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fold']} | {r['test_images']} | {'yes' if r['same_images'] else 'NO'} | "
                     f"{r['max_abs_score_diff']:.2e} | {100 * r['native']['ap']:.1f} | {100 * r['folder']['ap']:.1f} | "
                     f"{100 * r['native']['auroc']:.1f} | {100 * r['folder']['auroc']:.1f} |")
    path = write_section(RESULTS / "folder_layout_kolektor.md", "folder_layout:kolektor", "\n".join(lines),
                         header="# folder layout benchmarks\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
