"""Where the pretraining gain on the scrap photos is lost: probes on one fold of pretrain_transfer's CV (``--fold``,
default 0), scored on the validation split carved from its training folds (20 %, stratified, seed 0), never on
the test fold.

Backbones come from benchmarks/pretrain_transfer.py's pretraining of that fold (same recipe and cache, so a missing
one is pretrained again), named ``E`` (the full run of E pretraining epochs) or ``E@S`` (its snapshot after S epochs;
S must be among the snapshots that run kept), or ``random`` (seed-0 initialisation, no pretraining).

- ``--linear SIZES``: frozen pooled features (``--features``: the last stage, stages 2-4 or 1-4 concatenated,
  average and maximum pooling side by side, averaged over the photo and its mirror image, stages 2-4 with the
  photo's colour and texture statistics (scrap_cls's model.image_stats), or those statistics alone) at each input size
  (``224+352``: both sizes' features side by side); logistic regression (standardised, C = 0.01 / 0.1 / 1) and
  cosine kNN (k = 1 / 5).
- ``--inner-cv``: with ``--linear``, also a 5-fold CV of the logistic regression on all of the outer fold's training
  photos (about 220, five times the validation split, so one photo is 0.5 points instead of 2.3).
- ``--tag T``: label the rows (shown as ``180 [T]``), e.g. when the fold's pretraining was run again and is not
  the backbone the untagged rows saw; rows of other tags are kept.
- ``--finetune SPEC ...``: scrap_cls fine-tuned on the other 80 %; SPEC = ``variant:backbone:overrides:seed``
  on top of pretrain_transfer's fine-tuning recipe, e.g. ``baseline:180:data.image_size=160:0``; with the overrides
  ``data.folds=5,data.fold=K`` (K = 0-4) scrap_cls validates on its own 5-fold split of the outer fold's training
  photos, and the pooled table takes the five together (about 220 photos scored instead of 44).

    python benchmarks/pretrain_probe.py --backbones random,20@5,60,180@60,180@120,180 --linear 112,160,224
    python benchmarks/pretrain_probe.py --finetune baseline:60::0 baseline:random::0
    python benchmarks/pretrain_probe.py --finetune clfsef:180::0 --test-time none@112,hflip@112,hflip@128
    python benchmarks/pretrain_probe.py --finetune baseline:180/data.color_strength=0.5::0   # another pretraining
    python benchmarks/pretrain_probe.py --finetune probe:180::0 --fold 1   # fold 1's validation photos
    python benchmarks/pretrain_probe.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_env import locked_json_update, machine, now  # noqa: E402
from benchmarks.pretrain_transfer import pretrain_fold  # noqa: E402
from benchmarks.scrap_cls_ablation import recipe  # noqa: E402
from benchmarks.scrap_cls_common import RESULTS  # noqa: E402
from benchmarks.scrap_cls_cv import parse_setting, predictions_at  # noqa: E402
from scrapvision.data.classification import Record, find_records, split_indices  # noqa: E402

JSON, MD = RESULTS / "pretrain_probe.json", RESULTS / "pretrain_probe.md"

#: frozen-feature sets of --linear (indices into tinynet_e's stages 1-4) and how each stage is pooled: ``avg``,
#: ``max`` (average and maximum side by side), ``flip`` (the average over the photo and its mirror image) or
#: ``stats`` (average, then the photo's colour and texture statistics: scrap_cls's model.image_stats) or ``stats+lbp``
#: (those with local binary pattern histograms)
FEATURES = {"last stage": ((3,), "avg"), "stages 2-4": ((1, 2, 3), "avg"), "stages 1-4": ((0, 1, 2, 3), "avg"),
            "stages 2-4 avg+max": ((1, 2, 3), "max"), "stages 2-4 flip-averaged": ((1, 2, 3), "flip"),
            "stages 2-4 + image stats": ((1, 2, 3), "stats"), "image stats alone": ((), "stats"),
            "stages 2-4 + image stats + LBP": ((1, 2, 3), "stats+lbp"), "image stats + LBP alone": ((), "stats+lbp")}


def inner_split(data: Path, fold: int) -> tuple[list[Record], list[Record], list[Record]]:
    """(training photos of the outer fold, its inner train, its inner validation): scrap_cls's own splits."""
    records = find_records(data)
    outer, _ = split_indices([r.label for r in records], seed=0, folds=3, fold=fold)
    photos = [records[i] for i in outer]
    train, val = split_indices([r.label for r in photos], 0.2, 0)
    return photos, [photos[i] for i in train], [photos[i] for i in val]


def backbone_file(name: str, data: Path, work: Path, fold: int) -> str | None:
    """The weights file of ``random`` / ``E`` / ``E@S`` (pretrained on the fold's training photos, cached); a suffix
    ``/KEY=VALUE`` (repeatable) adds a pretraining override, e.g. ``180/data.color_strength=0.5``."""
    if name == "random":
        return None
    name, *pretrain_set = name.split("/")  # 180/data.color_strength=0.5: pretrain_transfer's --pretrain-set
    epochs, _, snap = name.partition("@")
    args = argparse.Namespace(data=data, extra=[], folds=3, crop=112, batch=64, pretrain_epochs=int(epochs),
                              pretrain_set=pretrain_set, work=work, snapshot_list=[int(snap)] if snap else [])
    info = pretrain_fold(fold, args)
    if not snap:
        return info["backbone"]
    if snap not in info["snapshots"]:
        sys.exit(f"backbone {name}: the cached {epochs}-epoch pretraining kept no snapshot after epoch {snap}")
    return info["snapshots"][snap]["file"]


#: C values of --inner-cv's logistic regressions
INNER_CS = (0.01, 0.1, 1.0, 10.0)


def linear_probe(names: list[str], sizes: list[int | str], data: Path, work: Path, fold: int,
                 kinds: tuple[str, ...] = ("last stage", "stages 2-4"), tag: str = "", inner_cv: bool = False) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    from scrapvision.backbones import create_backbone
    from scrapvision.data.classification import LOAD_RATIO, build_transform, load_images, to_tensor
    from scrapvision.models.image_stats import ColourTextureStats
    from scrapvision.models.linear_probe import fit_logistic_probe

    photos, train, val = inner_split(data, fold)
    classes = sorted({r.label for r in photos})

    # kept as scrap_cls keeps them, shorter side LOAD_RATIO x the largest probed size (at least 256, as before),
    # so a probe at 352 px is not upsampled from a smaller copy
    keep = max(256, round(LOAD_RATIO * max(int(px) for size in sizes for px in str(size).split("+"))))

    def decode(records: list[Record]) -> tuple[list[np.ndarray], np.ndarray]:
        images, kept, _ = load_images([r.path for r in records], "skip", keep)
        return images, np.array([classes.index(records[i].label) for i in kept])

    (train_images, y_train), (val_images, y_val) = decode(train), decode(val)

    @torch.no_grad()
    def features(backbone: torch.nn.Module, images: list, size: int, stages: tuple[int, ...], pool: str) -> np.ndarray:
        transform, out = build_transform(size, "none"), []
        stats = ColourTextureStats(size, lbp=pool == "stats+lbp") if pool.startswith("stats") else None
        for i in range(0, len(images), 32):
            x = torch.stack([to_tensor(transform(image=im)["image"]) for im in images[i:i + 32]])
            views = (x, x.flip(3)) if pool == "flip" else (x,)
            pooled = []
            for view in views:
                maps = backbone(view) if stages else []
                pooled.append(torch.cat([maps[s].mean(dim=(2, 3)) for s in stages]
                                        + ([maps[s].amax(dim=(2, 3)) for s in stages] if pool == "max" else [])
                                        + ([stats(view)] if stats is not None else []), 1))
            out.append(torch.stack(pooled).mean(0))
        return torch.cat(out).numpy()

    cache: dict[tuple, np.ndarray] = {}

    def memo(split: str, backbone: torch.nn.Module, images: list, size: int, kind: str) -> np.ndarray:
        if (split, size, kind) not in cache:
            cache[split, size, kind] = features(backbone, images, size, *FEATURES[kind])
        return cache[split, size, kind]

    rows = []
    for name in names:
        weights = backbone_file(name, data, work, fold)
        cache.clear()
        torch.manual_seed(0)
        backbone = create_backbone("tinynet_e", weights=weights, out_indices=(1, 2, 3, 4)).eval()
        for size in sizes:
            for kind in kinds:
                # "224+352": the features of both sizes side by side (each size computed once per feature set)
                a, b = (np.concatenate([memo(split, backbone, images, int(px), kind) for px in str(size).split("+")], 1)
                        for split, images in (("train", train_images), ("val", val_images)))
                scaler = StandardScaler().fit(a)
                scores = {f"logreg C={c}": LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(a), y_train)
                          .score(scaler.transform(b), y_val) for c in (0.01, 0.1, 1.0)}
                unit_a, unit_b = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (a, b))
                scores |= {f"kNN k={k}": KNeighborsClassifier(k, metric="cosine").fit(unit_a, y_train).score(unit_b, y_val)
                           for k in (1, 5)}
                rows.append({"backbone": name, "size": size, "features": kind, **({"fold": fold} if fold else {}),
                             **({"tag": tag} if tag else {}), **{k: round(100 * v, 1) for k, v in scores.items()}})
                if inner_cv:  # 5-fold CV on every training photo of the outer fold (its inner train and validation)
                    probe = fit_logistic_probe(np.concatenate([a, b]), np.concatenate([y_train, y_val]), len(classes),
                                               cs=INNER_CS, folds=5)
                    rows[-1]["inner_cv"] = {f"C={c:g}": round(100 * v, 1) for c, v in probe.cv_accuracy.items()}
                    rows[-1]["inner_cv_photos"] = len(a) + len(b)
                print(rows[-1], flush=True)
    return rows


def finetune(specs: list[str], data: Path, work: Path, test_time: list[str], fold: int, tag: str = "") -> list[dict]:
    """Each spec trained on the inner train split; val top-1 of the last epoch, the best and the last five, and
    of the last epoch's model under each ``test_time`` setting (TTA@SIZE)."""
    from scrapvision.config import load_config
    from scrapvision.heads.scrap_cls import ScrapClsConfig, ScrapClsTask
    from scrapvision.trainer import Trainer

    photos, _, _ = inner_split(data, fold)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pretrain_probe_") as tmp:
        labels = Path(tmp) / f"fold{fold}_train.csv"  # absolute data.csv: scrap_cls reads it with paths under data.root
        labels.write_text("image,class\n" + "".join(f"\"{r.path.relative_to(data)}\",{r.label}\n" for r in photos))
        for spec in specs:
            variant, name, extra, seed = spec.split(":")
            weights = backbone_file(name, data, work, fold)
            overrides = recipe(False, data, variant, tmp, 112, 20, int(seed)) + [f"data.csv={labels}", "train.log_every=1000"]
            overrides += [e for e in extra.split(",") if e] + ([f"model.weights={weights}"] if weights else [])
            start = time.perf_counter()
            run = Path(tmp) / f"run{len(rows)}"
            Trainer(ScrapClsTask(load_config(ScrapClsConfig, overrides=overrides)), run_dir=run).fit()
            acc = [json.loads(line)["val_accuracy"] for line in (run / "metrics.jsonl").read_text().splitlines()
                   if "val_accuracy" in line]
            seconds = round(time.perf_counter() - start)
            state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
            at = {s: round(100 * float(np.mean(p == t)), 1)
                  for s, (t, p) in predictions_at(overrides, state, test_time).items()}
            rows.append({"spec": spec, **({"fold": fold} if fold else {}), **({"tag": tag} if tag else {}), "last": round(100 * acc[-1], 1), "best": round(100 * max(acc), 1),
                         "mean_last5": round(100 * float(np.mean(acc[-5:])), 1), "seconds": seconds,
                         **({"test_time": at} if at else {})})
            print(rows[-1], flush=True)
    return rows


def markdown(payload: dict) -> str:
    lines = ["## Probes: where the pretraining gain is lost (fold 0, validation split of its training folds)", "",
             "Scored on the 44 validation photos carved (20 %, stratified) from fold 0's 222 training photos, never on "
             "the test fold: one photo = 2.3 points; a backbone named `(fold K)` is scored the same way on fold K "
             "(`--fold K`: its pretraining and its own 44 validation photos). Backbones: `E` = the fold's pretraining "
             "of pretrain_transfer.py "
             "with E SimCLR epochs (3 steps of batch 64 each), `E@S` = its snapshot after S epochs (S/E of its cosine "
             "schedule), `E/KEY=VALUE` = that pretraining with an override (e.g. a weaker colour jitter), `random` = no "
             "pretraining.", "",
             "- Commands: " + "; ".join(f"`{r['command']}` ({r['date']}, wall {r['wall_s'] / 60:.1f} min, "
                                       f"{r['machine']})" for r in payload["runs"]),
             *(f"- {note}" for note in payload.get("notes", [])), ""]
    if payload["linear"]:
        keys = [k for k in payload["linear"][0] if k.startswith(("logreg", "kNN"))]
        lines += ["Frozen features, validation top-1 %:", "", "| backbone | px | features | " + " | ".join(keys) + " |",
                  "|---|---|---|" + "---|" * len(keys)]
        lines += [f"| {r['backbone']}{on_fold(r)} | {r['size']} | {r['features']} | "
                  + " | ".join(f"{r[k]:.1f}" for k in keys) + " |" for r in payload["linear"]]
        lines += pooled_linear_table(payload["linear"], keys)
        lines += inner_cv_table([r for r in payload["linear"] if r.get("inner_cv")])
        lines.append("")
    if payload["finetune"]:
        lines += ["scrap_cls fine-tuned (pretrain_transfer's recipe plus the overrides), validation top-1 %:", "",
                  "| variant | backbone | overrides | seed | last epoch | best epoch | mean of last 5 | s |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in payload["finetune"]:
            variant, name, extra, seed = r["spec"].split(":")
            lines.append(f"| {variant} | {name}{on_fold(r)} | {extra.replace(',', ' ') or '-'} | {seed} | "
                         f"{r['last']:.1f} | {r['best']:.1f} | {r['mean_last5']:.1f} | {r['seconds']} |")
        lines += pooled_table(payload["finetune"])
        lines += test_time_table([r for r in payload["finetune"] if r.get("test_time")])
    return "\n".join(lines) + "\n"


def on_fold(row: dict) -> str:
    return (f" (fold {row['fold']})" if row.get("fold") else "") + (f" [{row['tag']}]" if row.get("tag") else "")


def pooled_table(rows: list[dict]) -> list[str]:
    """Recipes scored on more than one fold's validation photos: the mean last-epoch top-1 over folds and seeds
    (3 x 44 photos, so one photo is 0.8 points of the pooled mean instead of 2.3). Specs with ``data.folds=5`` and
    ``data.fold=K`` (scrap_cls's own 5-fold split of the outer fold's training photos instead of the validation split)
    pool over K as over seeds: every training photo is scored once."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        variant, name, extra, _ = r["spec"].split(":")
        extra = ",".join(o for o in extra.split(",") if not o.startswith("data.fold="))  # inner CV folds pool as seeds
        groups.setdefault((variant, name + (f" [{r['tag']}]" if r.get("tag") else ""), extra), []).append(r)
    pooled = {k: g for k, g in groups.items() if len({r.get("fold", 0) for r in g}) > 1}
    if not pooled:
        return []
    lines = ["", "Recipes scored on several folds' validation photos, mean last-epoch top-1 % over folds and seeds:", "",
             "| variant | backbone | overrides | folds | runs | mean | per fold (mean over seeds) |",
             "|---|---|---|---|---|---|---|"]
    for (variant, name, extra), group in pooled.items():
        folds = sorted({r.get("fold", 0) for r in group})
        per = [np.mean([r["last"] for r in group if r.get("fold", 0) == f]) for f in folds]
        lines.append(f"| {variant} | {name} | {extra.replace(',', ' ') or '-'} | {','.join(map(str, folds))} | "
                     f"{len(group)} | **{np.mean(per):.1f}** | {' / '.join(f'{p:.1f}' for p in per)} |")
    return lines


def linear_key(row: dict) -> tuple[str, str, str]:
    """What frozen-feature rows of different folds share: backbone (with its tag), input size, feature set."""
    return row["backbone"] + (f" [{row['tag']}]" if row.get("tag") else ""), str(row["size"]), row["features"]


def pooled_linear_table(rows: list[dict], keys: list[str]) -> list[str]:
    """Frozen-feature probes measured on more than one fold's validation photos: each score's mean over folds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(linear_key(r), []).append(r)
    pooled = {k: g for k, g in groups.items() if len({r.get("fold", 0) for r in g}) > 1}
    if not pooled:
        return []
    lines = ["", "Frozen features probed on several folds' validation photos, mean top-1 % over the folds:", "",
             "| backbone | px | features | folds | " + " | ".join(keys) + " |", "|---|---|---|---|" + "---|" * len(keys)]
    for (name, size, kind), group in pooled.items():
        folds = ",".join(str(f) for f in sorted({r.get("fold", 0) for r in group}))
        lines.append(f"| {name} | {size} | {kind} | {folds} | "
                     + " | ".join(f"{np.mean([r[k] for r in group]):.1f}" for k in keys) + " |")
    return lines


def inner_cv_table(rows: list[dict]) -> list[str]:
    """--inner-cv: logistic regressions scored by 5-fold CV on all of an outer fold's training photos (about 220,
    five times the validation split), per fold and averaged over the folds."""
    if not rows:
        return []
    keys = [f"C={c:g}" for c in INNER_CS]
    lines = ["", "Frozen features, 5-fold CV accuracy % on all training photos of the outer fold (--inner-cv; standardised "
             "logistic regression per C; never the test fold):", "",
             "| backbone | px | features | photos | " + " | ".join(keys) + " |", "|---|---|---|---|" + "---|" * len(keys)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        lines.append(f"| {r['backbone']}{on_fold(r)} | {r['size']} | {r['features']} | {r['inner_cv_photos']} | "
                     + " | ".join(f"{r['inner_cv'][k]:.1f}" for k in keys) + " |")
        groups.setdefault(linear_key(r), []).append(r)
    for (name, size, kind), group in groups.items():
        if len({r.get("fold", 0) for r in group}) > 1:
            lines.append(f"| **mean of folds {','.join(str(r.get('fold', 0)) for r in group)}**: {name} | {size} | "
                         f"{kind} | {sum(r['inner_cv_photos'] for r in group)} | "
                         + " | ".join(f"**{np.mean([r['inner_cv'][k] for r in group]):.1f}**" for k in keys) + " |")
    return lines


def test_time_table(rows: list[dict]) -> list[str]:
    """The last epoch's models scored again under test-time settings (same weights), and the mean per setting."""
    if not rows:
        return []
    settings = list(dict.fromkeys(s for r in rows for s in r["test_time"]))
    lines = ["", "The same last-epoch models under test-time settings TTA@SIZE (scrap_cls `eval.tta`, "
             "`eval.image_size`; none@112 is the plain score), validation top-1 %:", "",
             "| variant | backbone | overrides | seed | " + " | ".join(settings) + " |",
             "|---|---|---|---|" + "---|" * len(settings)]
    for r in rows:
        variant, name, extra, seed = r["spec"].split(":")
        lines.append(f"| {variant} | {name}{on_fold(r)} | {extra.replace(',', ' ') or '-'} | {seed} | "
                     + " | ".join(f"{r['test_time'][s]:.1f}" if s in r["test_time"] else "-" for s in settings) + " |")
    named = [(r["spec"].split(":")[1] + on_fold(r), r) for r in rows]
    for backbone in dict.fromkeys(name for name, _ in named):  # one mean per backbone (and fold)
        group = [r for name, r in named if name == backbone]
        means = [np.mean([r["test_time"][s] for r in group]) if all(s in r["test_time"] for r in group) else np.nan
                 for s in settings]
        lines.append(f"| mean of {len(group)} | {backbone} | | | "
                     + " | ".join("-" if np.isnan(m) else f"**{m:.1f}**" for m in means) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data", type=Path, default=data / "scrap_grades")
    parser.add_argument("--backbones", default="", help="for --linear: random, E or E@S, comma-separated")
    parser.add_argument("--linear", default="", help="input sizes of the frozen-feature probes, e.g. 112,160; "
                        "224+352 puts the features of both sizes side by side")
    parser.add_argument("--features", default="last stage,stages 2-4",
                        help=f"for --linear, comma-separated, of: {', '.join(FEATURES)}")
    parser.add_argument("--tag", default="", help="a label of these rows, shown after the backbone's name (e.g. the "
                        "date of a repeated pretraining, whose backbone is not the earlier one); rows of another tag "
                        "are kept")
    parser.add_argument("--finetune", nargs="*", default=[], metavar="SPEC")
    parser.add_argument("--test-time", default="", help="also score each fine-tuned model under these settings "
                        "TTA@SIZE (scrap_cls eval.tta, eval.image_size), comma-separated, e.g. none@112,hflip@128")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pretrain_transfer")
    parser.add_argument("--fold", type=int, default=0, choices=(0, 1, 2),
                        help="the CV fold whose pretraining and validation photos are probed")
    parser.add_argument("--inner-cv", action="store_true", help="--linear also scores each feature set by 5-fold CV "
                        "of a logistic regression on all the outer fold's training photos (C = "
                        + " / ".join(f"{c:g}" for c in INNER_CS) + ")")
    parser.add_argument("--report", action="store_true", help="only rebuild the markdown from the JSON file")
    args = parser.parse_args()
    payload = json.loads(JSON.read_text()) if JSON.exists() else {"runs": [], "linear": [], "finetune": []}
    if not args.report:
        torch.set_num_threads(1)
        start, started, where = time.perf_counter(), now(), machine()
        names = [n for n in args.backbones.split(",") if n]
        sizes = [int(s) if s.isdigit() else s for s in args.linear.split(",") if s]
        kinds = tuple(k.strip() for k in args.features.split(",") if k.strip())
        unknown = [k for k in kinds if k not in FEATURES]
        if unknown:
            sys.exit(f"--features: unknown {unknown}; known: {', '.join(FEATURES)}")
        linear = (linear_probe(names, sizes, args.data, args.work, args.fold, kinds, args.tag, args.inner_cv)
                  if names and sizes else [])
        settings = [t for t in args.test_time.split(",") if t]
        for setting in settings:
            parse_setting(setting)
        tuned = finetune(args.finetune, args.data, args.work, settings, args.fold, args.tag)
        same = {(r["backbone"], r["size"], r["features"], args.fold, args.tag) for r in linear}
        run = {"command": "python benchmarks/pretrain_probe.py " + shlex.join(sys.argv[1:]), "date": started,
               "wall_s": round(time.perf_counter() - start, 1), "machine": where}

        def merge(payload: dict) -> None:  # under the lock: probes side by side keep each other's rows
            payload["linear"] = [r for r in payload["linear"]
                                 if (r["backbone"], r["size"], r["features"], r.get("fold", 0), r.get("tag", ""))
                                 not in same] + linear
            payload["finetune"] = [r for r in payload["finetune"] if (r["spec"], r.get("fold", 0), r.get("tag", ""))
                                   not in {(s, args.fold, args.tag) for s in args.finetune}] + tuned
            payload["runs"].append(run)

        payload = locked_json_update(JSON, merge, lambda: {"runs": [], "linear": [], "finetune": []})
    MD.write_text(markdown(payload))
    print(MD.read_text())


if __name__ == "__main__":
    main()
