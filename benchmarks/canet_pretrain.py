"""canet from a ViT pretrained on unlabeled granule photos (SimCLR, ``scrapvision pretrain``) against random init.

A plant photographs far more bags than it assays. This benchmark pretrains CANet's backbone (test_vit, the CPU
recipe's 3 blocks and 6-px patches at 96 px) on the photos of the synthetic train bags, labels, masks and contents
ignored, then trains CANet on K assayed bags from that backbone and from random init, with the same steps, seeds
and scoring as ``canet_synthetic.py --only mask_only`` (1600 optimizer steps of 8 bags, best-on-val checkpoint,
100 test bags and 100 fresh bags, N = 4). Only train-split photos are pretrained on; no scored bag is seen.

    python benchmarks/canet_pretrain.py --bags 40 --seeds 0,1                # both arms
    python benchmarks/canet_pretrain.py --bags 40 --seeds 1 --arms pretrained   # another process, one arm
    python benchmarks/canet_pretrain.py --report                              # rebuild the section

The pretraining is cached in --work by its recipe (an interrupted one resumes). Results merge by row into
``benchmarks/results/canet_pretrain.json``; the ``canet_pretrain`` section of ``canet.md`` is rewritten after
every run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import locked_json_update, machine, write_section  # noqa: E402
from canet_report import HEADER, MARKDOWN  # noqa: E402
from canet_synthetic import FULL, QUICK, RESULTS, base_overrides, mask_only_overrides, train_and_score  # noqa: E402

from scrapvision.config import load_config  # noqa: E402
from scrapvision.data.synthetic.copper_granules import render_split  # noqa: E402
from scrapvision.heads.canet import CanetConfig, CanetTask  # noqa: E402
from scrapvision.heads.pretrain import BACKBONE_FILE, PretrainConfig, PretrainTask  # noqa: E402
from scrapvision.trainer import Trainer  # noqa: E402

ARMS = ("random", "pretrained")
#: the random-init rows of canet_synthetic.py's mask-only table, shown beside this script's own
RECORDED = "random (mask-only table)"


def pretrain_overrides(args: argparse.Namespace, recipe: CanetConfig) -> list[str]:
    """CANet's backbone as the head builds it (name, patch size, depth, input size), SimCLR on its photos."""
    m = recipe.model
    return [f"model.backbone={m.backbone}", f"model.patch_size={m.patch_size}", f"model.vit_depth={m.vit_depth}",
            f"data.crop_size={m.img_size}", f"data.keep_size={m.img_size}", "data.val_fraction=0",
            f"data.color_strength={args.color_strength}", f"train.epochs={args.pretrain_epochs}",
            f"train.batch_size={args.batch}", "train.seed=0", "train.device=cpu"]


def write_photos(size: dict, per_bag: int, folder: Path) -> None:
    """The first ``per_bag`` photos of every synthetic train bag as PNG files (what a plant's camera keeps).
    Only those are rendered: a bag's stirs are drawn in turn, so its first photos are the same whatever the
    number of stirs CANet later renders."""
    overrides = [*base_overrides(size, folder), f"data.synthetic_stirs={per_bag}"]
    task = CanetTask(load_config(CanetConfig, REPO / "tasks" / "canet.yaml", overrides))
    split = render_split(task._spec(), task.cfg.data.synthetic_seed, "train", size["train"], task.cfg.model.img_size)
    folder.mkdir(parents=True, exist_ok=True)
    for b, images in enumerate(split.images):
        for j, image in enumerate(images):
            cv2.imwrite(str(folder / f"bag{b:04d}_stir{j:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def pretrain(args: argparse.Namespace, size: dict, recipe: CanetConfig) -> dict:
    """Pretrain once per recipe (cached in --work, resumed when interrupted); its record."""
    overrides = pretrain_overrides(args, recipe)
    key = hashlib.sha1(json.dumps([overrides, size["train"], args.photos_per_bag]).encode()).hexdigest()[:10]
    work = args.work / key
    done = work / "pretrain.json"
    if done.exists():
        return json.loads(done.read_text())
    start = time.perf_counter()
    photos = work / "photos"
    if not (work / "photos.done").exists():
        write_photos(size, args.photos_per_bag, photos)
        (work / "photos.done").touch()
    render_s = time.perf_counter() - start
    task = PretrainTask(load_config(PretrainConfig, overrides=[*overrides, f"data.root={photos}"]))
    run = work / "run"
    Trainer(task, run_dir=run, resume=run if (run / "last.pt").exists() else None).fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = {r["epoch"]: r for r in rows if r.get("kind") == "epoch"}
    last = epochs[max(epochs)]
    info = {"key": key, "overrides": overrides, "images": len(task.images()), "steps": last["step"],
            "render_s": round(render_s, 1), "loop_s": last["elapsed_s"],
            "images_per_s": round(last["step"] * args.batch / last["elapsed_s"], 2),
            "first_loss": round(epochs[min(epochs)]["train_loss"], 4), "last_loss": round(last["train_loss"], 4),
            "backbone": str(run / BACKBONE_FILE)}
    done.write_text(json.dumps(info, indent=1))
    return info


def recorded_random(report: dict) -> dict[str, dict]:
    """The random-init runs of the mask-only table (``canet assayed=K [seed=S]``: the same overrides, earlier
    code), as rows of arm RECORDED, for the K this report has."""
    path = RESULTS / "canet_mask_only.json"
    if not path.exists() or report.get("sizes") != FULL:
        return {}
    bags = {r["assayed"] for r in report["rows"].values()}
    out = {}
    for name, row in json.loads(path.read_text())["rows"].items():
        if name.startswith("canet assayed=") and row["assayed"] in bags:
            seed = row.get("seed") or 0  # the seed-0 rows of that table carry no seed
            out[f"{RECORDED} assayed={row['assayed']} seed={seed}"] = {**row, "arm": RECORDED, "seed": seed}
    return out


def markdown(report: dict) -> str:
    """Pretraining record, then per assayed-bag count the two arms over their seeds, and the paired gain."""
    lines = ["## CANet from a ViT pretrained on unlabeled granule photos (script benchmarks/canet_pretrain.py)", ""]
    lines += [f"- `{r['command']}` (commit {r['commit']}): started {r['started']}, wall {r['wall_s'] / 60:.1f} min, "
              f"{r['machine']}" for r in report["runs"]]
    p = report.get("pretraining")
    if p:
        lines += [f"- Pretraining (SimCLR, labels, masks and contents ignored): {p['images']} photos of the "
                  f"{report['sizes']['train']} synthetic train bags (the first {report['photos_per_bag']} of each), "
                  f"`{' '.join(p['overrides'])}`; {p['steps']} steps of batch {report['batch']}, "
                  f"{p['loop_s'] / 60:.1f} min of training at {p['images_per_s']:.1f} images/s (2 views each) plus "
                  f"{p['render_s'] / 60:.1f} min to render and write the photos; NT-Xent {p['first_loss']:.3f} -> "
                  f"{p['last_loss']:.3f}."]
    lines += ["- CANet: the recipe (`tasks/canet.yaml`) on K assayed bags alone, about 1600 optimizer steps of 8 bags "
              "(the mask-only table's runs), `model.weights` = the pretrained backbone or none; best-on-val "
              "checkpoint; 100 test bags and 100 fresh bags (generator seed 1000), N = 4. Rows `random (mask-only "
              "table)` are the runs of the same overrides in the mask-only section (2026-12-01/02, earlier code: "
              "not bit-identical reruns of `random`).", "",
              "| assayed bags | backbone | seeds | MAE pp (test / fresh), mean over seeds | per seed (test / fresh) | "
              "area MAE pp | train wall per run |", "|---|---|---|---|---|---|---|"]
    rows = {**recorded_random(report), **report["rows"]}
    for bags in sorted({r["assayed"] for r in rows.values()}):
        for arm in (RECORDED, *ARMS):
            group = sorted((r for r in rows.values() if r["assayed"] == bags and r["arm"] == arm),
                           key=lambda r: r["seed"])
            if not group:
                continue
            test = [r["test"]["content_mae_pp"] for r in group]
            fresh = [r["test_fresh"]["content_mae_pp"] for r in group]
            lines.append(f"| {bags} | {arm} | {', '.join(str(r['seed']) for r in group)} | "
                         f"{np.mean(test):.2f} / {np.mean(fresh):.2f} | "
                         + ", ".join(f"{t:.2f} / {f:.2f}" for t, f in zip(test, fresh))
                         + f" | {np.mean([r['test']['area_mae_pp'] for r in group]):.2f} | "
                           f"{np.mean([r['train_wall_s'] for r in group]) / 60:.1f} min |")
        for base in ("random", RECORDED):
            pairs = [(rows[f"{base} assayed={bags} seed={s}"], rows[f"pretrained assayed={bags} seed={s}"])
                     for s in sorted({r["seed"] for r in rows.values()})
                     if f"{base} assayed={bags} seed={s}" in rows and f"pretrained assayed={bags} seed={s}" in rows]
            if pairs:
                diff = [b["test"]["content_mae_pp"] - a["test"]["content_mae_pp"] for a, b in pairs]
                fresh = [b["test_fresh"]["content_mae_pp"] - a["test_fresh"]["content_mae_pp"] for a, b in pairs]
                lines.append(f"| {bags} | pretrained minus {base}, paired by seed (negative: pretrained better) | "
                             f"{len(pairs)} | {np.mean(diff):+.2f} / {np.mean(fresh):+.2f} | | | |")
    return "\n".join(lines) + "\n"


def update(path: Path, change: Callable[[dict], None], quick: bool) -> dict:
    """Change the results under a file lock, then write the section."""
    report = locked_json_update(path, change, lambda: {"rows": {}, "runs": []})
    write_section(MARKDOWN, "canet_pretrain", markdown(report), quick=quick, header=HEADER)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", default="40", help="assayed bags, comma-separated (of the 640 train bags)")
    parser.add_argument("--seeds", default="0,1", help="CANet training seeds, comma-separated")
    parser.add_argument("--arms", default=",".join(ARMS), help="random, pretrained (comma-separated)")
    parser.add_argument("--pretrain-epochs", type=int, default=8, help="SimCLR epochs (80 steps each at the defaults)")
    parser.add_argument("--photos-per-bag", type=int, default=8, help="photos of each train bag pretrained on")
    parser.add_argument("--batch", type=int, default=64, help="pretraining batch (images; 2 views each)")
    parser.add_argument("--color-strength", type=float, default=0.25,
                        help="pretraining data.color_strength: copper and brass differ mostly in colour")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "canet_pretrain")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--report", action="store_true", help="only rebuild the markdown from the JSON")
    args = parser.parse_args()
    suffix = "_quick" if args.quick else ""
    path = RESULTS / f"canet_pretrain{suffix}.json"
    if args.report:
        write_section(MARKDOWN, "canet_pretrain", markdown(json.loads(path.read_text())), quick=args.quick,
                      header=HEADER)
        return
    arms = [a for a in args.arms.split(",") if a]
    if unknown := sorted(set(arms) - set(ARMS)):
        parser.error(f"--arms: unknown {unknown}; arms: {', '.join(ARMS)}")
    torch.set_num_threads(args.threads)
    size = dict(QUICK if args.quick else FULL)
    if args.quick:
        args.pretrain_epochs, args.batch, args.photos_per_bag = 1, 8, 2
    recipe = load_config(CanetConfig, REPO / "tasks" / "canet.yaml")
    started, t0, host = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.time(), machine()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    info = pretrain(args, size, recipe) if "pretrained" in arms else None
    setting = {"sizes": size, "photos_per_bag": args.photos_per_bag, "batch": args.batch,
               **({"pretraining": info} if info else {})}
    update(path, lambda r: r.update(setting), args.quick)
    out = REPO / "runs" / f"bench_canet_pretrain{suffix}"
    for seed in [int(s) for s in args.seeds.split(",")]:
        for bags in [int(b) for b in args.bags.split(",")]:
            for arm in arms:
                name = f"{arm} assayed={bags} seed={seed}"
                overrides = mask_only_overrides("canet", bags, size, recipe) + [f"train.seed={seed}"]
                overrides += [f"model.weights={info['backbone']}"] if arm == "pretrained" else []
                row = {**train_and_score(name, overrides, size, out, fresh=True), "arm": arm, "assayed": bags,
                       "seed": seed}
                update(path, lambda r, name=name, row=row: r["rows"].__setitem__(name, row), args.quick)
    run = {"command": "python benchmarks/canet_pretrain.py " + " ".join(sys.argv[1:]), "started": started,
           "wall_s": round(time.time() - t0, 1), "commit": commit, "machine": host}
    print(markdown(update(path, lambda r: r["runs"].append(run), args.quick)))


if __name__ == "__main__":
    main()
