"""Markdown for ``benchmarks/results/canet.md`` (``MARKDOWN``): each canet benchmark script owns one marked
section, written with ``bench_env.write_section``."""

from __future__ import annotations

import json
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MARKDOWN = RESULTS / "canet.md"
# the data-efficiency models, in table-column and plot order (canet_synthetic.DATA_OVERRIDES: what each runs)
DATA_KINDS = ("canet", "direct", "direct_lr")
# few content labels at the main schedule: part ``long_data_<kind>`` trains these on each of ``long_data_bags``
# bags for as many steps as the main runs, to ask how many assayed samples a plant needs
LONG_DATA_KINDS = ("canet", "direct_lr")
LONG_DATA_SEEDS = (0, 1)  # training seeds (same bags, other initialisation and batch order)


def seeded(key: str, seed: int) -> str:
    """Report key of a run at another training seed: ``canet`` -> ``canet_seed1``; seed 0 keeps the key."""
    return key + (f"_seed{seed}" if seed else "")


def long_data_key(kind: str, seed: int) -> str:
    """Report key, and ``--only`` part, of one few-label model at one training seed."""
    return seeded(f"long_data_{kind}", seed)


def main_steps(r: dict) -> int:
    """Optimizer steps of the main runs, which the few-label runs match."""
    return r["sizes"]["train"] * r["sizes"]["epochs"] // r["recipe"]["batch_size"]


LONG_DATA_PARTS = tuple(long_data_key(k, seed) for seed in LONG_DATA_SEEDS for k in LONG_DATA_KINDS)
DIRECT_CHECK_LR = 0.001  # the baseline's second learning rate: the recipe's before it was tuned on CANet
# main-schedule rows after the recipe's CANet and direct rows: report key -> label
EXTRA_MAIN_ROWS = (("canet_paper_loss", "CANet, paper loss (lambda_p = 0)"),
                   ("canet_paper_loss_seed1", "CANet, paper loss (lambda_p = 0), training seed 1"),
                   ("canet_seed1", "CANet, training seed 1"),
                   ("direct_lr_seed1", f"direct regression, lr={DIRECT_CHECK_LR}, training seed 1"),
                   ("canet_classes4", "CANet, 4 latent classes"),
                   ("canet_ema", "CANet, weight average (train.ema_decay = 0.999)"),
                   ("canet_ema_seed1", "CANet, weight average (train.ema_decay = 0.999), training seed 1"),
                   *((f"canet_ema_lm{w}{suffix}", f"CANet, weight average, content weight lambda_m = {w}{label}")
                     for w in (8, 40) for suffix, label in (("", ""), ("_seed1", ", training seed 1"))),
                   *((f"canet_ema_d6{suffix}", f"CANet, weight average, ViT depth 6{label}")
                     for suffix, label in (("", ""), ("_seed1", ", training seed 1"))),
                   *((f"canet_ema_li{w}{suffix}", f"CANet, weight average, class spread lambda_i = {w}{label}")
                     for w in ("0.02", "0.1") for suffix, label in (("", ""), ("_seed1", ", training seed 1"))),
                   *((f"canet_ema_b1280{suffix}", f"CANet, weight average, 1280 assayed bags (same steps){label}")
                     for suffix, label in (("", ""), ("_seed1", ", training seed 1"))),
                   # rendered at 192 px: the same bags and contents, areas rasterised finer (trivial MAE differs)
                   *((f"canet_ema_r192{suffix}", f"CANet, weight average, photos at 192 px, 12-px patches{label}")
                     for suffix, label in (("", ""), ("_seed1", ", training seed 1"))))
HEADER = "# canet benchmarks\n\nWritten by `benchmarks/canet_*.py`; every number below comes from the command shown.\n"


def record_runs(path: Path, rows: list[dict], command: str, started: str, wall: float, host: str, n: int) -> list[dict]:
    """This invocation's per-run rows added to the earlier invocations recorded in ``path`` (JSON list): a run
    scored again keeps only its newest row and an invocation left without rows is dropped, so the tables keep
    runs whose checkpoints are gone (``canet_errors.py --share``, ``canet_probe.py``)."""
    records = json.loads(path.read_text()) if path.is_file() else []
    names = {r["run"] for r in rows}
    for record in records:
        record["rows"] = [r for r in record["rows"] if r["run"] not in names]
    records = [r for r in records if r["rows"]] + [{"command": command, "started": started, "wall_s": round(wall, 1),
                                                    "machine": host, "n": n, "rows": rows}]
    path.write_text(json.dumps(records, indent=1))
    return records


def run_value(row: dict) -> float:
    """The swept value of a sweep row, from its run name (``"canet bags=40"``, ``"lambda_a=0.1"``, ``"N=8"``)."""
    text = row["run"].rsplit("=", 1)[1]
    return float(text) if "." in text else int(text)


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _row(label: str, m: dict, wall: str = "") -> str:
    return (f"| {label} | {_fmt(m['content_mae_pp'])} | {_fmt(m['content_rmse_pp'])} | {_fmt(m['content_r2'], 3)} | "
            f"{_fmt(m['within_1pp'] * 100, 0)} % | {_fmt(m.get('area_mae_pp'))} | {wall} |")


def _fresh_lines(r: dict, ref: dict) -> list[str]:
    """The fresh-seed bags' line (bags nobody scored while the recipe was chosen), once every row has them."""
    if not ("test_fresh" in r["canet"] and "test_fresh" in r.get("direct", {}) and "oracle_fresh" in ref):
        return []
    rows = [("CANet", r["canet"]), ("direct regression", r["direct"])]
    if "direct_lr" in r:
        rows.append((f"direct at {r['direct_lr']['run'].split(' ', 1)[1]}", r["direct_lr"]))
    rows += [(label, r[key]) for key, label in EXTRA_MAIN_ROWS if "test_fresh" in r.get(key, {})]
    scores = [f"{name} {_fmt(row['test_fresh']['content_mae_pp'])} pp" for name, row in rows]
    if "copper_only_fresh" in ref:
        scores.append(f"copper area alone {_fmt(ref['copper_only_fresh']['content_mae_pp'])} pp")
    scores.append(f"oracle {_fmt(ref['oracle_fresh']['content_mae_pp'])} pp MAE")
    return [f"Fresh test bags (generator seed {r.get('fresh_seed')}, {r['sizes']['test']} bags, never scored while "
            f"the recipe was chosen): {'; '.join(scores)}.", ""]


def _seed_lines(r: dict) -> list[str]:
    """Means of training seeds 0 and 1 for every model that has both, and the direct / CANet ratios."""
    def mean(key: str) -> tuple[float | None, float | None] | None:
        runs = {seed: r[seeded(key, seed)] for seed in (0, 1) if seeded(key, seed) in r}
        return (_mean(runs, "test"), _mean(runs, "test_fresh")) if len(runs) == 2 else None

    direct = mean("direct_lr")
    means = {name: m for name, key in (("CANet", "canet"), ("CANet with the paper loss", "canet_paper_loss"))
             if (m := mean(key)) is not None}
    if not means or direct is None:
        return []
    parts = [f"{name} {_fmt(t)} pp on the test bags and {_fmt(f)} pp on the fresh bags (ratio direct / this "
             f"{_ratio(direct, (t, f))})" for name, (t, f) in means.items()]
    setting = r["direct_lr"]["run"].split(" ", 1)[1]  # the baseline's run name says its learning rate
    return [f"Mean of training seeds 0 and 1: direct regression at {setting} {_fmt(direct[0])} / {_fmt(direct[1])} pp; "
            + "; ".join(parts) + ".", ""]


def data_label(r: dict, kind: str, key: str = "sweep_data") -> str:
    """Name of a data-efficiency model, with the learning rate its rows actually ran at when it is not the recipe's."""
    lr = [o.split("=", 1)[1] for o in (r.get(f"{key}_{kind}") or [{}])[0].get("overrides", [])
          if o.startswith("optim.lr=")]
    return ("CANet" if kind == "canet" else "direct regression") + (f", lr {lr[0]}" if lr else "")


def _data_lines(r: dict) -> list[str]:
    """The data-efficiency table: one row per training-set size, one MAE column per model that ran."""
    kinds = [k for k in DATA_KINDS if r.get(f"sweep_data_{k}")]
    if not kinds:
        return []
    names = {k: data_label(r, k) for k in kinds}
    by_bags: dict[int, dict] = {}
    for kind in kinds:
        for row in r[f"sweep_data_{kind}"]:
            by_bags.setdefault(run_value(row), {})[kind] = row
    directs = [k for k in kinds if k != "canet"]
    lines = [f"### Data efficiency: content-labelled training bags, {r['sizes'].get('data_steps')} steps each "
             "(CSV `canet_sweep_data.csv`, plot `canet_sweep_data.png`)", "",
             "| train bags | CANet MAE pp | CANet area MAE pp | " + " | ".join(f"{names[k]} MAE pp" for k in directs)
             + " | best direct / CANet | " + " | ".join(f"{names[k]} wall" for k in kinds) + " |",
             "|---" * (4 + len(directs) + len(kinds)) + "|"]
    for bags, rows in sorted(by_bags.items()):
        mae = {k: rows[k]["test"]["content_mae_pp"] for k in kinds if k in rows}
        best = min((mae[k] for k in directs if k in mae), default=None)
        ratio = f"{best / mae['canet']:.1f}x" if best is not None and "canet" in mae else "n/a"
        area = _fmt(rows["canet"]["test"].get("area_mae_pp")) if "canet" in rows else "n/a"
        walls = [f"{rows[k]['train_wall_s'] / 60:.1f} min" if k in rows else "n/a" for k in kinds]
        cells = [_fmt(mae[k]) if k in mae else "n/a" for k in ("canet", *directs)]
        lines.append(" | ".join([f"| {bags}", cells[0], area, *cells[1:], ratio, *walls]) + " |")
    return [*lines, ""]


def long_data_runs(r: dict) -> dict[int, dict[str, dict[int, dict]]]:
    """train bags -> model -> training seed -> run, for the few-label runs; the main runs of the same models and
    seeds (``<kind>`` and ``<kind>_seed<N>``) are the row of the full train split."""
    table: dict[int, dict[str, dict[int, dict]]] = {}
    for seed in LONG_DATA_SEEDS:
        for kind in LONG_DATA_KINDS:
            for row in r.get(long_data_key(kind, seed), []):
                table.setdefault(run_value(row), {}).setdefault(kind, {})[seed] = row
    seeds = {seed for models in table.values() for runs in models.values() for seed in runs}
    both = [seed for seed in sorted(seeds) if all(seeded(k, seed) in r for k in LONG_DATA_KINDS)]  # same seeds
    if table and both:
        table[r["sizes"]["train"]] = {k: {seed: r[seeded(k, seed)] for seed in both} for k in LONG_DATA_KINDS}
    return table


def _mean(runs: dict[int, dict], split: str, key: str = "content_mae_pp") -> float | None:
    """Mean of ``key`` (content MAE by default) of the runs (one per training seed) on one split; None unless
    every run scored it."""
    values = [run[split][key] for run in runs.values() if key in run.get(split, {})]
    return sum(values) / len(values) if len(values) == len(runs) and values else None


def _ratio(direct: tuple, canet: tuple) -> str:
    """``direct / CANet`` on the test and the fresh bags, from (test, fresh) MAE pairs."""
    if None in (*direct, *canet):
        return "n/a"
    return f"{direct[0] / canet[0]:.1f}x / {direct[1] / canet[1]:.1f}x"


def _long_data_lines(r: dict) -> list[str]:
    """Few content-labelled bags at the main schedule, each row a mean over the training seeds that ran for both
    models, with the main runs (the full train split, same seeds) as the last row; then every run."""
    table = long_data_runs(r)
    if not table:
        return []
    s, steps = r["sizes"], main_steps(r)
    lines = [f"### Few content labels, trained as long as the main runs ({steps} steps whatever the number of bags; "
             f"the {s['train']}-bag row is the main runs; solid lines of plot `canet_sweep_data.png`, rows with "
             f"steps = {steps} in `canet_sweep_data.csv`)", "",
             f"| train bags | training seeds | CANet MAE pp (test / fresh) | CANet area MAE pp | "
             f"{data_label(r, 'direct_lr', 'long_data')} MAE pp (test / fresh) | direct / CANet (test / fresh) |",
             "|---|---|---|---|---|---|"]
    per_seed = []
    for bags, all_models in sorted(table.items()):
        seeds = sorted(set.intersection(*(set(runs) for runs in all_models.values())))  # a mean over the same seeds
        models = {k: {seed: runs[seed] for seed in seeds} for k, runs in all_models.items()}
        mae = {k: (_mean(runs, "test"), _mean(runs, "test_fresh")) for k, runs in models.items()}
        pair = {k: f"{_fmt(mae[k][0])} / {_fmt(mae[k][1])}" if k in mae else "n/a" for k in LONG_DATA_KINDS}
        ratio = _ratio(mae["direct_lr"], mae["canet"]) if len(mae) == 2 else "n/a"
        canet = models.get("canet", {})
        area = [run["test"].get("area_mae_pp") for run in canet.values()]
        area_cell = _fmt(sum(area) / len(area)) if area and None not in area else "n/a"
        lines.append(f"| {bags} | {', '.join(map(str, seeds))} | {pair['canet']} | {area_cell} | {pair['direct_lr']} | "
                     f"{ratio} |")
        per_seed += [f"{bags} bags {'CANet' if k == 'canet' else 'direct'} seed {seed}: "
                     f"{_fmt(run['test']['content_mae_pp'])} / {_fmt(run.get('test_fresh', {}).get('content_mae_pp'))} "
                     f"pp ({run['train_wall_s'] / 60:.1f} min)"
                     for k, runs in all_models.items() for seed, run in sorted(runs.items())]
    return [*lines, "", "Each run (test / fresh MAE, train wall): " + "; ".join(per_seed) + ".", ""]


def synthetic_markdown(r: dict) -> str:
    s, m = r["sizes"], r["recipe"]["model"]
    lines = ["## Synthetic copper-granule benchmark (`benchmarks/canet_synthetic.py`)", ""]
    for run in r["runs"]:
        rerun = f"; its {', '.join(run['superseded'])} rows since rerun" if run.get("superseded") else ""
        lines.append(f"- `{run['command']}` ({', '.join(run['parts'])}{rerun}; commit {run['commit']}): started "
                     f"{run['started']}, wall {run['wall_s'] / 60:.1f} min, {run['machine']}"
                     + (f", load average {run['load_avg_at_start']} at start" if "load_avg_at_start" in run else ""))
    lines += [
        f"- recipe: `tasks/canet.yaml` ({m['backbone']}, {m['vit_depth'] or 'all'} blocks, random init, "
        f"{m['img_size']}x{m['img_size']} px photos, {m['patch_size']}x{m['patch_size']} patches, "
        f"{m['num_classes']} latent classes, lambda_a {r['recipe']['loss']['lambda_a']}, lambda_m "
        f"{r['recipe']['loss']['lambda_m']}, lambda_p {r['recipe']['loss']['lambda_p']}) with {s['train']} train / "
        f"{s['val']} val bags, {s['stirs']} photos rendered per bag at {r['recipe']['render_size']} px, "
        f"{s['epochs']} epochs for the main runs; the sweeps train on {s['sweep_train']} bags for "
        f"{s['sweep_epochs']} epochs; test = {s['test']} "
        "held-out bags (split `test`), scored at the training N with the best-on-val checkpoint.",
        "- pp = percentage points of copper mass fraction; area = per-photo copper area proportion vs the masks.",
        "",
    ]
    if "canet" in r:
        n = r["canet"]["N"]
        ref = r["references"][str(n)]
        lines += [
            f"### Copper content on the held-out test bags (N = {n} photos per bag)",
            "",
            "| method | MAE pp | RMSE pp | R^2 | within 1 pp | area MAE pp | train wall |",
            "|---|---|---|---|---|---|---|",
            _row("CANet (this head)", r["canet"]["test"], f"{r['canet']['train_wall_s'] / 60:.1f} min"),
            _row("direct regression (paper baseline)", r["direct"]["test"], f"{r['direct']['train_wall_s'] / 60:.1f} min"),
            *([_row(f"direct regression, {r['direct_lr']['run'].split(' ', 1)[1]}", r["direct_lr"]["test"],
                    f"{r['direct_lr']['train_wall_s'] / 60:.1f} min")] if "direct_lr" in r else []),
            *[_row(label, r[key]["test"], f"{r[key]['train_wall_s'] / 60:.1f} min")
              for key, label in EXTRA_MAIN_ROWS if key in r],
            _row("copper area fraction of the true masks = content", ref["trivial"]),
            *([_row("copper area of the true masks, one fitted density for all else", ref["copper_only"])]
              if "copper_only" in ref else []),
            _row("oracle: true per-material areas x fitted densities", ref["oracle"]),
            "",
            f"Paper (real data, DINO ViT-S/8): CANet {r['paper']['canet_real_mae_pp']} % MAE, direct regression "
            f"{r['paper']['direct_real_mae_pp']} % MAE. Goal here: <= 2 pp and >= 5x better than direct regression. "
            f"Measured ratio at training seed 0, best direct regression row / CANet = "
            f"{min(r[k]['test']['content_mae_pp'] for k in ('direct', 'direct_lr') if k in r) / r['canet']['test']['content_mae_pp']:.1f}x.",
            "",
            *_seed_lines(r),
            *_fresh_lines(r, ref),
            f"Learnt impurity densities (g/cm3, copper fixed at 8.96): {r['canet'].get('learnt_impurity_densities')}",
            *(["", "Oracle densities (g/cm3 per unit of visible area, NNLS on the train split; above 8.96 = heavier "
               "per unit area than copper): " + ", ".join(f"{k} {v}" for k, v in ref["oracle_densities"].items())]
              if "oracle_densities" in ref else []),
            *(["", "Copper area alone: one mass per unit of visible area for everything that is not copper "
               f"(impurities and tray pooled, NNLS on the train split): {ref['copper_only_density']} g/cm3."]
              if "copper_only_density" in ref else []),
            "",
        ]
    lines += _long_data_lines(r)
    lines += _data_lines(r)
    for key, col, title in (("sweep_lambda_a", "lambda_a", "lambda_a, paper loss (lambda_p = 0)"), ("sweep_classes", "num_classes", "I+1 classes"),
                            ("sweep_N", "N", "photos per sample N")):
        if key not in r:
            continue
        lines += [f"### Sweep: {title} (CSV `canet_{key}.csv`, plot `canet_{key}.png`)", "",
                  f"| {col} | MAE pp | RMSE pp | R^2 | within 1 pp | area MAE pp | train wall |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_row(row["run"], row["test"], f"{row['train_wall_s'] / 60:.1f} min") for row in r[key]]
        lines.append("")
    if "canet" in r and "test_by_N" in r["canet"]:
        lines += ["### Main CANet model tested with N photos (trained at N = "
                  f"{r['canet']['N']}), against the oracle floor", "",
                  "| N | CANet MAE pp | CANet area MAE pp | oracle MAE pp | copper area alone MAE pp | trivial MAE pp |",
                  "|---|---|---|---|---|---|"]
        for k, m in r["canet"]["test_by_N"].items():
            ref = r["references"][str(k)]
            lines.append(f"| {k} | {_fmt(m['content_mae_pp'])} | {_fmt(m.get('area_mae_pp'))} | "
                         f"{_fmt(ref['oracle']['content_mae_pp'])} | "
                         f"{_fmt(ref.get('copper_only', {}).get('content_mae_pp'))} | "
                         f"{_fmt(ref['trivial']['content_mae_pp'])} |")
        lines.append("")
    lines.append(f"_Section written {time.strftime('%Y-%m-%d %H:%M %Z')}._")
    return "\n".join(lines)


# part ``mask_only`` of canet_synthetic.py: report key of each model -> label
MASK_ONLY_KINDS = (("mask_only", "CANet, assayed + mask-only bags"), ("canet", "CANet, assayed bags alone"),
                   ("direct_lr", f"direct regression, lr {DIRECT_CHECK_LR}, assayed bags alone"))


def mask_only_markdown(r: dict) -> str:
    """The ``canet_mask_only`` section: per number of assayed bags, CANet with the other bags mask-only
    against CANet and direct regression on the assayed bags alone (test and fresh bags)."""
    s = r["sizes"]
    lines = ["## Few assays, many masks (`benchmarks/canet_synthetic.py --only mask_only`)", ""]
    lines += [f"- `{run['command']}` (commit {run['commit']}): started {run['started']}, {run['machine']}"
              for run in r["runs"]]
    lines += [f"- K assayed bags (the first K of the {s['train']}-bag train split, i.e. the bags of "
              f"`data.synthetic_train=K`); with `data.assayed=K` the other {s['train']} - K bags are mask-only (masks, "
              "no content), feeding only the area and per-patch terms. Every run takes about "
              f"{s['data_steps']} optimizer steps of 8 bags (the data-efficiency sweep's budget): the alone rows are "
              "that sweep's runs again; the mask-only run's epoch is every assayed bag once plus as many mask-only "
              "draws (every batch half assayed), so it has `train.epochs` = half the alone run's, its warmup set "
              "to the same steps, and half as many validations. Training seeds as listed per row, the best-on-val checkpoint, "
              f"{s['test']} test bags and {s['test']} fresh bags (generator seed {r['fresh_seed']}), N = 4. Train wall "
              "includes rendering a train split the process has not rendered yet (the first mask-only row: "
              f"{s['train']} bags x {s['stirs']} photos; CANet alone: its K bags).",
              f"- CSV `canet_mask_only{r.get('suffix', '')}.csv`.", "",
              "| assayed bags | mask-only bags | model | seeds | MAE pp (test / fresh), mean over seeds | per seed "
              "(test / fresh) | RMSE pp | area MAE pp | train wall per run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for bags in sorted({row["assayed"] for row in r["rows"].values()}):
        for kind, label in MASK_ONLY_KINDS:
            runs = sorted(((row.get("seed", 0), row) for name, row in r["rows"].items()
                           if name == f"{kind} assayed={bags}" or name.startswith(f"{kind} assayed={bags} seed=")),
                          key=lambda pair: pair[0])
            if not runs:
                continue
            by_seed = dict(runs)
            per_seed = ", ".join(f"{_fmt(row['test']['content_mae_pp'])} / "
                                 f"{_fmt(row.get('test_fresh', {}).get('content_mae_pp'))}" for _, row in runs)
            lines.append(f"| {bags} | {runs[0][1]['mask_only']} | {label} | {', '.join(str(seed) for seed, _ in runs)} | "
                         f"{_fmt(_mean(by_seed, 'test'))} / {_fmt(_mean(by_seed, 'test_fresh'))} | {per_seed} | "
                         f"{_fmt(_mean(by_seed, 'test', 'content_rmse_pp'))} | "
                         f"{_fmt(_mean(by_seed, 'test', 'area_mae_pp'))} | "
                         f"{sum(r['train_wall_s'] for r in by_seed.values()) / len(by_seed) / 60:.1f} min |")
    lines += ["", f"_Section written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}._"]
    return "\n".join(lines)
