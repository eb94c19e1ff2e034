"""segdec and clip_anomaly on the DAGM sample through the generic folder layout: a smoke-size cross-validation.

    python benchmarks/folder_layout_dagm.py          # 3 folds, 128x128, both heads, ~7 min on a shared 2-core CPU

The only DAGM copy on this machine is ``dagm_sample`` (15 images of DAGM Class1-3, 9 with ellipse masks, a
flat re-upload without Labels.txt; read its SOURCE.txt). ``dagm_to_folder.py --unmasked good`` rewrites it
into the generic layout, taking the 6 unmasked images as defect-free (none shows a visible defect, but the
source does not say so). Both heads train on the same folds of the folder layout (``StratifiedGroupKFold``,
each image its own group, validation carved from the training folds) and are scored on the held-out fold
with their final epoch's weights, all three texture classes together as one defect / no defect set.
Five test images per fold: the figures say the pipeline runs end to end on real DAGM files, not how well a
head does on DAGM. Writes ``results/folder_layout_dagm.json`` and a section of ``folder_layout_kolektor.md``.
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
import torch.nn.functional as F
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import machine, now, train_final, write_section  # noqa: E402
from clip_anomaly_common import pct  # noqa: E402
from clip_anomaly_common import score as clip_score  # noqa: E402
from dagm_to_folder import convert  # noqa: E402

from scrapvision.config import load_config  # noqa: E402
from scrapvision.data.folder import read_folder_mask, read_layout, split_items  # noqa: E402
from scrapvision.data.images import read_image  # noqa: E402
from scrapvision.heads.clip_anomaly import ClipAnomalyConfig, ClipAnomalyTask  # noqa: E402
from scrapvision.heads.clip_anomaly_parts.data import resize_pair  # noqa: E402
from scrapvision.heads.clip_anomaly_parts.metrics import SegAnomalyMeter  # noqa: E402
from scrapvision.heads.segdec import SegDecConfig, SegDecTask  # noqa: E402
from scrapvision.heads.segdec_parts.metrics import decision_metrics  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SAMPLE = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data")) / "dagm_sample" / "test_data"
KEYS = ("pixel_ap", "pixel_auroc", "aupro", "image_ap", "image_auroc")


def test_masks(folder: Path, fold: int, size: int) -> tuple[list[str], np.ndarray]:
    """Names and ground-truth masks (area vote at ``size``, as clip_anomaly resizes) of the test fold."""
    scan = read_layout(folder)
    test = split_items(scan.items, 0.2, 0, 3, fold)[2]
    masks = []
    for it in test:
        image = read_image(it.image)
        mask = read_folder_mask(it.mask) if it.mask else np.zeros(image.shape[:2], np.uint8)
        masks.append(resize_pair(image, mask, (size, size))[1])
    return [it.name for it in test], np.stack(masks)


def segdec_fold(overrides: list[str], run_dir: Path, masks: np.ndarray) -> tuple[SegAnomalyMeter, np.ndarray, list[str], float]:
    """Train segdec, then its test fold: pixel maps (upsampled from stride 8) in a meter, decision scores."""
    task = SegDecTask(load_config(SegDecConfig, None, overrides))
    model, train_s = train_final(task, run_dir)
    test = task.build_eval_dataset()
    with torch.no_grad():
        r = task.score(model, DataLoader(test, batch_size=8))
    defect = F.interpolate(torch.from_numpy(r["seg"]), size=masks.shape[1:], mode="bilinear",
                           align_corners=False)[:, 0].numpy()
    meter = SegAnomalyMeter(("normal", "defect"))
    meter.update(np.stack([1 - defect, defect], 1), masks)
    return meter, r["score"], [s.name for s in test.samples], train_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="square input (DAGM images are 512x512)")
    parser.add_argument("--epochs", type=int, default=40, help="both heads; ~8 training images per fold")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=SAMPLE)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"DAGM sample not found at {args.data} (set SCRAPVISION_DATA)")
    torch.set_num_threads(args.threads)
    start, started = time.time(), now()
    rows: dict[str, list[dict]] = {"segdec": [], "clip_anomaly": []}
    pooled = {head: SegAnomalyMeter(("normal", "defect")) for head in rows}
    decisions: list[np.ndarray] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = convert(args.data, Path(tmp) / "folder", unmasked="good")
        for fold in range(3):
            base = [f"data.root={folder}", f"data.fold={fold}", "train.device=cpu", f"train.epochs={args.epochs}"]
            names, masks = test_masks(folder, fold, args.size)
            meter, decision, segdec_names, seg_s = segdec_fold(
                [*base, f"data.height={args.size}", f"data.width={args.size}"], Path(tmp) / f"segdec{fold}", masks)
            clip_task = ClipAnomalyTask(load_config(ClipAnomalyConfig, None, [
                *base, "data.format=folder", f"model.image_size=[{args.size},{args.size}]",
                f"train.eval_every={args.epochs}", "data.sampling=balanced", "train.log_every=100000"]))
            clip_model, clip_s = train_final(clip_task, Path(tmp) / f"clip{fold}")
            clip_meter = clip_score(clip_task, clip_model, clip_task.build_eval_dataset())
            if not names == segdec_names == clip_task.build_eval_dataset().names:
                sys.exit(f"fold {fold}: the heads score different test images")
            image = decision_metrics(np.array(meter.image_labels), decision)
            decisions.append(decision)
            for head, m, extra, train_s in (("segdec", meter, image, seg_s), ("clip_anomaly", clip_meter, {}, clip_s)):
                pooled[head].extend(m)
                metrics = m.compute()
                if extra:  # segdec's image score is its decision head, not the maximum of its pixel map
                    metrics.update(image_ap=extra["ap"], image_auroc=extra["auroc"])
                rows[head].append({"fold": fold, "test": names, "n_defective": int(sum(m.image_labels)),
                                   "metrics": {k: metrics[k] for k in KEYS}, "train_s": round(train_s, 1)})
                print(head, rows[head][-1], flush=True)
    totals = {head: {k: meter.compute()[k] for k in KEYS} for head, meter in pooled.items()}
    image = decision_metrics(np.array(pooled["segdec"].image_labels), np.concatenate(decisions))
    totals["segdec"].update(image_ap=image["ap"], image_auroc=image["auroc"])
    masks = pooled["segdec"].masks
    payload = {"command": "python benchmarks/folder_layout_dagm.py " + " ".join(sys.argv[1:]), "date": started,
               "wall_s": round(time.time() - start, 1), "machine": machine(), "recipe": vars(args) | {"data": str(args.data)},
               "defect_pixel_share": float(np.mean([m.mean() for m in masks])), "folds": rows, "pooled": totals}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "folder_layout_dagm.json").write_text(json.dumps(payload, indent=1))
    path = write_section(RESULTS / "folder_layout_kolektor.md", "folder_layout:dagm", markdown(payload),
                         header="# folder layout benchmarks\n")
    print(f"wrote {path}")


def markdown(p: dict) -> str:
    r = p["recipe"]
    n = sum(len(row["test"]) for row in p["folds"]["segdec"])
    lines = [f"### DAGM sample ({n} images) through the generic folder layout: a smoke-size CV", "",
             f"- Command: `{p['command'].strip()}`; {p['date']}; wall {p['wall_s'] / 60:.1f} min; {p['machine']}",
             "- Data: `dagm_sample` (DAGM Class1-3 together, 9 images with ellipse masks, 6 without, taken as "
             "defect-free: the source does not say), converted by dagm_to_folder.py --unmasked good; 3 folds of 5 "
             "test images, each image its own group, validation carved from the training folds",
             f"- Recipe: both heads at {r['size']}x{r['size']} (from 512x512), {r['epochs']} epochs, final-epoch weights; "
             "segdec defaults (image score = its decision head; pixel maps upsampled from stride 8); clip_anomaly "
             "CPU recipe with balanced sampling (image score = maximum of its anomaly map)",
             f"- A random pixel score gets a pixel AP of about {pct(p['defect_pixel_share'])} (the defect pixel share). "
             f"**{n} images is a smoke-size result**: one image moves a fold's image AP by 20 points or more; it shows "
             "the pipeline runs on real DAGM files, not how well either head does on DAGM.", "",
             "| head | test fold | images (defective) | pixel AP | pixel AUROC | AUPRO | image AP | image AUROC | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for head, rows in p["folds"].items():
        for row in rows:
            m = row["metrics"]
            lines.append(f"| {head} | {row['fold']} | {len(row['test'])} ({row['n_defective']}) | {pct(m['pixel_ap'])} "
                         f"| {pct(m['pixel_auroc'])} | {pct(m['aupro'])} | {pct(m['image_ap'])} | {pct(m['image_auroc'])} "
                         f"| {row['train_s']:.0f} |")
        q = p["pooled"][head]
        lines.append(f"| {head} | pooled | {sum(len(row['test']) for row in rows)} | {pct(q['pixel_ap'])} | {pct(q['pixel_auroc'])} | {pct(q['aupro'])} "
                     f"| {pct(q['image_ap'])} | {pct(q['image_auroc'])} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
