"""scrap_cls ablation on the real scrap photos: baseline / clf / sef / clfsef trained the same way.

    python benchmarks/scrap_cls_ablation.py            # real data, ~25 min on the shared 2-core CPU
    python benchmarks/scrap_cls_ablation.py --quick    # synthetic data, 2 epochs: checks the script

One fixed stratified split of the 333 photos (data.split_seed, val_fraction 0.2); the two truncated JPEGs
are skipped by the unreadable-image policy. Every variant gets the same backbone, resolution, schedule,
seed and regularisers. The table reports the LAST epoch (no checkpoint picked on the validation
images), next to the paper's numbers on its own data. Writes benchmarks/results/scrap_cls_ablation.json,
a section in benchmarks/results/scrap_cls.md and confusion-matrix PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_env import forward_rate, machine, write_section  # noqa: E402
from benchmarks.scrap_cls_common import MARKDOWN  # noqa: E402
from scrapvision.config import load_config  # noqa: E402
from scrapvision.heads.scrap_cls import ScrapClsConfig, ScrapClsTask  # noqa: E402
from scrapvision.heads.scrap_cls_parts.report import classification_metrics, write_report  # noqa: E402
from scrapvision.trainer import Trainer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
VARIANTS = ("baseline", "clf", "sef", "clfsef")
PAPER = {"baseline": 87.98, "clfsef": 90.51}  # EfficientNetB5 vs EfficientNetB5-CLFSEF, the paper's own data


def recipe(quick: bool, root: Path, variant: str, out_dir: str, image_size: int = 112, epochs: int = 20,
           seed: int = 0) -> list[str]:
    """The overrides every variant is trained with (only ``model.variant`` differs between rows)."""
    if quick:
        return [f"model.variant={variant}", "model.backbone=test_efficientnet", "model.fuse_channels=32",
                "data.image_size=48", "data.synthetic_train_per_class=12", "data.synthetic_val_per_class=6",
                "train.epochs=2", "train.batch_size=16", f"train.seed={seed}", "train.device=cpu",
                f"train.out_dir={out_dir}"]
    return [f"model.variant={variant}", "model.backbone=tinynet_e", f"data.root={root}", f"data.image_size={image_size}",
            "data.val_fraction=0.2", "data.split_seed=0", "data.unreadable=skip", "data.augment=strong",
            f"train.epochs={epochs}", "train.batch_size=32", f"train.seed={seed}", "train.device=cpu",
            f"train.out_dir={out_dir}", "optim.lr=0.003", "optim.weight_decay=0.05", "optim.warmup_epochs=1.0"]


PER_RUN = ("model.variant=", "train.seed=", "train.out_dir=")


def shared_recipe(overrides: list[str]) -> list[str]:
    """The overrides that define a comparison: ``recipe`` without what changes per run (variant, seed, out dir),
    so results recorded by different processes are merged only when this part is identical."""
    return [o for o in overrides if not o.startswith(PER_RUN)]


@torch.no_grad()
def predictions(task: ScrapClsTask, model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) on the validation split, through the head's own scoring (``task.probabilities``: its
    eval.tta and eval.image_size; the plain arg-max of the logits when both are at their defaults)."""
    loader = DataLoader(task.build_datasets()[1], batch_size=32)
    model.eval()
    pred, true = [], []
    for batch in loader:
        pred.append(task.probabilities(model, batch["image"]).argmax(1).numpy())
        true.append(batch["label"].numpy())
    return np.concatenate(true), np.concatenate(pred)


def run_variant(variant: str, args: argparse.Namespace, runs: Path) -> dict:
    cfg = load_config(ScrapClsConfig, overrides=recipe(args.quick, args.data, variant, str(runs)))
    task = ScrapClsTask(cfg)
    start = time.perf_counter()
    result = Trainer(task, run_dir=runs / variant).fit()
    train_s = time.perf_counter() - start
    model = task.build_model()
    model.load_state_dict(torch.load(result.last_path, map_location="cpu", weights_only=True)["model"])
    y_true, y_pred = predictions(task, model)
    last = classification_metrics(y_true, y_pred)
    folder = RESULTS / (f"scrap_cls_quick_{variant}" if args.quick else f"scrap_cls_{variant}")
    rows = write_report(folder, y_true, y_pred, task.class_names,
                        title=f"scrap_cls {variant}: last epoch, {len(y_true)} val images")
    history = [json.loads(line) for line in (runs / variant / "metrics.jsonl").read_text().splitlines()]
    epochs = [h for h in history if h.get("kind") == "epoch"]
    return {
        "variant": variant, "train_s": round(train_s, 1), "train_images": len(task.build_datasets()[0]),
        "val_images": int(len(y_true)), "skipped": task.skipped,
        "accuracy": round(100 * last["accuracy"], 2), "macro_f1": round(100 * last["macro_f1"], 2),
        "best_epoch_accuracy": round(100 * max(e["val_accuracy"] for e in epochs), 2),
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "infer_img_s_b1": round(forward_rate(model, torch.randn(1, 3, cfg.data.image_size, cfg.data.image_size), 10), 1),
        "infer_img_s_b16": round(forward_rate(model, torch.randn(16, 3, cfg.data.image_size, cfg.data.image_size)), 1),
        "per_class": rows,
    }


def markdown(results: list[dict], args: argparse.Namespace, wall: float, command: str, host: str) -> str:
    first = results[0]
    lines = [
        "## scrap_cls: CLFSEF ablation on real scrap photos" + (" (QUICK smoke run, synthetic)" if args.quick else ""),
        "",
        f"- Command: `{command}`",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {host}; wall {wall / 60:.1f} min",
        "- Data: " + ("synthetic scrap grades" if args.quick else
                      f"`scrap_grades` (333 photos, 24 grades), one stratified split (split_seed 0): "
                      f"{first['train_images']} train / {first['val_images']} val after skipping "
                      f"{len(first['skipped'])} truncated JPEGs ({'; '.join(Path(s.split(':')[0].removeprefix('image ')).name for s in first['skipped'])})"),
        "- Recipe: " + " ".join(f"`{o}`" for o in recipe(args.quick, Path("DATA"), "VARIANT", "OUT")
                                 if not o.startswith(("train.out_dir", "data.root", "model.variant"))),
        "  ; no pretrained weights (none offline), loss = CE + aux CE + KD (self) 0.5 + max-entropy 0.1 for all.",
        "- Numbers are the last epoch on the validation split (no checkpoint chosen on it).",
        "",
        "| variant | top-1 acc % | macro-F1 % | best-epoch acc % | paper acc % | params M | train s | infer img/s (b1 / b16) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        paper = f"{PAPER[r['variant']]:.2f}" if r["variant"] in PAPER else "-"
        lines.append(f"| {r['variant']} | {r['accuracy']:.2f} | {r['macro_f1']:.2f} | {r['best_epoch_accuracy']:.2f} | "
                     f"{paper} | {r['params_M']} | {r['train_s']:.0f} | {r['infer_img_s_b1']} / {r['infer_img_s_b16']} |")
    by = {r["variant"]: r for r in results}
    gain = by["clfsef"]["accuracy"] - by["baseline"]["accuracy"]
    lines += ["", f"CLFSEF - baseline: {gain:+.2f} accuracy points (paper: +2.53 on its data; goal here: >= +2.5). "
              f"One validation image is {100 / first['val_images']:.2f} points.",
              "Per-class precision/recall: `benchmarks/results/scrap_cls_<variant>/per_class.csv`; confusion "
              "matrices: `benchmarks/results/scrap_cls_<variant>/confusion_matrix.png`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic data, 2 epochs (checks the script)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))
                        / "scrap_grades")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy shared CPU)")
    args = parser.parse_args()
    if not args.quick and not args.data.is_dir():
        sys.exit(f"scrap_grades not found at {args.data} (set SCRAPVISION_DATA)")
    torch.set_num_threads(args.threads)
    host = machine()  # before training: the load at start
    command = "python benchmarks/scrap_cls_ablation.py" + (" --quick" if args.quick else "")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scrap_cls_ablation_") as tmp:
        results = [run_variant(v, args, Path(tmp)) for v in VARIANTS]
    wall = time.perf_counter() - start
    name = "scrap_cls_ablation_quick" if args.quick else "scrap_cls_ablation"
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "wall_s": round(wall, 1), "machine": host,
               "threads": args.threads, "cpus": os.cpu_count(), "recipe": recipe(args.quick, args.data, "VARIANT", "OUT"),
               "results": results, "paper": PAPER}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=1))
    section = markdown(results, args, wall, command, host)
    write_section(MARKDOWN, "scrap_cls:ablation", section, quick=args.quick)
    print(section)


if __name__ == "__main__":
    main()
