"""clip_anomaly on KolektorSDD and severstal on the real Kaggle sample, from scratch against from a
SimCLR-pretrained encoder, same folds and same seeds (the defect half of issue #17; scrap_cls is
benchmarks/pretrain_transfer.py).

    python benchmarks/pretrain_transfer_defects.py --parts severstal --seeds 0
    python benchmarks/pretrain_transfer_defects.py --parts kolektor --seeds 0
    python benchmarks/pretrain_transfer_defects.py --parts kolektor_tiled --seeds 0,1,2,3 --arms scratch
    python benchmarks/pretrain_transfer_defects.py --quick          # plumbing: 1 epoch of everything, fold 0
    python benchmarks/pretrain_transfer_defects.py --report         # rebuild the markdown

kolektor: the recipe of benchmarks/clip_anomaly_kolektor.py (scrap-vit-tiny, 200x80, 6 epochs, final epoch
scored, the same 3 folds); per fold, the image tower (``clip_scrap_tiny``) is pretrained on the images of
that fold's training folds only (labels ignored). Square crops: the position grid is resampled to 25x10.
kolektor_tiled: the same, with the recipe the package ships (``tasks/clip_anomaly-kolektor.yaml``: 128x104
tiles of the image at 512x208, EMA, best validation pixel AP picks the checkpoint) shortened to
``--tiled-epochs``, and the pretraining at that scale (images kept with their shorter side at 208 px, 96 px
crops down to a tenth of the image: about a tile).
severstal: the recipe of benchmarks/severstal_train.py (resnet18 U-Net trained on synthetic strips, scored
on the 16 fully-labelled real images); its encoder is pretrained on 256x256 tiles of the other real images
of the sample (never the 16 scored ones). Pretrainings are cached in --work and serve every seed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import machine, now  # noqa: E402
from clip_anomaly_common import DATA, RESULTS, make_task, pct, score, train_last  # noqa: E402
from clip_anomaly_kolektor import KEYS, RECIPE  # noqa: E402
from severstal_train import empty_dice  # noqa: E402

from scrapvision.api import evaluate, load_trained, train  # noqa: E402
from scrapvision.config import load_config, read_yaml  # noqa: E402
from scrapvision.data.kolektor import kolektor_folds, list_kolektor  # noqa: E402
from scrapvision.data.severstal import load_records  # noqa: E402
from scrapvision.heads.clip_anomaly_parts.metrics import SegAnomalyMeter  # noqa: E402
from scrapvision.heads.pretrain import BACKBONE_FILE, PretrainConfig, PretrainTask  # noqa: E402
from scrapvision.loggers import flat  # noqa: E402
from scrapvision.trainer import Trainer  # noqa: E402

LOADED = re.compile(r"weights file \S+: loaded \d+ of the backbone's \d+ tensors[^\n]*")
#: the recipe's commutator prompts (the short recipe's runs used the same two)
PROMPTS = [f"{k}={v}" for k, v in flat(read_yaml(RECIPE)).items() if k.startswith("prompts.")]
ARM_ORDER = ("scratch", "pretrained", "simmim")
PARTS = ("kolektor", "kolektor_tiled", "severstal")
SEVERSTAL_KEYS = ("dice", "dice_raw", "dice_c1", "dice_c2", "dice_c3", "dice_c4")


class Tee(io.StringIO):
    """stderr as usual (no progress bars: not a tty), plus a copy: the 'loaded N of M tensors' line goes
    into the results."""

    def __init__(self) -> None:
        super().__init__()
        self.stream = sys.stderr

    def write(self, s: str) -> int:
        self.stream.write(s)
        return super().write(s)

    def loaded(self) -> str:
        found = LOADED.findall(self.getvalue())
        return found[0] if found else "NO 'loaded' LINE"


def pretrain(tag: str, files: list[Path], overrides: list[str], args: argparse.Namespace) -> dict:
    """SimCLR on ``files`` (linked into one folder), cached in --work by tag and recipe; resumed if interrupted."""
    key = hashlib.sha1(json.dumps([overrides, sorted(map(str, files))]).encode()).hexdigest()[:10]
    work = args.work / f"{tag}_{key}"
    done = work / "pretrain.json"
    if done.exists():
        return json.loads(done.read_text())
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        link = images / f"{i:04d}{path.suffix}"
        if not link.exists():
            link.symlink_to(path)
    task = PretrainTask(load_config(PretrainConfig, overrides=[*overrides, f"data.root={images}"]))
    run, start = work / "run", time.perf_counter()
    Trainer(task, run_dir=run, resume=run if (run / "last.pt").exists() else None).fit()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = {r["epoch"]: r for r in rows if r.get("kind") == "epoch"}
    last = epochs[max(epochs)]
    info = {"tag": tag, "images": len(task.images()), "epochs": max(epochs), "steps": last["step"],
            "seconds": round(time.perf_counter() - start, 1), "loop_seconds": last["elapsed_s"],
            "images_per_s": round(last["step"] * task.cfg.train.batch_size / last["elapsed_s"], 2),
            "first_loss": round(epochs[1]["train_loss"], 4), "last_loss": round(last["train_loss"], 4),
            "overrides": overrides, "backbone": str(run / BACKBONE_FILE)}
    done.write_text(json.dumps(info, indent=1))
    return info


def arms(infos: dict[str, dict], args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """The arms this process runs (``--arms``): scratch, and one per pretraining in ``infos`` (arm -> its record)."""
    every = [("scratch", [])] + [(arm, [f"model.weights={info['backbone']}"]) for arm, info in infos.items()]
    return [(arm, extra) for arm, extra in every if arm in args.arm_list]


def pretrain_recipe(backbone: str, crop: int, keep: int, epochs: int, args: argparse.Namespace) -> list[str]:
    return [f"model.backbone={backbone}", f"data.crop_size={crop}", f"data.keep_size={keep}", "data.val_fraction=0",
            f"train.epochs={epochs}", f"train.batch_size={args.batch}", "train.seed=0", "train.device=cpu"]


def kolektor_base(args: argparse.Namespace) -> list[str]:
    """benchmarks/clip_anomaly_kolektor.py's overrides (its default 200x80, 6 epochs)."""
    return [f"data.root={DATA / 'kolektorsdd'}", "data.format=kolektor", "data.sampling=balanced",
            "model.image_size=[200, 80]", f"train.epochs={args.epochs}", f"train.eval_every={args.epochs}",
            "train.device=cpu", "train.log_every=100000", *PROMPTS]


def kolektor_tiled_base(args: argparse.Namespace) -> list[str]:
    """The shipped recipe (tasks/clip_anomaly-kolektor.yaml) with ``--tiled-epochs`` epochs."""
    recipe = {**flat(read_yaml(RECIPE)), "train.epochs": args.tiled_epochs}
    return [*(f"{k}={v}" for k, v in recipe.items()), f"data.root={DATA / 'kolektorsdd'}", "data.format=kolektor",
            "train.device=cpu", "train.log_every=100000"]


def kolektor_train_images(fold: int, base: list[str]) -> list[Path]:
    """The images of the training folds of ``fold``, split as the head splits them."""
    data = make_task([*base, f"data.fold={fold}"]).cfg.data
    items = list_kolektor(data.root)
    folds = kolektor_folds(items, data.n_folds, data.split_seed)
    train_files = [it.image for it, f in zip(items, folds) if f != fold]
    assert train_files and not {it.image for it, f in zip(items, folds) if f == fold} & set(train_files)
    return train_files


def run_kolektor(args: argparse.Namespace, payload: dict, part: str = "kolektor") -> None:
    """One part: ``kolektor`` (the benchmark's short whole-image recipe, final epoch scored) or
    ``kolektor_tiled`` (the shipped tiled recipe, shortened; best validation pixel AP picks the checkpoint)."""
    if part == "kolektor_tiled":
        base, checkpoint = kolektor_tiled_base(args), "best.pt"
        simclr = pretrain_recipe("clip_scrap_tiny", args.tiled_crop, 208, args.tiled_pretrain_epochs, args)
        recipes = {"pretrained": ("kolektor_tiled_fold", [*simclr, "data.min_scale=0.1", "data.color_strength=0.5"]),
                   "simmim": ("kolektor_tiled_simmim_fold", [*simclr, "model.method=simmim", "data.mask_unit=16",
                                                             "data.mask_ratio=0.6", "data.min_scale=0.1",
                                                             "data.color_strength=0.5"])}
    else:
        base, checkpoint = kolektor_base(args), "last.pt"
        recipes = {"pretrained": ("kolektor_fold", pretrain_recipe("clip_scrap_tiny", args.kolektor_crop, args.kolektor_keep,
                                                                   args.kolektor_pretrain_epochs, args))}
    pooled: dict[tuple[str, int], SegAnomalyMeter] = {}
    for fold in args.fold_list:
        infos = {}
        for arm, (tag, recipe) in recipes.items():
            if arm in args.arm_list:
                infos[arm] = pretrain(f"{tag}{fold}", kolektor_train_images(fold, base), recipe, args)
                payload["pretraining"][f"{tag}{fold}"] = infos[arm]
        for seed in args.seed_list:
            for arm, extra in arms(infos, args):
                tee = Tee()
                with tempfile.TemporaryDirectory(prefix="ptd_kolektor_") as tmp, contextlib.redirect_stderr(tee):
                    task, model, train_s = train_last([*base, f"data.fold={fold}", f"train.seed={seed}", *extra],
                                                      Path(tmp) / "run", checkpoint)
                    meter = score(task, model, task.build_eval_dataset())  # the held-out fold
                pooled.setdefault((arm, seed), SegAnomalyMeter(("normal", "defect"))).extend(meter)
                m = meter.compute()
                add(payload, part, {"arm": arm, "seed": seed, "fold": fold, "train_s": round(train_s, 1),
                                    "metrics": {k: m[k] for k in KEYS if k in m}, "n_test": len(meter.maps),
                                    "loaded": tee.loaded() if extra else ""})
                print(f"{part} fold {fold} seed {seed} {arm}: pixel AP {pct(m['pixel_ap'])} pixel AUROC "
                      f"{pct(m['pixel_auroc'])} image AP {pct(m['image_ap'])} ({train_s:.0f} s)", flush=True)
                save(payload, args)
    if len(args.fold_list) == 3:
        for (arm, seed), meter in pooled.items():
            m = meter.compute()
            add(payload, part, {"arm": arm, "seed": seed, "fold": "pooled", "metrics": {k: m[k] for k in KEYS if k in m}})


@torch.no_grad()
def token_similarity(args: argparse.Namespace, payload: dict) -> None:
    """How alike an encoder's last-block patch tokens are within one tile (mean cosine over pairs of different
    tokens; 1 = every token the same, so nothing local is left to segment), on the first 40 images of each
    held-out fold, the top-left 128x104 tile at the recipe's resolution: random init against every pretraining
    of kolektor_tiled in the cache (``--work``)."""
    import torch.nn.functional as F

    from scrapvision.backbones.clip import ClipPatchTokens

    base = kolektor_tiled_base(args)
    for fold in args.fold_list:
        files = {"random": ""}
        for arm, tag in (("pretrained", "kolektor_tiled_fold"), ("simmim", "kolektor_tiled_simmim_fold")):
            found = sorted(args.work.glob(f"{tag}{fold}_*/pretrain.json"))
            if found:
                files[arm] = json.loads(found[-1].read_text())["backbone"]
        for arm, weights in files.items():
            torch.manual_seed(0)
            task = make_task([*base, f"data.fold={fold}", *([f"model.weights={weights}"] if weights else [])])
            encoder = next(m for m in task.build_model().eval().modules() if isinstance(m, ClipPatchTokens))
            test, sims = task.build_eval_dataset(), []
            for i in range(min(40, len(test))):
                tokens = F.normalize(encoder(test[i]["image"][None, :, :128, :104])[-1].flatten(2)[0].T, dim=1)
                pairs = tokens @ tokens.T
                sims.append(float((pairs.sum() - pairs.diag().sum()) / (pairs.numel() - len(pairs))))
            payload.setdefault("token_similarity", {})[f"fold {fold} {arm}"] = round(float(np.mean(sims)), 4)
            print(f"fold {fold} {arm}: mean cosine between a tile's patch tokens {np.mean(sims):.3f}", flush=True)
    save(payload, args)


def severstal_tiles(real: Path, work: Path) -> tuple[list[Path], list[str]]:
    """256x256 tiles (6 per strip) of the real images that are NOT scored; and the scored image ids."""
    from PIL import Image
    scored = sorted(r.image_id for r in load_records(real))
    out = work / "severstal_tiles"
    out.mkdir(parents=True, exist_ok=True)
    tiles = []
    for path in sorted((real / "train_images").iterdir()):
        if path.name in scored:
            continue
        image = Image.open(path).convert("RGB")
        for x in np.linspace(0, image.width - image.height, 6).astype(int):
            tile = out / f"{path.stem}_{x:04d}.png"
            if not tile.exists():
                image.crop((x, 0, x + image.height, image.height)).save(tile)
            tiles.append(tile)
    return tiles, scored


def run_severstal(args: argparse.Namespace, payload: dict) -> None:
    real = DATA / "severstal_sample"
    tiles, scored = severstal_tiles(real, args.work)
    payload["severstal_scored"] = scored
    recipe = pretrain_recipe("resnet18", args.severstal_crop, args.severstal_crop, args.severstal_pretrain_epochs, args)
    info = pretrain("severstal_real_unscored", tiles, recipe, args)
    payload["pretraining"]["severstal_real_unscored"] = info
    overrides = ["train.epochs=1"] if args.quick else []
    for seed in args.seed_list:
        for arm, extra in arms({"pretrained": info}, args):
            tee, start = Tee(), time.time()
            with tempfile.TemporaryDirectory(prefix="ptd_severstal_") as tmp:
                with contextlib.redirect_stderr(tee):
                    result = train("severstal", overrides=[*overrides, f"train.seed={seed}", *extra], run_dir=Path(tmp))
                train_s = time.time() - start
                synthetic = evaluate(*load_trained("severstal", result.best_path))
                task, model = load_trained("severstal", result.best_path, data=real)
                r = evaluate(task, model)
                payload["severstal_empty_dice"] = empty_dice(task)
            add(payload, "severstal", {"arm": arm, "seed": seed, "train_s": round(train_s, 1), "images": int(r["images"]),
                                       "real": {k: r[k] for k in SEVERSTAL_KEYS}, "synthetic_dice": synthetic["dice"],
                                       "loaded": tee.loaded() if extra else ""})
            print(f"severstal seed {seed} {arm}: real Dice {r['dice']:.4f} (all-empty "
                  f"{payload['severstal_empty_dice']:.4f}), synthetic {synthetic['dice']:.4f}", flush=True)
            save(payload, args)


def add(payload: dict, part: str, entry: dict) -> None:
    """One result, replacing an earlier one of the same arm, seed (and fold)."""
    same = ("arm", "seed", "fold")
    payload[part] = [e for e in payload.get(part, []) if any(e.get(k) != entry.get(k) for k in same)] + [entry]


def paths(args: argparse.Namespace) -> tuple[Path, Path]:
    stem = RESULTS / ("pretrain_transfer_defects" + ("_quick" if args.quick else ""))
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def save(payload: dict, args: argparse.Namespace) -> None:
    """Write ``payload`` merged into what the file holds now: two processes (say one per arm) share the file."""
    path = paths(args)[0]
    merged = json.loads(path.read_text()) if path.exists() else {"runs": [], "pretraining": {}}
    for part in PARTS:
        for entry in payload.get(part, []):
            add(merged, part, entry)
    merged["pretraining"].update(payload["pretraining"])
    merged["runs"] += [r for r in payload["runs"] if r not in merged["runs"]]
    merged.setdefault("token_similarity", {}).update(payload.get("token_similarity", {}))
    merged.update({k: v for k, v in payload.items() if k not in (*PARTS, "pretraining", "runs", "token_similarity")})
    path.write_text(json.dumps(merged, indent=1, default=float) + "\n")


def mean_sd(values: list[float], scale: float = 1.0) -> str:
    v, digits = scale * np.array(values, dtype=float), 1 if scale == 100 else 4
    return f"{v.mean():.{digits}f}" + (f" +- {v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")


KOLEKTOR_TITLES = {
    "kolektor": "benchmarks/clip_anomaly_kolektor.py's short recipe: scrap-vit-tiny, 200x80, 6 epochs, final epoch scored",
    "kolektor_tiled": "the shipped tiled recipe, tasks/clip_anomaly-kolektor.yaml (128x104 tiles of the image at 512x208, "
                      "EMA 0.99), shortened to the epochs in the commands; the checkpoint of the best validation pixel AP "
                      "(split carved from the training folds) is scored"}


def kolektor_table(p: dict, part: str, title: str) -> list[str]:
    lines = ["", f"#### clip_anomaly on KolektorSDD ({part}; 3-fold CV, the folds of benchmarks/clip_anomaly_kolektor.py; {title})",
             "", "| arm | seeds | pixel AP % | pixel AUROC % | image AP % | pixel AP per seed |", "|---|---|---|---|---|---|"]
    for arm in ("scratch", "pretrained", "simmim"):
        got = sorted((e for e in p[part] if e["arm"] == arm and e["fold"] == "pooled"), key=lambda e: e["seed"])
        if got:
            col = {k: [e["metrics"][k] for e in got] for k in ("pixel_ap", "pixel_auroc", "image_ap")}
            lines.append(f"| {arm} | {','.join(str(e['seed']) for e in got)} | {mean_sd(col['pixel_ap'], 100)} | "
                         f"{mean_sd(col['pixel_auroc'], 100)} | {mean_sd(col['image_ap'], 100)} | "
                         + " / ".join(pct(v) for v in col["pixel_ap"]) + " |")
    lines += ["", "Pooled over the three held-out folds, mean +- sd over seeds. Per fold:", "",
              "| fold | seed | arm | pixel AP | pixel AUROC | image AP | train s | weights loaded |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {e['fold']} | {e['seed']} | {e['arm']} | {pct(e['metrics']['pixel_ap'])} | {pct(e['metrics']['pixel_auroc'])} "
              f"| {pct(e['metrics']['image_ap'])} | {e['train_s']:.0f} | {e['loaded']} |"
              for e in sorted(p[part], key=lambda e: (str(e["fold"]), e["seed"], ARM_ORDER.index(e["arm"])))
              if e["fold"] != "pooled"]
    return lines


def markdown(p: dict) -> str:
    lines = ["## clip_anomaly (KolektorSDD) and severstal (real sample) from scratch vs self-supervised pretrained encoders", "",
             "- Commands: " + "; ".join(f"`{r['command']}` ({r['date']}, wall {r['wall_s'] / 60:.1f} min, {r['machine']})"
                                       for r in p["runs"]),
             "- Pretraining: SimCLR (`pretrain` task, NT-Xent, lightly projection head; arm `pretrained`) and, for "
             "kolektor_tiled, SimMIM (`model.method=simmim`, arm `simmim`: hidden 16 px units rebuilt, L1), labels "
             "ignored, seed 0, one per kolektor fold (images of that fold's two training folds only) and one for "
             "severstal (6 tiles of 256x256 from each of the real sample's images that are not among the 16 scored "
             "ones); no synthetic images. Pretraining times are with other benchmark processes on the 2 cores.", "",
             "| pretraining | images | epochs | steps | wall min | training images/s (SimCLR: 2 views each) | loss first -> last (SimCLR: NT-Xent; SimMIM: L1 of hidden pixels) | recipe |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {k} | {i['images']} | {i['epochs']} | {i['steps']} | {i['seconds'] / 60:.1f} | {i['images_per_s']:.1f} | "
              f"{i['first_loss']:.3f} -> {i['last_loss']:.3f} | `{' '.join(i['overrides'])}` |"
              for k, i in sorted(p["pretraining"].items())]
    for part, title in KOLEKTOR_TITLES.items():
        if p.get(part):
            lines += kolektor_table(p, part, title)
            if part == "kolektor_tiled":
                lines += ["", "Reading (why SimCLR collapses here, what SimMIM does): datasets/pretrain.md, section "
                          "\"Defect images\"."]
    if p.get("token_similarity"):
        lines += ["", "How alike the encoder's last-block patch tokens are within one 128x104 tile (part token_similarity: "
                  "mean cosine over pairs of different tokens, first 40 images of the held-out fold; 1 = all tokens the same):",
                  "", "| fold and encoder | mean cosine |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in sorted(p["token_similarity"].items())]
    if p.get("severstal"):
        lines += ["", f"### severstal on the real sample ({len(p['severstal_scored'])} fully-labelled images; recipe of "
                  "benchmarks/severstal_train.py: resnet18 U-Net on synthetic strips, 64x400)", "",
                  f"All-empty answer: Kaggle Dice {p['severstal_empty_dice']:.4f}.", "",
                  "| arm | seeds | real Kaggle Dice | Dice without post-processing | synthetic held-out Dice | real Dice per seed |",
                  "|---|---|---|---|---|---|"]
        for arm in ("scratch", "pretrained"):
            got = sorted((e for e in p["severstal"] if e["arm"] == arm), key=lambda e: e["seed"])
            if got:
                lines.append(f"| {arm} | {','.join(str(e['seed']) for e in got)} | {mean_sd([e['real']['dice'] for e in got])} | "
                             f"{mean_sd([e['real']['dice_raw'] for e in got])} | {mean_sd([e['synthetic_dice'] for e in got])} | "
                             + " / ".join(f"{e['real']['dice']:.4f}" for e in got) + " |")
        lines += ["", "Weights loaded: " + "; ".join(sorted({e["loaded"] for e in p["severstal"] if e["loaded"]}))]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="severstal,kolektor",
                        help="severstal, kolektor, kolektor_tiled, token_similarity (of the cached kolektor_tiled encoders)")
    parser.add_argument("--seeds", default="0", help="fine-tuning seeds")
    parser.add_argument("--pretrain-only", action="store_true",
                        help="only fill the pretraining cache of these folds (so another process finds it), train no head")
    parser.add_argument("--folds", default="0,1,2", help="kolektor folds this process runs")
    parser.add_argument("--epochs", type=int, default=6, help="clip_anomaly epochs (its benchmark's)")
    parser.add_argument("--batch", type=int, default=32, help="pretraining batch")
    parser.add_argument("--kolektor-crop", type=int, default=64)
    parser.add_argument("--kolektor-keep", type=int, default=80)
    parser.add_argument("--kolektor-pretrain-epochs", type=int, default=25)
    parser.add_argument("--arms", default="scratch,pretrained",
                        help="the arms this process runs: scratch, pretrained (SimCLR), simmim (kolektor_tiled only)")
    parser.add_argument("--tiled-epochs", type=int, default=24, help="kolektor_tiled: epochs of the shipped recipe")
    parser.add_argument("--tiled-crop", type=int, default=96, help="kolektor_tiled: pretraining crop")
    parser.add_argument("--tiled-pretrain-epochs", type=int, default=75)
    parser.add_argument("--severstal-crop", type=int, default=64)
    parser.add_argument("--severstal-pretrain-epochs", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pretrain_transfer_defects")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.folds, args.epochs, args.kolektor_pretrain_epochs, args.severstal_pretrain_epochs = "0", 1, 1, 1
        args.tiled_epochs, args.tiled_pretrain_epochs = 1, 1
        args.work = args.work.with_name(args.work.name + "_quick")
    args.fold_list, args.seed_list = ([int(x) for x in text.split(",") if x] for text in (args.folds, args.seeds))
    args.arm_list = args.arms.split(",")
    if args.pretrain_only:
        args.seed_list = []
    json_path, md_path = paths(args)
    payload = {"runs": [], "pretraining": {}}  # this process's results; save() merges them into the file
    if not args.report:
        torch.set_num_threads(1)
        start, started, where = time.perf_counter(), now(), machine()
        for part in args.parts.split(","):
            if part == "severstal":
                run_severstal(args, payload)
            elif part == "token_similarity":
                token_similarity(args, payload)
            else:
                run_kolektor(args, payload, part)
        command = "python benchmarks/pretrain_transfer_defects.py " + " ".join(sys.argv[1:])
        payload["runs"].append({"command": command.strip(), "date": started, "machine": where,
                                "wall_s": round(time.perf_counter() - start, 1)})
        save(payload, args)
    md_path.write_text(markdown(json.loads(json_path.read_text())))
    print(md_path.read_text())


if __name__ == "__main__":
    main()
