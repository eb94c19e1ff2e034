"""Severstal on the real sample: the synthetic model fine-tuned on real images, in cross-validation.

Folds over the 16 fully-labelled images of the shared Kaggle sample (scikit-learn KFold, 4 folds of 4). Per
fold the synthetic CPU-recipe model (the newest best.pt that benchmarks/severstal_train.py left under
/tmp/scrapvision-bench/severstal, else one trained here) is fine-tuned on the 12 other images, of which 3
validate (best.pt, then `scrapvision tune`), and scored on the 4 held-out images beside the synthetic model
as it is and the all-empty answer. 16 images is a tiny test: the spread over folds is part of the result.
Writes benchmarks/results/severstal_real_cv.json and the `severstal_real_cv` section of severstal.md.

    python benchmarks/severstal_real_cv.py
    python benchmarks/severstal_real_cv.py --tag e48 --set train.epochs=48
        # a candidate fine-tuning recipe: severstal_real_cv_e48.json and its own section; judge it by the
        # validation Dice the section lists (3 images per fold), never by the held-out columns
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_env import best_epoch, machine, validation_curve, write_section
from severstal_train import empty_dice
from sklearn.model_selection import KFold

from scrapvision.api import build_task, evaluate, load_trained, train
from scrapvision.checkpoint import load_checkpoint
from scrapvision.data.severstal import load_records
from scrapvision.trainer import Trainer
from scrapvision.tuning import tune

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("SCRAPVISION_DATA", ROOT.parent / "shared" / "data"))
SYNTHETIC_RUNS = Path("/tmp/scrapvision-bench/severstal")
FINE_TUNE = ["train.epochs=12", "optim.lr=0.0005", "optim.warmup_epochs=0", "train.batch_size=4",
             "data.val_fraction=0.25"]
ROWS = ("all-empty answer", "synthetic model, fixed post-processing", "fine-tuned, fixed post-processing",
        "fine-tuned, fixed, hvflip TTA", "fine-tuned, tuned on its 3 validation images", "fine-tuned, tuned, hvflip TTA")


def synthetic_checkpoint() -> Path:
    runs = sorted(SYNTHETIC_RUNS.glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else train("severstal", run_dir=SYNTHETIC_RUNS / time.strftime("%Y%m%d-%H%M%S")).best_path


def fold_layout(real_dir: Path, names: list[str], folder: Path, image_labels: dict[str, list[int]] | None = None
                ) -> Path:
    """The Kaggle layout of ``names`` only: their image files linked, the sample's train.csv, a coverage list;
    with ``image_labels`` also those images and ``image_labels.csv`` (for ``data.image_labels``)."""
    (folder / "train_images").mkdir(parents=True)
    for name in [*names, *(image_labels or {})]:
        (folder / "train_images" / name).symlink_to(real_dir / "train_images" / name)
    shutil.copy(real_dir / "train.csv", folder / "train.csv")
    (folder / "images_covered.csv").write_text("ImageId\n" + "".join(f"{n}\n" for n in names))
    if image_labels:
        (folder / "image_labels.csv").write_text("ImageId,ClassId\n" + "".join(
            f"{name},{c}\n" for name, classes in image_labels.items() for c in classes))
    return folder


def sample_image_labels(real_dir: Path, exclude: set[str]) -> dict[str, list[int]]:
    """The sample's images without masks, with what is known of them (images_labels.csv): the image-level
    class of a defective image (one primary class, so a second class would be missed), or 0 for the images
    that no defect list names (defect-free, as SOURCE.txt infers)."""
    import csv

    labels = {}
    with open(real_dir / "images_labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["in_rle_subset"] == "1" or row["ImageId"] in exclude:
                continue
            labels[row["ImageId"]] = [int(row["hhjun321_primary_class"] or 0)]
    return labels


def fine_tune(checkpoint: Path, data: Path, run_dir: Path, recipe: list[str]) -> Path:
    """Train on ``data`` starting from every weight of ``checkpoint`` (its config, ``recipe`` over it)."""
    payload = load_checkpoint(checkpoint, task="severstal")
    task = build_task("severstal", overrides=recipe, data=data, base=payload["config"])
    build = task.build_model

    def warm_start():
        model = build()
        model.load_state_dict(payload["model"])
        return model

    task.build_model = warm_start
    return Trainer(task, run_dir=run_dir).fit().best_path


def scores(checkpoint: Path, test: Path, tuned: bool = False, tta: str = "none") -> dict:
    task, model = load_trained("severstal", checkpoint, data=test, tuned=tuned, tta=tta)
    return evaluate(task, model)


def run_fold(synthetic: Path, real_dir: Path, train_names: list[str], test_names: list[str], work: Path,
             recipe: list[str], image_labels: dict[str, list[int]] | None = None) -> dict:
    test = fold_layout(real_dir, test_names, work / "test")
    if image_labels:
        recipe = [*recipe, "data.image_labels=image_labels.csv"]
    best = fine_tune(synthetic, fold_layout(real_dir, train_names, work / "train", image_labels), work / "run", recipe)
    task, _ = load_trained("severstal", synthetic, data=test, tuned=False)
    empty, empty_classes = empty_dice(task)
    curve = validation_curve(work / "run", "dice")
    out = {"test_images": test_names, "validation_dice": curve[best_epoch(curve)],
           ROWS[0]: {"dice": empty, **{f"dice_c{c + 1}": v for c, v in enumerate(empty_classes)}},
           ROWS[1]: scores(synthetic, test), ROWS[2]: scores(best, test), ROWS[3]: scores(best, test, tta="hvflip")}
    out["tuned"] = {}
    for row, tta in ((ROWS[4], "none"), (ROWS[5], "hvflip")):
        _, doc = tune("severstal", best, tta=tta)
        out["tuned"][tta] = doc["config"]["post"]
        out[row] = scores(best, test, tuned=True, tta=tta)  # scored with the TTA it was tuned with
    return out


def section(record: dict) -> str:
    folds = record["folds"]
    title = "### Severstal real sample: synthetic model fine-tuned on real images, 4-fold cross-validation"
    title += f" (candidate recipe `{record['tag']}`)" if record.get("tag") else ""
    lines = [title,
             f"`{record.get('command', 'python benchmarks/severstal_real_cv.py')}` on {record['machine']}, "
             f"{record['date']}, wall {record['wall_s']} s. Start: `{record['synthetic_checkpoint']}` (the synthetic "
             "CPU-recipe model of `benchmarks/severstal_train.py`). Fine-tune: "
             + ", ".join(f"`{o}`" for o in record["fine_tune"]) + "."
             + (f" Every fold also trains on the sample's {record['image_labelled_images']} images without masks "
                "(`data.image_labels`: image-level classes only, never validation or test)."
                if record.get("image_labelled_images") else ""), "",
             "| held-out fold (4 images each) | validation Dice of best.pt (3 images) | " + " | ".join(ROWS) + " |",
             "|---" * (len(ROWS) + 2) + "|"]
    for i, fold in enumerate(folds):
        lines.append(f"| fold {i} | {fold['validation_dice']:.4f} | "
                     + " | ".join(f"{fold[r]['dice']:.4f}" for r in ROWS) + " |")
    for name, fn in (("mean (= pooled 16 images)", statistics.mean), ("sd over folds", statistics.stdev)):
        lines.append(f"| {name} | {fn([f['validation_dice'] for f in folds]):.4f} | "
                     + " | ".join(f"{fn([f[r]['dice'] for f in folds]):.4f}" for r in ROWS) + " |")
    lines += ["", "Per class, pooled over the 16 held-out predictions (classes 1 / 2 / 3 / 4):", ""]
    for r in ROWS:
        per_class = [statistics.mean(f[r][f"dice_c{c}"] for f in folds) for c in range(1, 5)]
        lines.append(f"- {r}: " + " / ".join(f"{v:.3f}" for v in per_class))
    lines += ["", "16 images is a tiny test (14 of them defective): one image moves a fold's Kaggle Dice by up to "
              "0.25. The tuned values come from 3 validation images of the training folds, never the held-out fold."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a fine-tuning override after the benchmark's own (repeat it); needs --tag")
    parser.add_argument("--tag", help="a candidate recipe: severstal_real_cv_TAG.json and its own section")
    parser.add_argument("--image-labels", action="store_true",
                        help="also train on the sample's 31 images without masks through data.image_labels (28 with "
                             "one image-level class, 3 defect-free); needs --tag")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args()
    if (args.set or args.image_labels) and not args.tag:
        parser.error("--set changes the recipe: give the candidate a --tag, so the recorded default stays")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    recipe = [*FINE_TUNE, *args.set]
    real_dir = SHARED / "severstal_sample"
    names = [r.image_id for r in load_records(real_dir)]
    image_labels = sample_image_labels(real_dir, set(names)) if args.image_labels else None
    host, start = machine(), time.time()
    synthetic = synthetic_checkpoint()
    folds = []
    with tempfile.TemporaryDirectory(prefix="severstal-cv-") as tmp:
        for i, (train_idx, test_idx) in enumerate(KFold(4, shuffle=True, random_state=0).split(names)):
            folds.append(run_fold(synthetic, real_dir, [names[k] for k in train_idx], [names[k] for k in test_idx],
                                  Path(tmp) / f"fold{i}", recipe, image_labels))
    command = "python benchmarks/severstal_real_cv.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": host, "command": command,
              "tag": args.tag, "image_labelled_images": len(image_labels or {}), "synthetic_checkpoint": str(synthetic), "fine_tune": recipe, "folds": folds,
              "wall_s": round(time.time() - start, 1)}
    suffix = f"_{args.tag}" if args.tag else ""
    (RESULTS / f"severstal_real_cv{suffix}.json").write_text(json.dumps(record, indent=2))
    write_section(RESULTS / "severstal.md", f"severstal_real_cv{':' + args.tag if args.tag else ''}", section(record))
    print(section(record))


if __name__ == "__main__":
    main()
