"""clip_anomaly on real KolektorSDD as two-class anomaly segmentation (normal / defect), 3-fold CV.

    python benchmarks/clip_anomaly_kolektor.py                   # 3 folds, the default recipe (see --help)
    python benchmarks/clip_anomaly_kolektor.py --layout folder   # the same, read through the generic folder layout
    python benchmarks/clip_anomaly_kolektor.py --few-shot 1,4    # plus the few-shot memory-bank curve per k
    python benchmarks/clip_anomaly_kolektor.py --quick           # fold 0, 1 epoch (smoke run)

Same folds as the segdec benchmark (``kolektor_folds(items, 3, seed 0)`` by kosNN item, duplicated items
kept together), validation carved from the training folds as segdec does. The recipe is
``tasks/clip_anomaly-kolektor.yaml`` (its comments say why each value); the options below override it.
``--resolution H,W`` larger than the model input ``--height x --width`` is the tiled recipe: training on crops
of the image at that working size, inference by overlapping tiles stitched back at it (``data.resolution``). ``--layout folder`` first rewrites
KolektorSDD with ``kolektor_to_folder.py`` into a temporary folder and trains on that (``data.format=folder``):
the folds and validation split are the same. The encoder is the CPU recipe's tiny ViT from random weights (no
pretrained CLIP offline); each fold is scored with the checkpoint ``--select`` names: ``best`` is the one of the
best validation ``monitor`` (the recipe's), ``last`` the final epoch's; pooled metrics concatenate the three
held-out folds. Besides the pixel AP at the working resolution, the map is also scored with segdec's own
pixel-AP protocol (:func:`clip_anomaly_common.segdec_protocol_ap`), next to segdec's figure on the same folds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import best_epoch, forward_rate, machine, now, validation_curve, write_section  # noqa: E402
from clip_anomaly_common import (  # noqa: E402
    DATA,
    REPO,
    RESULTS,
    make_task,
    pct,
    score,
    segdec_protocol_ap,
    train_last,
    write_json,
)
from kolektor_to_folder import convert  # noqa: E402

from scrapvision.config import read_yaml  # noqa: E402
from scrapvision.heads.clip_anomaly_parts.metrics import SegAnomalyMeter  # noqa: E402
from scrapvision.loggers import flat  # noqa: E402

KEYS = ("pixel_ap", "pixel_auroc", "aupro", "image_ap", "image_auroc", "miou", "iou_defect", "pixel_ap_segdec")
#: segdec's pixel AP on the same three folds: the "base" run of benchmarks/results/segdec_transfer.md (2026-12-01,
#: default CPU recipe 128x80, 10 epochs, seed 0), scored at its output stride 8 on 5-px dilated masks
SEGDEC_PIXEL_AP = {0: 79.1, 1: 88.0, 2: 78.7}
RECIPE = REPO / "tasks" / "clip_anomaly-kolektor.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--folds", default="0,1,2",
                        help="a subset writes results/clip_anomaly_kolektor_foldsNN.json only (no RESULTS section), "
                             "so it never overwrites the 3-fold record")
    parser.add_argument("--epochs", type=int, help="train.epochs (default: the recipe's)")
    parser.add_argument("--height", type=int, help="model input (the tile when --resolution is larger)")
    parser.add_argument("--width", type=int)
    parser.add_argument("--resolution", metavar="H,W",
                        help="working size of the whole image (data.resolution): train on crops, stitch tiles")
    parser.add_argument("--patch", type=int, help="ViT patch size (0 = scrap-vit-tiny's 8)")
    parser.add_argument("--overlap", type=float, help="tile overlap of the stitched inference")
    parser.add_argument("--select", choices=("best", "last"), default="best",
                        help="checkpoint scored: best validation `monitor` (the recipe's), or the final epoch")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--few-shot", default="", metavar="K,K,...",
                        help="also score each fold with a memory bank of k normal training images (e.g. 1,4) on "
                             "the fine-tuned encoder; the bank is dense, so k=16 of 512x208 images took over 15 min "
                             "per fold on one thread")
    parser.add_argument("--few-shot-untrained", action="store_true",
                        help="with --few-shot: also on an untrained, random encoder (the training-free mode)")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on the shared, oversubscribed CPU")
    parser.add_argument("--layout", choices=("kolektor", "folder"), default="kolektor",
                        help="read KolektorSDD natively, or converted into the generic folder layout")
    parser.add_argument("--tta", choices=("hflip", "hvflip"),
                        help="also score the held-out folds under this flip TTA (same checkpoints; the choice of "
                             "checkpoint stays without TTA)")
    parser.add_argument("--tag", help="a candidate recipe: writes clip_anomaly_kolektor_TAG.json and its own "
                                      "RESULTS section, so the recorded default run stays as it is")
    parser.add_argument("--report", action="store_true",
                        help="rebuild the section and the few-shot plot from the recorded JSON (of --layout / --tag), "
                             "training nothing")
    args = parser.parse_args()
    if args.report:
        suffix = ("_folder" if args.layout == "folder" else "") + (f"_{args.tag}" if args.tag else "")
        path = RESULTS / f"clip_anomaly_kolektor{suffix}.json"
        if not path.is_file():
            sys.exit(f"{path}: no recorded run to report")
        write_report(json.loads(path.read_text()), suffix, args.layout, args.tag)
        return
    if args.quick:
        args.folds = "0"
    root = DATA / "kolektorsdd"
    if not root.is_dir():
        sys.exit(f"KolektorSDD not found at {root} (set SCRAPVISION_DATA)")
    torch.set_num_threads(args.threads)
    if (args.height is None) != (args.width is None):
        sys.exit("--height and --width go together")
    options = {"train.epochs": args.epochs, "model.image_size": args.height and f"[{args.height}, {args.width}]",
               "data.resolution": args.resolution and f"[{args.resolution}]", "model.patch_size": args.patch,
               "data.tile_overlap": args.overlap}
    recipe = {**flat(read_yaml(RECIPE)), **{k: v for k, v in options.items() if v is not None}}
    base = [f"{k}={v}" for k, v in recipe.items()]
    base += ["train.device=cpu", "train.log_every=100000", *args.set]
    if args.quick:
        base.append("train.epochs=1")
    cfg = make_task(base).cfg
    resolution = list(cfg.data.resolution or cfg.model.image_size)
    folds = [int(f) for f in args.folds.split(",")]
    partial = not args.quick and sorted(folds) != [0, 1, 2]  # its own JSON: the 3-fold record stays as it is
    suffix = (("_folder" if args.layout == "folder" else "") + ("_quick" if args.quick else "")
              + ("_folds" + "".join(map(str, folds)) if partial else "") + (f"_{args.tag}" if args.tag else ""))
    started, t0 = now(), time.time()
    payload = {"command": "python benchmarks/clip_anomaly_kolektor.py " + " ".join(sys.argv[1:]), "date": started,
               "machine": machine(), "input": list(cfg.model.image_size), "resolution": resolution,
               "patch": cfg.model.patch_size or 8, "overlap": cfg.data.tile_overlap, "epochs": cfg.train.epochs,
               "eval_every": cfg.train.eval_every, "dilate": cfg.data.dilate, "loss": asdict(cfg.loss),
               "select": args.select, "monitor": cfg.monitor, "layout": args.layout, "folds": {}}
    pooled = SegAnomalyMeter(("normal", "defect"))
    pooled_tta = SegAnomalyMeter(("normal", "defect"))
    ks = [int(k) for k in args.few_shot.split(",")] if args.few_shot else []
    kinds = ("fine-tuned", "untrained") if args.few_shot_untrained else ("fine-tuned",)
    few_pooled = {(kind, k): SegAnomalyMeter(("normal", "defect")) for kind in kinds for k in ks}
    with tempfile.TemporaryDirectory(prefix="clip_kolektor_") as tmp:
        data = convert(root, Path(tmp) / "folder") if args.layout == "folder" else root
        base = [*base, f"data.root={data}", f"data.format={args.layout}"]
        payload["overrides"] = base
        for fold in folds:
            task, model, train_s = train_last([*base, f"data.fold={fold}"], Path(tmp) / f"fold{fold}",
                                              f"{args.select}.pt")
            test = task.build_eval_dataset()  # the held-out fold, never the validation split
            meter = score(task, model, test)
            pooled.extend(meter)
            m = {**meter.compute(), "pixel_ap_segdec": segdec_protocol_ap(meter)}
            curve = validation_curve(Path(tmp) / f"fold{fold}", cfg.monitor)
            if args.tta:  # TTA is judged on validation first, as the checkpoint was; without TTA the run scored it
                val_ap = {"none": selected_validation(curve, args.select)}
                task.tta = args.tta
                val_ap[args.tta] = score(task, model, task.build_datasets()[1]).compute()["pixel_ap"]
                meter_tta = score(task, model, test)
                task.tta = "none"
                pooled_tta.extend(meter_tta)
                payload.setdefault("tta", {"mode": args.tta, "folds": {}})["folds"][fold] = {
                    **{k: v for k, v in meter_tta.compute().items() if k in KEYS}, "validation_pixel_ap": val_ap}
            for (kind, k), few_meter in few_pooled.items():
                few_meter.extend(few_shot_score(kind, k, [*base, f"data.fold={fold}"], model, test))
            payload["folds"][fold] = {"metrics": {k: m[k] for k in KEYS}, "train_s": round(train_s, 1),
                                      "validation": curve,
                                      "n_train": len(task.build_datasets()[0]), "n_test": len(meter.maps),
                                      "n_defective": int(sum(meter.image_labels))}
            print(f"fold {fold}: pixel AP {pct(m['pixel_ap'])} pixel AUROC {pct(m['pixel_auroc'])} "
                  f"image AP {pct(m['image_ap'])} ({train_s:.0f} s)", flush=True)
            payload["wall_s"] = round(time.time() - t0, 1)
            write_json(f"clip_anomaly_kolektor{suffix}.json", payload)  # partial results survive a stop
    p = {**pooled.compute(), "pixel_ap_segdec": segdec_protocol_ap(pooled)}
    payload["pooled"] = {k: p[k] for k in KEYS}
    if args.tta:
        payload["tta"]["pooled"] = {k: v for k, v in pooled_tta.compute().items() if k in KEYS}
    payload["few_shot"] = [{"encoder": kind, "k": k, **{m: v for m, v in few.compute().items() if m in KEYS}}
                           for (kind, k), few in few_pooled.items()]
    with torch.no_grad():  # whole images at the working size, tiled when it is larger than the model input
        whole = WholeImage(task, model)
        payload["inference_images_per_s"] = {f"batch{b}": round(forward_rate(whole, torch.zeros(b, 3, *resolution)), 1)
                                             for b in (1, 16)}
    payload["wall_s"] = round(time.time() - t0, 1)
    write_json(f"clip_anomaly_kolektor{suffix}.json", payload)
    if not args.quick and not partial:
        write_report(payload, suffix, args.layout, args.tag)
    print(f"done in {payload['wall_s'] / 60:.1f} min; pooled {payload['pooled']}")


def write_report(payload: dict, suffix: str, layout: str, tag: str | None) -> None:
    """The run's section of clip_anomaly.md and, with few-shot rows, the plot of its curve."""
    title = "through the generic folder layout" if layout == "folder" else "anomaly segmentation"
    title += f" (candidate recipe `{tag}`)" if tag else ""
    body = markdown(payload)
    if payload.get("few_shot"):
        name = f"clip_anomaly_kolektor{suffix}_few_shot.png"
        few_shot_plot(payload, RESULTS / name)
        body += f"\n\nPlot (path from benchmarks/RESULTS.md): ![few-shot curve](results/{name})"
    write_section(RESULTS / "clip_anomaly.md", "clip_anomaly_kolektor" + suffix, f"## KolektorSDD {title}, 3-fold CV\n" + body)


def few_shot_plot(p: dict, path: Path) -> None:
    """k normal references (log scale) against pooled pixel AP and pixel AUROC, beside the fine-tuned head alone
    (dashed): whether a plant's good parts are worth collecting as a memory bank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=110)
    for ax, key, label in ((axes[0], "pixel_ap", "pixel AP %"), (axes[1], "pixel_auroc", "pixel AUROC %")):
        for encoder in dict.fromkeys(r["encoder"] for r in p["few_shot"]):
            rows = sorted((r for r in p["few_shot"] if r["encoder"] == encoder), key=lambda r: r["k"])
            ax.plot([r["k"] for r in rows], [100 * r[key] for r in rows], "o-", label=f"memory bank, {encoder} encoder")
        ax.axhline(100 * p["pooled"][key], color="grey", ls="--", label="fine-tuned head alone")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["k"] for r in p["few_shot"]}), [str(k) for k in sorted({r["k"] for r in p["few_shot"]})])
        ax.set_xlabel("k normal reference images")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle("KolektorSDD, 3 held-out folds pooled: few-shot memory bank", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


class WholeImage(torch.nn.Module):
    """The task's probabilities of a whole image (stitched tiles when tiled), as a module for forward_rate."""

    def __init__(self, task, model: torch.nn.Module) -> None:
        super().__init__()
        self.task, self.model = task, model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.probabilities(self.model, x)


def selected_validation(curve: dict[str, float], select: str) -> float:
    """The validation ``monitor`` of the checkpoint ``--select`` scores (best epoch, or the final one)."""
    return curve[best_epoch(curve) if select == "best" else max(curve, key=int)]


def curve_summary(curve: dict[str, float]) -> str:
    """"final, best (epoch)" of a validation curve, in percent (the Trainer keeps the first of tied bests)."""
    if not curve:
        return ""
    best = best_epoch(curve)
    return f"{pct(curve[max(curve, key=int)])}, {pct(curve[best])} ({best})"


def few_shot_score(kind: str, k: int, overrides: list[str], model: torch.nn.Module, test) -> SegAnomalyMeter:
    """The held-out fold scored with a memory bank of the first ``k`` normal training images, on the fine-tuned
    encoder of this fold or on a random one (the frozen, training-free mode of the head)."""
    few = make_task([*overrides, "model.mode=few_shot", f"few_shot.k={k}", "few_shot.references=normal"])
    if kind == "untrained":
        torch.manual_seed(0)
        return score(few, few.build_model(), test)
    model.mode = "few_shot"
    try:
        return score(few, model, test)
    finally:
        model.mode = "supervised"


def markdown(p: dict) -> str:
    h, w = p["resolution"]
    th, tw = p.get("input", p["resolution"])
    tiled = [h, w] != [th, tw]
    how = (f"{p['epochs']} epochs of balanced sampling on {tw}x{th} crops (a defective image's crop holds a defect) of "
           f"the image at {w}x{h}; eval stitches overlapping {tw}x{th} tiles ({p['overlap']:.0%} overlap) back at "
           f"{w}x{h}" if tiled else f"{p['epochs']} epochs of balanced sampling (half the draws defective)")
    monitor = {"pixel_ap": "pixel AP", "image_ap": "image AP", "aupro": "AUPRO", "miou": "mIoU"}[p.get("monitor", "miou")]
    loss = p.get("loss", {"focal_weight": 1.0, "dice_weight": 1.0})
    loss = f"loss {loss['focal_weight']:g} x focal + {loss['dice_weight']:g} x Dice"
    dilate = (f", training masks dilated by a {p['dilate']}x{p['dilate']} square (scored on the labels as drawn)"
              if p.get("dilate", 1) > 1 else "")
    chosen = (f" and picks the checkpoint: the epoch of the best validation {monitor}, evaluated every "
              f"{p['eval_every']} epochs (per fold below)" if p.get("select") == "best"
              else " and only logged; final-epoch weights")
    lines = [
        f"Command: `{p['command']}`  ",
        f"Date: {p['date']}; machine: {p['machine']}; wall time {p['wall_s'] / 60:.1f} min.  ",
        f"Setup: `scrap-vit-tiny` from random weights (patch {p.get('patch', 8)}), KolektorSDD at {w}x{h} (W x H; the "
        f"originals are ~500x1250, so {w / 500:.2f}x), the same folds as the segdec benchmark, classes normal / "
        f"defect, {how}; {loss}{dilate}. Validation (20 % of the training folds' items) is carved out of the "
        f"training folds{chosen}; the held-out fold is scored. Metrics at the working resolution {w}x{h}, ground "
        "truth downsampled by per-pixel area vote.",
        *(["Data: KolektorSDD rewritten by benchmarks/kolektor_to_folder.py into the generic layout (images/, "
           "0/255 masks/, labels.csv with the item as group) and read with `data.format=folder`."]
          if p.get("layout") == "folder" else []),
        "",
        "| fold | train images | test images (defective) | pixel AP | pixel AUROC | AUPRO | image AP | image AUROC "
        f"| IoU defect | pixel AP, segdec's protocol | segdec pixel AP (reference) | validation {monitor}: final, best "
        "(epoch) | train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fold, r in p["folds"].items():
        m = r["metrics"]
        lines.append(f"| {fold} | {r.get('n_train', '')} | {r['n_test']} ({r['n_defective']}) | {pct(m['pixel_ap'])} "
                     f"| {pct(m['pixel_auroc'])} | {pct(m['aupro'])} | {pct(m['image_ap'])} | {pct(m['image_auroc'])} "
                     f"| {pct(m['iou_defect'])} | {pct(m['pixel_ap_segdec'])} | {SEGDEC_PIXEL_AP.get(int(fold), '')} "
                     f"| {curve_summary(r.get('validation', {}))} | {r['train_s']:.0f} |")
    q = p["pooled"]
    speed = p["inference_images_per_s"]
    lines += [
        f"| pooled | | | {pct(q['pixel_ap'])} | {pct(q['pixel_auroc'])} | {pct(q['aupro'])} | {pct(q['image_ap'])} "
        f"| {pct(q['image_auroc'])} | {pct(q['iou_defect'])} | {pct(q['pixel_ap_segdec'])} | | | |",
        "",
        "Image scores are the maximum of the pixel anomaly map (1 - p(normal)). *Pixel AP, segdec's protocol*: "
        "the map scored as segdec's benchmarks score theirs (128x80, 5-px dilated truth, 8x8 cells, a cell's "
        "maximum). It scores this head's sharp maps lower than the pixel AP at the working resolution does: "
        "the 5-px dilated truth rewards maps trained on dilated masks, as segdec's are. *segdec pixel AP "
        "(reference)*: segdec's own run on the same folds, the `base` row of segdec_transfer.md (2026-12-01, "
        "128x80, 10 epochs).",
        f"CPU inference ({'tiled, ' if tiled else ''}whole {w}x{h} image, forward only): {speed['batch1']} images/s "
        f"at batch 1, {speed['batch16']} at batch 16.",
    ]
    if p.get("tta"):
        t = p["tta"]
        per_fold = ", ".join(f"fold {f} {pct(m['pixel_ap'])}" for f, m in t["folds"].items())
        q = t["pooled"]
        lines += ["", f"The same checkpoints scored under {t['mode']} TTA (probabilities of the image and its flips "
                  f"averaged): pooled pixel AP {pct(q['pixel_ap'])}, pixel AUROC {pct(q['pixel_auroc'])}, AUPRO "
                  f"{pct(q['aupro'])}, image AP {pct(q['image_ap'])}; pixel AP per fold: {per_fold}."]
        if all("validation_pixel_ap" in m for m in t["folds"].values()):
            val = ", ".join(f"fold {f} {pct(m['validation_pixel_ap']['none'])} -> "
                            f"{pct(m['validation_pixel_ap'][t['mode']])}" for f, m in t["folds"].items())
            lines.append(f"On each fold's validation split (the checkpoint's), pixel AP without -> with {t['mode']}: "
                         f"{val}.")
    if p.get("few_shot"):
        lines += ["", "Few-shot memory bank (`model.mode=few_shot`, the first k defect-free training images of each "
                  "fold as references, memory mixed half and half with the prompt probabilities), pooled over the "
                  "three held-out folds:", "",
                  "| encoder | k | pixel AP | pixel AUROC | AUPRO | image AP | image AUROC |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['encoder']} | {r['k']} | {pct(r['pixel_ap'])} | {pct(r['pixel_auroc'])} | {pct(r['aupro'])} "
                  f"| {pct(r['image_ap'])} | {pct(r['image_auroc'])} |" for r in p["few_shot"]]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
