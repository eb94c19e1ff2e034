"""canet on the physics-grounded synthetic copper-granule benchmark: CANet vs baselines, plus the paper's sweeps.

    python benchmarks/canet_synthetic.py [--quick] [--threads 1] [--only main,data_canet,lambda,...]
    python benchmarks/canet_synthetic.py --report     # rebuild markdown and plot from the JSON

Every model is trained with the one Trainer from ``tasks/canet.yaml`` (the CPU recipe) plus the sizes below,
selected on the val split, and scored on held-out test bags rendered with 32 photos each. Rows:

- CANet (the head), the paper's direct-regression baseline (``model.kind=direct``), the trivial
  "copper area fraction of the true masks = content" estimate, and an *oracle* reference: the true visible
  area of every material in the same photos with densities fitted on the train split (non-negative least
  squares). The oracle is the floor that the N-photo sampling noise leaves to any area-based method.
- ``oracle``: only the references (trivial estimate, oracle and its fitted densities), without training.
- ``direct_lr``: the direct baseline again at the learning rate the recipe had before it was tuned on CANet.
- ``paper_loss``, ``seed1_paper_loss``: CANet with the paper's loss (``lambda_p = 0``), which isolates the
  recipe's per-patch term (training seeds 0 and 1).
- ``seed1_canet``, ``seed1_direct_lr``: CANet and the ``direct_lr`` baseline again with training seed 1.
- ``classes4``: CANet with 4 latent classes (below the true 10) at the main schedule.
- ``ema``, ``seed1_ema`` (issue 22's checkpoint choice): CANet validated and saved as an exponential moving
  average of its weights (``train.ema_decay=0.999``), training seeds 0 and 1, also scored at every test N.
- ``ema_lm8``, ``ema_lm40`` (and ``seed1_`` of each): the ``ema`` runs with the content term weighted 10x and
  50x (``loss.lambda_m`` 8 and 40 instead of 0.8), for the model's own share of the error (issue 22).
- ``ema_d6``, ``seed1_ema_d6``: the ``ema`` runs with a ViT twice as deep (``model.vit_depth=6``, all the blocks
  of timm's ``test_vit``; the recipe keeps 3), for the model's own share of the error (issue 22).
- ``ema_li0.02``, ``ema_li0.1`` (and ``seed1_`` of each): the ``ema`` runs plus the information-maximisation term
  over the impurity classes (``loss.lambda_i``), for the model's own share of the error (issue 22).
- ``ema_r192``, ``seed1_ema_r192``: the ``ema`` runs on photos rendered and read at 192 px with 12-px patches (the
  same 16 x 16 tokens, four times the pixels per token), for the model's own share of the error (issue 22).
- Data efficiency (the paper's argument for CANet): CANet and direct regression trained on 40 to 640
  content-labelled bags with the same number of optimizer steps (parts ``data_canet``, ``data_direct``, and
  ``data_direct_lr`` for the baseline at the ``direct_lr`` learning rate).
- ``mask_only`` (issue 22): CANet trained on K assayed bags plus the other 640 - K bags with masks only
  (``data.assayed=K``), against CANet and direct regression (at the ``direct_lr`` learning rate) on the K
  assayed bags alone, K in {40, 80}, with the data sweep's 1600 steps; it writes its own
  ``canet_mask_only.json`` / ``.csv`` and the ``canet_mask_only`` section of ``canet.md``.
- Sweeps: lambda_a in {0, 0.1, 0.2, 0.5, 1}; I+1 latent classes below / at / above the true 10; N photos
  per sample in {2, 4, 8, 16, 32} (trained and tested at N with the same photos-per-step budget), plus the
  main model tested at every N.

Writes ``benchmarks/results/canet_synthetic.json``, ``canet_sweep_*.csv``, ``canet_sweep_*.png`` and the
``canet_synthetic`` section of ``benchmarks/results/canet.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.optimize import nnls
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import machine, write_section  # noqa: E402
from canet_report import (  # noqa: E402
    DATA_KINDS,
    DIRECT_CHECK_LR,
    HEADER,
    LONG_DATA_KINDS,
    LONG_DATA_PARTS,
    LONG_DATA_SEEDS,
    MARKDOWN,
    MASK_ONLY_KINDS,
    data_label,
    long_data_key,
    long_data_runs,
    main_steps,
    mask_only_markdown,
    run_value,
    synthetic_markdown,
)

from scrapvision.checkpoint import load_checkpoint  # noqa: E402
from scrapvision.config import load_config, to_dict  # noqa: E402
from scrapvision.data.copper_samples import CopperSetDataset, SampleStore  # noqa: E402
from scrapvision.data.synthetic.copper_granules import materials, render_split  # noqa: E402
from scrapvision.heads.canet import CanetConfig, CanetTask, content_metrics  # noqa: E402
from scrapvision.trainer import Trainer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
# test bags of another generator seed: never scored while the recipe (learning rate, resolution, density range)
# was chosen, so they show whether choices made while looking at the seed-0 test split carried over
FRESH_SEED = 1000
# data-efficiency sweep: part ``data_<kind>`` trains these on 40..640 bags (direct_lr: the baseline at the
# learning rate that suits it better, so that CANet's lead is not the baseline's starved schedule)
DATA_OVERRIDES = {"canet": [], "direct": ["model.kind=direct"],
                  "direct_lr": ["model.kind=direct", f"optim.lr={DIRECT_CHECK_LR}"]}
# training seeds 0 and 1 of a variant: part prefix, report-key suffix, run-name suffix, overrides
SEED_VARIANTS = (("", "", "", []), ("seed1_", "_seed1", " seed=1", ["train.seed=1"]))
# single runs at the main schedule, scored on both test sets: part -> (report key, run name, overrides)
MAIN_VARIANTS = {
    # the recipe adds a per-patch copper term (lambda_p) that is not in the paper: these rows are the paper's loss
    "paper_loss": ("canet_paper_loss", "canet lambda_p=0", ["loss.lambda_p=0"]),
    "seed1_paper_loss": ("canet_paper_loss_seed1", "canet lambda_p=0 seed=1", ["loss.lambda_p=0", "train.seed=1"]),
    # the 1600-step classes sweep scored 4 latent classes best: this checks it at the main schedule
    "classes4": ("canet_classes4", "canet classes=4", ["model.num_classes=4"]),
    # a second training seed (same bags, other initialisation and batch order) of CANet and the better baseline
    "seed1_canet": ("canet_seed1", "canet seed=1", ["train.seed=1"]),
    "seed1_direct_lr": ("direct_lr_seed1", f"direct lr={DIRECT_CHECK_LR} seed=1",
                        ["model.kind=direct", f"optim.lr={DIRECT_CHECK_LR}", "train.seed=1"]),
    # issue 22's checkpoint choice: validate and keep an exponential moving average of the weights (8000 steps,
    # so a window of about 1000 steps), two training seeds
    "ema": ("canet_ema", "canet ema=0.999", ["train.ema_decay=0.999"]),
    "seed1_ema": ("canet_ema_seed1", "canet ema=0.999 seed=1", ["train.ema_decay=0.999", "train.seed=1"]),
    # issue 22's model share: only the content term teaches which impurities are heavy, yet the per-patch term
    # dominates the loss (a 3-epoch probe of the recipe: 0.8 x content MSE 0.005 against patch MSE 0.04, about a
    # tenth); these weigh content 10x and 50x (the weight average kept, so that best-on-val is not a lucky epoch)
    **{f"{prefix}ema_lm{w}": (f"canet_ema_lm{w}{suffix}", f"canet ema=0.999 lambda_m={w}{name}",
                              ["train.ema_decay=0.999", f"loss.lambda_m={w}", *seed])
       for w in (8, 40)
       for prefix, suffix, name, seed in SEED_VARIANTS},
    # issue 22's model share: the content-weight runs left it at 1.2 pp and a refit of the densities did not move
    # it, so the patch features are what is short; these run the ``ema`` recipe with all 6 blocks of test_vit
    # (the recipe keeps 3), training seeds 0 and 1
    **{f"{prefix}ema_d6": (f"canet_ema_d6{suffix}", f"canet ema=0.999 depth=6{name}",
                           ["train.ema_decay=0.999", "model.vit_depth=6", *seed])
       for prefix, suffix, name, seed in SEED_VARIANTS},
    # issue 22's model share: a linear probe of the depth-6 features tells the materials apart, yet the latent
    # classes lump them by density (scratch probe, closing note of 2026-12-04); these add the information-
    # maximisation term over the impurity classes (loss.lambda_i) to the ``ema`` recipe, two weights, seed 0 first
    **{f"{prefix}ema_li{w}": (f"canet_ema_li{w}{suffix}", f"canet ema=0.999 lambda_i={w}{name}",
                              ["train.ema_decay=0.999", f"loss.lambda_i={w}", *seed])
       for w in ("0.02", "0.1")
       for prefix, suffix, name, seed in SEED_VARIANTS},
    # issue 22's MAE goal: at the main schedule's 8000 steps, 40 / 80 / 640 assayed bags gave 3.43 / 2.87 / 1.86 pp
    # (few-labels table); these ask whether twice the assays close the rest of the gap: 1280 bags (the first 640 are
    # the usual ones) for 50 epochs and half the warmup epochs, the same optimizer and warmup steps, the weight average on
    **{f"{prefix}ema_b1280": (f"canet_ema_b1280{suffix}", f"canet ema=0.999 bags=1280{name}",
                              ["train.ema_decay=0.999", "data.synthetic_train=1280", "train.epochs=50",
                               "optim.warmup_epochs=0.5", *seed])
       for prefix, suffix, name, seed in SEED_VARIANTS},
    # issue 22's model share: a neck trained on true per-patch materials over the frozen features of ``ema`` did
    # worse than CANet's own (scratch, closing note of 2026-12-04), so the 6-px patches hold too little texture;
    # these render and read the photos at twice the resolution with 12-px patches: the same 16 x 16 tokens, so
    # the ViT costs the same, and each token sees four times the pixels
    **{f"{prefix}ema_r192": (f"canet_ema_r192{suffix}", f"canet ema=0.999 res=192{name}",
                             ["train.ema_decay=0.999", "data.synthetic_render_size=192", "model.img_size=192",
                              "model.patch_size=12", *seed])
       for prefix, suffix, name, seed in SEED_VARIANTS},
}
# the sizes each group of parts is trained with -> (parts, report keys they write): a change of those sizes drops
# only that group's rows from the JSON, so the other parts need not rerun
SCHEDULES = {("epochs",): (("main", "direct_lr", *MAIN_VARIANTS),
                           ("canet", "direct", "direct_lr", *(key for key, _, _ in MAIN_VARIANTS.values()))),
             ("sweep_train", "sweep_epochs"): (("lambda", "classes", "n"),
                                               ("sweep_lambda_a", "sweep_classes", "sweep_N")),
             ("epochs", "long_data_bags"): (LONG_DATA_PARTS, LONG_DATA_PARTS)}
# every part, in the order a bare run does them ("oracle" alone redoes just the references that "main" writes)
PARTS = ("main", "direct_lr", *MAIN_VARIANTS, *(f"data_{k}" for k in DATA_KINDS),
         *LONG_DATA_PARTS, "lambda", "classes", "n", "mask_only")
# the paper's sweeps: report key -> (CSV column, plot title)
SWEEPS = {"sweep_lambda_a": ("lambda_a", "area-loss weight lambda_a"),
          "sweep_classes": ("num_classes", "latent classes I+1 (true: 10)"),
          "sweep_N": ("N", "photos per sample N")}
PAPER = {"canet_real_mae_pp": 2.87, "direct_real_mae_pp": 20.63}
# main runs (CANet, direct regression) get a longer schedule than the 13 sweep runs, which only show trends; at 50
# epochs (4000 steps) the val error of CANet was still falling where the cosine schedule ended. The sweeps get
# 1600 steps (320 bags x 40 epochs / batch 8), the data sweep's budget; at 400 steps their spread was noise.
FULL = {"train": 640, "val": 32, "test": 100, "stirs": 32, "epochs": 100, "sweep_train": 320, "sweep_epochs": 40,
        "data_bags": [40, 80, 160, 320, 640], "data_steps": 1600, "long_data_bags": [40, 80], "mask_only_bags": [40, 80]}
QUICK = {"train": 16, "val": 4, "test": 8, "stirs": 32, "epochs": 1, "sweep_train": 16, "sweep_epochs": 1,
         "data_bags": [4, 16], "data_steps": 4, "long_data_bags": [4], "mask_only_bags": [4]}


def base_overrides(size: dict, out_dir: Path) -> list[str]:
    return [f"data.synthetic_train={size['train']}", f"data.synthetic_val={size['val']}",
            f"data.synthetic_stirs={size['stirs']}", f"train.epochs={size['epochs']}",
            f"train.out_dir={out_dir}", "train.log_every=100000", "train.device=cpu"]


def test_split(task: CanetTask, count: int, seed: int | None = None):
    d = task.cfg.data
    return render_split(task._spec(), d.synthetic_seed if seed is None else seed, "test", count, task.cfg.model.img_size)


def split_loader(split, n: int) -> DataLoader:
    """The bags of a rendered split in order, each as its first ``n`` photos (no augmentation)."""
    store = SampleStore(list(split.images), list(split.masks), list(split.areas), list(split.contents))
    return DataLoader(CopperSetDataset(store, n, train=False), batch_size=max(1, 64 // n))


def score(task: CanetTask, model: torch.nn.Module, split, n: int) -> dict[str, float]:
    return task.evaluate(model.eval(), split_loader(split, n))


def train_and_score(name: str, overrides: list[str], size: dict, out: Path, n_test: tuple[int, ...] = (),
                    fresh: bool = False) -> dict:
    """Train, reload the best-on-val checkpoint and score it on the test bags (and on the fresh-seed bags
    when ``fresh``: the main rows, not the sweeps)."""
    cfg = load_config(CanetConfig, REPO / "tasks" / "canet.yaml", base_overrides(size, out) + overrides)
    task = CanetTask(cfg)
    start = time.time()
    shutil.rmtree(out / name, ignore_errors=True)  # a scratch folder: the Trainer refuses to train over a run
    result = Trainer(task, run_dir=out / name).fit()
    wall = time.time() - start
    model = task.build_model()
    model.load_state_dict(load_checkpoint(result.best_path)["model"])
    split = test_split(task, size["test"])
    n = cfg.data.images_per_sample
    row = {"run": name, "overrides": overrides, "train_wall_s": round(wall, 1), "N": n,
           "val_best_mae_pp": round(float(result.best_metric), 3), "test": score(task, model, split, n)}
    if fresh:
        row["test_fresh"] = score(task, model, test_split(task, size["test"], FRESH_SEED), n)
    if hasattr(model, "impurity_densities"):
        row["learnt_impurity_densities"] = [round(float(v), 3) for v in model.impurity_densities().detach().view(-1)]
    if n_test:
        row["test_by_N"] = {str(k): score(task, model, split, k) for k in n_test}  # str: the keys JSON keeps
    print(f"[{name}] wall {wall:.0f}s test MAE {row['test']['content_mae_pp']:.2f} pp", flush=True)
    return row


def visible_areas(split, n: int, pooled: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per bag, the copper share and the other shares (impurities, then tray) of the first ``n`` photos;
    ``pooled`` sums the others into one column: all that the copper area alone can tell."""
    props = np.stack([m[:n].mean(0) for m in split.material_areas])  # columns: tray, copper, impurities
    others = np.concatenate([props[:, 2:], props[:, :1]], 1)
    return props[:, 1], others.sum(1, keepdims=True) if pooled else others


def area_content(copper: np.ndarray, other_mass: np.ndarray, rho: float) -> np.ndarray:
    """Copper mass fraction from the copper area and the mass per unit area of all that is not copper."""
    return rho * copper / (rho * copper + other_mass)


def fit_densities(copper: np.ndarray, others: np.ndarray, contents: np.ndarray, rho: float) -> np.ndarray:
    """Mass per unit of visible area of each column of ``others``, by non-negative least squares:
    content = rho * copper / (rho * copper + others @ densities), rearranged to be linear."""
    return nnls(others, rho * copper * (1 - contents) / contents)[0]


def fit_oracle_densities(train, n: int, rho: float, pooled: bool = False) -> np.ndarray:
    """The oracle's densities: :func:`fit_densities` on the true visible areas of the train bags."""
    return fit_densities(*visible_areas(train, n, pooled), np.asarray(train.contents), rho)


def oracle_contents(split, n: int, densities: np.ndarray, rho: float, pooled: bool = False) -> np.ndarray:
    """Each bag's content from the true visible areas of its first ``n`` photos and the fitted densities."""
    copper, others = visible_areas(split, n, pooled)
    return area_content(copper, others @ densities, rho)


def oracle_and_trivial(task: CanetTask, size: dict, ns: tuple[int, ...]) -> dict:
    """References from the true areas, no model: the oracle (every material's area x NNLS densities from the
    train split), copper area alone (one fitted density for all that is not copper) and area as content."""
    d, rho = task.cfg.data, task.cfg.model.copper_density
    train = render_split(task._spec(), d.synthetic_seed, "train", size["train"], task.cfg.model.img_size)
    test = test_split(task, size["test"])
    fresh = test_split(task, size["test"], FRESH_SEED)
    out = {}

    def reference(split, n: int, densities: np.ndarray, pooled: bool = False) -> dict:
        areas = np.stack([a[:n] for a in split.areas])
        return content_metrics(np.asarray(split.contents), oracle_contents(split, n, densities, rho, pooled),
                               areas, None)

    for n in ns:
        densities = fit_oracle_densities(train, n, rho)
        pooled = fit_oracle_densities(train, n, rho, pooled=True)
        areas = np.stack([a[:n] for a in test.areas])
        out[n] = {"oracle": reference(test, n, densities),
                  "copper_only": reference(test, n, pooled, pooled=True),
                  "trivial": content_metrics(np.asarray(test.contents), areas.mean(1), areas, None)}
        if n == task.cfg.data.images_per_sample:
            names = [m.name for m in materials(d.synthetic_impurity_types)][1:] + ["tray"]
            out[n]["oracle_densities"] = {k: round(float(v), 3) for k, v in zip(names, densities)}
            out[n]["copper_only_density"] = round(float(pooled[0]), 3)
            out[n]["oracle_fresh"] = reference(fresh, n, densities)
            out[n]["copper_only_fresh"] = reference(fresh, n, pooled, pooled=True)
    return out


def n_sweep_overrides(n: int, base_epochs: int, photos_per_step: int = 32, base_batch: int = 8) -> list[str]:
    """Train at N photos per bag with 32 photos per step (32 / N bags per step) and the same number of
    optimizer steps for every N (epochs scaled with the batch), so every point of the sweep costs the same."""
    batch = max(1, photos_per_step // n)
    epochs = max(1, round(base_epochs * batch / base_batch))
    return [f"data.images_per_sample={n}", f"train.batch_size={batch}", f"train.epochs={epochs}"]


def data_sweep_overrides(bags: int, steps: int, batch: int = 8) -> list[str]:
    """Train on ``bags`` labelled bags for about ``steps`` optimizer steps whatever the set size, so that the
    sweep compares how much the models learn from the labels, not how long they train."""
    return [f"data.synthetic_train={bags}", f"train.epochs={max(1, round(steps * batch / bags))}"]


def long_data_overrides(bags: int, size: dict, recipe: CanetConfig) -> list[str]:
    """Train on ``bags`` labelled bags with the main runs' optimizer steps, warmup steps and number of
    evaluations (for checkpoint choice), so that only the number of content labels differs from them."""
    scale = size["train"] / bags
    return [f"data.synthetic_train={bags}", f"train.epochs={round(size['epochs'] * scale)}",
            f"optim.warmup_epochs={recipe.optim.warmup_epochs * scale:g}",
            f"train.eval_every={max(1, round(recipe.train.eval_every * scale))}"]


def mask_only_overrides(kind: str, bags: int, size: dict, recipe: CanetConfig) -> list[str]:
    """The data sweep's runs on ``bags`` assayed bags alone; ``mask_only``: the same bags assayed among all the
    train bags. Its epoch is every assayed bag once plus as many mask-only draws, twice an alone epoch: half
    the epochs and half the warmup epochs give the same optimizer steps and warmup steps."""
    if kind != "mask_only":
        return DATA_OVERRIDES[kind] + data_sweep_overrides(bags, size["data_steps"])
    epochs = max(1, round(size["data_steps"] * recipe.train.batch_size / (2 * bags)))
    return [f"data.synthetic_train={size['train']}", f"data.assayed={bags}", f"train.epochs={epochs}",
            f"optim.warmup_epochs={recipe.optim.warmup_epochs / 2:g}"]


def mask_only_part(size: dict, out: Path, recipe: CanetConfig, quick: bool, run: dict, seeds: Sequence[int] = (0,),
                   bags_only: Sequence[int] | None = None) -> None:
    """Part ``mask_only``: its JSON, CSV and markdown section are rewritten after every run, so the runs that
    finished are kept if the process is stopped; rows of an earlier process with the same sizes are kept.
    Training seed 0 is the row ``KIND assayed=K``, another seed S the row ``KIND assayed=K seed=S``."""
    suffix = "_quick" if quick else ""
    path = RESULTS / f"canet_mask_only{suffix}.json"
    sizes = {k: size[k] for k in ("train", "val", "test", "stirs", "data_steps", "mask_only_bags")}
    report = {"sizes": sizes, "fresh_seed": FRESH_SEED, "recipe": to_dict(recipe), "suffix": suffix, "rows": {},
              "runs": []}
    report = recorded_mask_only(path, report)
    report["runs"].append(run)
    for seed in seeds:
        for bags in size["mask_only_bags"]:
            if bags_only is not None and bags not in bags_only:
                continue  # a row another process records (--bags)
            for kind, _ in MASK_ONLY_KINDS:
                name = f"{kind} assayed={bags}" + (f" seed={seed}" if seed else "")
                overrides = mask_only_overrides(kind, bags, size, recipe) + ([f"train.seed={seed}"] if seed else [])
                row = train_and_score(name, overrides, size, out, fresh=True)
                report["rows"][name] = {**row, "assayed": bags, "seed": seed,
                                        "mask_only": size["train"] - bags if kind == "mask_only" else 0}
                write_mask_only(report, path, suffix, quick)


def recorded_mask_only(path: Path, report: dict) -> dict:
    """The recorded mask-only report to add rows to (another seed, another process), when its sizes are these
    and its recipe agrees wherever both have a key; otherwise ``report``, which starts the record over."""
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("sizes") == report["sizes"] and same_recipe(old.get("recipe", {}), report["recipe"]):
            return {**old, "recipe": report["recipe"]}
    return report


def write_mask_only(report: dict, path: Path, suffix: str, quick: bool) -> None:
    """The mask-only part's JSON, CSV and markdown section, from every row recorded so far."""
    path.write_text(json.dumps(report, indent=1))
    pd.DataFrame([{"assayed": r["assayed"], "mask_only": r["mask_only"], "model": n.split(" ")[0],
                   "seed": r.get("seed", 0), "content_mae_pp": r["test"]["content_mae_pp"],
                   "content_mae_pp_fresh": r["test_fresh"]["content_mae_pp"],
                   "area_mae_pp": r["test"].get("area_mae_pp", float("nan")), "train_wall_s": r["train_wall_s"]}
                  for n, r in report["rows"].items()]).to_csv(RESULTS / f"canet_mask_only{suffix}.csv", index=False)
    write_section(MARKDOWN, "canet_mask_only", mask_only_markdown(report), quick=quick, header=HEADER)


def sweep_table(rows: list[dict], key: str, values: list) -> pd.DataFrame:
    return pd.DataFrame([{key: v, "content_mae_pp": r["test"]["content_mae_pp"],
                          "content_rmse_pp": r["test"]["content_rmse_pp"], "content_r2": r["test"]["content_r2"],
                          "area_mae_pp": r["test"].get("area_mae_pp", float("nan")),
                          "train_wall_s": r["train_wall_s"]} for v, r in zip(values, rows)])


@contextmanager
def mae_figure(path: Path, xlabel: str, title: str) -> Iterator[Any]:
    """One small MAE-vs-setting figure: yields the axes, then labels, saves and closes it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    yield ax
    ax.set_xlabel(xlabel)
    ax.set_ylabel("copper content MAE (pp)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(frame: pd.DataFrame, key: str, path: Path, title: str, extra: pd.DataFrame | None = None) -> None:
    with mae_figure(path, key, title) as ax:
        ax.plot(frame[key].astype(str), frame["content_mae_pp"], "o-", label="sweep run trained and tested at this value")
        if extra is not None:
            for column, style, label in (("canet_tested_at_N", "s--", "main CANet (trained at N=4) tested at N"),
                                         ("oracle", "^:", "oracle: true areas x fitted densities")):
                ax.plot(extra[key].astype(str), extra[column], style, label=label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a loaded CPU)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help="comma-separated parts to run (separate processes can run different parts; results "
                             f"merge): {', '.join(PARTS)}, oracle")
    parser.add_argument("--seeds", default="0",
                        help="part mask_only: comma-separated training seeds (seed 0's rows are the recorded ones)")
    parser.add_argument("--bags", default="",
                        help="part mask_only: only these assayed-bag counts (comma-separated, of 40,80); default all")
    parser.add_argument("--report", action="store_true",
                        help="rebuild the markdown and the data-efficiency plot from the JSON, training nothing "
                             "(with --only mask_only: that part's section)")
    args = parser.parse_args()
    if args.report:
        suffix = "_quick" if args.quick else ""
        if args.only == "mask_only":  # that section alone, from its own JSON
            report = json.loads((RESULTS / f"canet_mask_only{suffix}.json").read_text())
            write_section(MARKDOWN, "canet_mask_only", mask_only_markdown(report), quick=args.quick, header=HEADER)
            return
        report = json.loads((RESULTS / f"canet_synthetic{suffix}.json").read_text())
        sweep_outputs(report, suffix)
        if not args.quick:
            write_section(MARKDOWN, "canet_synthetic", synthetic_markdown(report), header=HEADER)
        return
    torch.set_num_threads(args.threads)
    size = QUICK if args.quick else FULL
    parts = set(args.only.split(","))
    if unknown := sorted(parts - {*PARTS, "oracle"}):
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}, oracle")
    suffix = "_quick" if args.quick else ""
    out = REPO / "runs" / f"bench_canet{suffix}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), time.time()
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],  # the code that runs
                            capture_output=True, text=True).stdout.strip()
    ns = (2, 4, 8, 16, 32)
    host = machine()  # before training: the load at start
    recipe = load_config(CanetConfig, REPO / "tasks" / "canet.yaml")
    if args.bags and (unknown := sorted({int(b) for b in args.bags.split(",")} - set(size["mask_only_bags"]))):
        parser.error(f"--bags: {unknown} not among the mask-only sizes {size['mask_only_bags']}")
    if "mask_only" in parts:  # its own JSON and section: the other parts' records stay as they are
        mask_only_part(size, out, recipe, args.quick, {"command": "python " + " ".join(sys.argv), "started": started,
                                                       "commit": commit, "machine": host},
                       [int(seed) for seed in args.seeds.split(",")],
                       [int(b) for b in args.bags.split(",")] if args.bags else None)
        parts.discard("mask_only")
        if not parts:
            return
    report: dict = {"sizes": size, "paper": PAPER, "fresh_seed": FRESH_SEED,
                    "recipe": {"model": to_dict(recipe.model), "loss": to_dict(recipe.loss), "optim": to_dict(recipe.optim),
                               "render_size": recipe.data.synthetic_render_size, "batch_size": recipe.train.batch_size}}
    sweep = dict(size, train=size["sweep_train"], epochs=size["sweep_epochs"])
    if "main" in parts:
        report["canet"] = train_and_score("canet", [], size, out, n_test=ns, fresh=True)
        report["direct"] = train_and_score("direct", ["model.kind=direct"], size, out, fresh=True)
    if "main" in parts or "oracle" in parts:
        task = CanetTask(load_config(CanetConfig, REPO / "tasks" / "canet.yaml", base_overrides(size, out)))
        report["references"] = {str(k): v for k, v in oracle_and_trivial(task, size, ns).items()}
    if "direct_lr" in parts:
        # the recipe's learning rate was tuned on CANet; this row checks the baseline is not starved by it
        report["direct_lr"] = train_and_score(f"direct lr={DIRECT_CHECK_LR}", ["model.kind=direct",
                                              f"optim.lr={DIRECT_CHECK_LR}"], size, out, fresh=True)
    for part, (key, name, overrides) in MAIN_VARIANTS.items():
        if part in parts:
            report[key] = train_and_score(name, overrides, size, out, n_test=ns, fresh=True)
    for kind in DATA_KINDS:
        if f"data_{kind}" in parts:
            report[f"sweep_data_{kind}"] = [
                train_and_score(f"{kind} bags={b}", DATA_OVERRIDES[kind] + data_sweep_overrides(b, size["data_steps"]),
                                size, out)
                for b in size["data_bags"]]
    for seed in LONG_DATA_SEEDS:
        for kind in LONG_DATA_KINDS:
            if (key := long_data_key(kind, seed)) in parts:
                seeded = [f"train.seed={seed}"] if seed else []
                report[key] = [train_and_score(f"{kind}{f' seed={seed}' if seed else ''} bags={b}",  # bags last: run_value
                                               DATA_OVERRIDES[kind] + long_data_overrides(b, size, recipe) + seeded,
                                               size, out, fresh=True)
                               for b in size["long_data_bags"]]
    if "lambda" in parts:
        # the paper's loss (no per-patch term), so that the area term's weight is what changes
        report["sweep_lambda_a"] = [train_and_score(f"lambda_a={v}", [f"loss.lambda_a={v}", "loss.lambda_p=0"], sweep, out)
                                    for v in (0.0, 0.1, 0.2, 0.5, 1.0)]
    if "classes" in parts:  # generator: copper + 9 impurity types = 10
        report["sweep_classes"] = [train_and_score(f"classes={v}", [f"model.num_classes={v}"], sweep, out)
                                   for v in (4, 10, 16)]
    if "n" in parts:
        report["sweep_N"] = [train_and_score(f"N={n}", n_sweep_overrides(n, size["sweep_epochs"]), sweep, out) for n in ns]
    report["runs"] = [{"command": "python " + " ".join(sys.argv), "parts": sorted(parts), "started": started,
                       "wall_s": round(time.time() - t0, 1), "commit": commit, "machine": host}]
    path = RESULTS / f"canet_synthetic{suffix}.json"
    report = merge_reports(path, report)
    path.write_text(json.dumps(report, indent=1))
    sweep_outputs(report, suffix)  # after the merge: from every part's rows, whichever process ran them
    if not args.quick:
        write_section(MARKDOWN, "canet_synthetic", synthetic_markdown(report), header=HEADER)
    print(f"wrote {path} in {time.time() - t0:.0f}s")


def sweep_outputs(report: dict, suffix: str) -> None:
    """CSV and plot of every sweep in the report (the N plot adds the main model and the oracle at each N)."""
    for key, (column, title) in SWEEPS.items():
        if not (rows := report.get(key)):
            continue
        frame, extra = sweep_table(rows, column, [run_value(r) for r in rows]), None
        if key == "sweep_N" and "canet" in report:
            ns = frame["N"].tolist()
            extra = pd.DataFrame({"N": ns,
                                  "canet_tested_at_N": [report["canet"]["test_by_N"][str(n)]["content_mae_pp"] for n in ns],
                                  "oracle": [report["references"][str(n)]["oracle"]["content_mae_pp"] for n in ns]})
            frame = frame.merge(extra, on="N")
        frame.to_csv(RESULTS / f"canet_{key}{suffix}.csv", index=False)
        plot(frame, column, RESULTS / f"canet_{key}{suffix}.png", title, extra)
    if any(report.get(f"sweep_data_{kind}") for kind in DATA_KINDS) or any(report.get(k) for k in LONG_DATA_PARTS):
        data_sweep_outputs(report, suffix)


def data_sweep_outputs(report: dict, suffix: str) -> None:
    """CSV and plot of content MAE against the number of labelled training bags, one line per model and
    budget: the short data sweep, and the few-label runs at the main schedule (ending in the main runs)."""
    s, long_steps = report["sizes"], main_steps(report)
    frames = [sweep_table(rows, "train_bags", [run_value(r) for r in rows]).assign(model=kind, steps=s["data_steps"],
                                                                                  seed=0)
              for kind in DATA_KINDS if (rows := report.get(f"sweep_data_{kind}"))]
    frames += [sweep_table([run], "train_bags", [bags]).assign(model=kind, steps=long_steps, seed=seed)
               for bags, models in sorted(long_data_runs(report).items())
               for kind, runs in models.items() for seed, run in runs.items()]
    frame = pd.concat(frames, ignore_index=True)
    frame.to_csv(RESULTS / f"canet_sweep_data{suffix}.csv", index=False)
    frame = frame.groupby(["steps", "model", "train_bags"], sort=False, as_index=False)["content_mae_pp"].mean()
    ticks = sorted(frame["train_bags"].unique())
    colours = dict(zip(DATA_KINDS, ("C0", "C1", "C2")))
    with mae_figure(RESULTS / f"canet_sweep_data{suffix}.png", "content-labelled training bags",
                    "content labels against error") as ax:
        for (steps, kind), part in frame.groupby(["steps", "model"], sort=False):
            key = "long_data" if steps == long_steps else "sweep_data"
            ax.plot(part["train_bags"], part["content_mae_pp"], "o-" if key == "long_data" else "o:",
                    color=colours[kind], alpha=1.0 if key == "long_data" else 0.5,
                    label=f"{data_label(report, kind, key)}, {steps} steps"
                          + (", mean of seeds" if key == "long_data" else ""))
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ticks, [str(b) for b in ticks])


def same_recipe(old: dict, new: dict) -> bool:
    """Equal wherever both records have a value: a config key added since the old rows were trained (at its
    default, or the rows' overrides would name it) did not shape them."""
    if old.keys() != new.keys():
        return False
    for key, value in old.items():
        if isinstance(value, dict) and isinstance(new[key], dict):
            if any(value[k] != new[key][k] for k in value.keys() & new[key].keys()):
                return False
        elif value != new[key]:
            return False
    return True


def merge_reports(path: Path, report: dict) -> dict:
    """Parts of the benchmark may run in separate processes (``--only``); each adds its keys to the JSON.

    Another recipe or other data-sweep sizes start the JSON over. A new schedule of one group of ``SCHEDULES``
    (the main runs' epochs, the paper sweeps' size) only drops the rows trained with it. Every earlier command
    line keeps the parts whose rows it still backs."""
    if not path.exists():
        return report
    old = json.loads(path.read_text())
    sizes, old_sizes = report["sizes"], old.get("sizes", {})
    scheduled = {k: None for group in SCHEDULES for k in group}
    shared = old_sizes.keys() & sizes.keys()  # a size the old JSON lacks did not shape its rows
    if not same_recipe(old.get("recipe", {}), report["recipe"]) or any(old_sizes[k] != sizes[k]
                                                                       for k in shared - scheduled.keys()):
        return report
    stale = set(report["runs"][0]["parts"])
    for group, (parts, keys) in SCHEDULES.items():
        if any(old_sizes.get(k) != sizes[k] for k in group):
            stale |= set(parts)
            old = {k: v for k, v in old.items() if k not in keys}
    runs = []
    for run in old.get("runs", []):
        if kept := [p for p in run["parts"] if p not in stale]:
            dropped = [p for p in run["parts"] if p in stale]
            runs.append({**run, "parts": kept, "superseded": sorted(set(run.get("superseded", [])) | set(dropped))})
    return {**old, **report, "runs": runs + report["runs"]}


if __name__ == "__main__":
    main()
