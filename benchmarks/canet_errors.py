"""Where the content error sits on the held-out test bags: each bag's prediction by the main CANet and
direct-regression runs of ``canet_synthetic.py`` against its true content and against the oracle.

    python benchmarks/canet_synthetic.py --only main    # first: trains runs/bench_canet/{canet,direct}/best.pt
    python benchmarks/canet_errors.py
    python benchmarks/canet_errors.py --share "canet ema=0.999" "canet ema=0.999 seed=1"   # any CANet runs
    python benchmarks/canet_errors.py --share "canet ema=0.999" --tta hvflip   # the same, under flip TTA

``--share RUN ...`` scores other CANet runs of ``canet_synthetic.py`` (their folders under ``--runs``) the same
way, as one table on the test bags and the fresh-seed bags: MAE and the model's own share, mean |CANet - oracle|
per bag (section ``canet_share``), and on the test bags that share split in two: the oracle with only its copper
area, or only its impurity mass per unit area, replaced by CANet's. The rows of earlier invocations stay
(``canet_share.json``); a run scored again keeps its newest row. ``--tta MODE`` scores them as ``scrapvision eval --tta MODE`` does (rows ``RUN tta=MODE``).

The oracle (true visible area of every material x densities fitted on the train bags) sees the same N photos
as the models, so its error is the part of a bag's error that the photos themselves leave. Writes
``benchmarks/results/canet_test_bags.csv`` (one row per bag), ``canet_test_scatter.png`` and the
``canet_errors`` section of ``benchmarks/results/canet.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import machine, now, write_section  # noqa: E402
from canet_report import HEADER, MARKDOWN, record_runs  # noqa: E402
from canet_synthetic import (  # noqa: E402
    FRESH_SEED,
    FULL,
    RESULTS,
    area_content,
    oracle_contents,
    split_loader,
    test_split,
    visible_areas,
)

from scrapvision.api import load_trained  # noqa: E402
from scrapvision.data.synthetic.copper_granules import materials, render_split  # noqa: E402
from scrapvision.errors import ScrapvisionError  # noqa: E402
from scrapvision.tta import TTA_MODES  # noqa: E402

MODELS = {"canet": "CANet", "direct": "direct regression", "oracle": "oracle"}
HEAVY = ("brass", "solder")  # heavier per unit of visible area than copper (the oracle's fitted densities)


@torch.no_grad()
def predict(task, model: torch.nn.Module, split, n: int) -> np.ndarray:
    """Copper content of every bag of ``split`` from its first ``n`` photos, in split order, as ``eval`` computes
    it (under the task's ``--tta``)."""
    return np.concatenate([task.outputs(model, batch["images"])["content"].float().cpu().numpy()
                           for batch in split_loader(split, n)])


@torch.no_grad()
def predict_parts(task, model: torch.nn.Module, split, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CANet's content of every bag (as :func:`predict`), its copper area and its impurity mass per unit area
    (the latent-class areas times their learnt densities), each pooled over the bag's first ``n`` photos."""
    densities = model.impurity_densities().detach().float().view(-1).cpu()
    parts = []
    for batch in split_loader(split, n):
        out = task.outputs(model, batch["images"])
        props = out["sample_proportions"].float().cpu()
        parts.append(torch.stack([out["content"].float().cpu(), props[:, 0], props[:, 1:] @ densities], 1))
    content, copper, impurity = torch.cat(parts).numpy().T
    return content, copper, impurity


def load_runs(runs: Path, names: list[str], tta: str = "none") -> dict[str, tuple]:
    """``load_trained`` of each run's best.pt under ``runs``; a missing one is a one-line error."""
    checkpoints = {name: runs / name / "best.pt" for name in names}
    for path in checkpoints.values():
        if not path.is_file():
            raise ScrapvisionError(f"{path}: missing; train it with `python benchmarks/canet_synthetic.py` first")
    return {name: load_trained("canet", path, tta=tta) for name, path in checkpoints.items()}


def oracle_densities(cfg) -> tuple[np.ndarray, list[str]]:
    """The densities ``canet_synthetic.py`` fitted and recorded (the same train bags, so no second render)."""
    n = cfg.data.images_per_sample
    report = RESULTS / "canet_synthetic.json"
    try:
        recorded = json.loads(report.read_text())["references"][str(n)]["oracle_densities"]
        names = [m.name for m in materials(cfg.data.synthetic_impurity_types)][1:]
        return np.array([recorded[name] for name in [*names, "tray"]]), names  # the oracle's column order
    except (OSError, KeyError, ValueError):
        raise ScrapvisionError(f"{report}: no oracle densities at N = {n}; run `python benchmarks/canet_synthetic.py "
                               "--only main` first") from None


def bag_table(runs: Path) -> tuple[pd.DataFrame, int]:
    """One row per test bag: true content, visible shares of the N photos, each prediction and the oracle's."""
    models = load_runs(runs, ["canet", "direct"])
    task = models["canet"][0]
    cfg = task.cfg
    n, rho = cfg.data.images_per_sample, cfg.model.copper_density
    densities, names = oracle_densities(cfg)
    test = test_split(task, FULL["test"])
    shares = np.stack([m[:n].mean(0) for m in test.material_areas])  # columns: tray, copper, impurities
    frame = pd.DataFrame({"true_content": test.contents, "copper_area": shares[:, 1]})
    frame = frame.join(pd.DataFrame(shares[:, 2:], columns=[f"{name}_area" for name in names]))
    impurity = shares[:, 2:].sum(1)
    heavy = sum(frame[f"{name}_area"] for name in HEAVY if f"{name}_area" in frame)
    frame["heavy_share_of_impurity_area"] = np.where(impurity > 0, heavy / np.maximum(impurity, 1e-9), 0.0)
    for key, (task_of, model) in models.items():
        frame[key] = predict(task_of, model, test, n)
    frame["oracle"] = oracle_contents(test, n, densities, rho)
    for key in MODELS:
        frame[f"{key}_error_pp"] = 100 * (frame[key] - frame["true_content"])
    frame.index.name = "bag"
    return frame, n


def scatter(frame: pd.DataFrame, n: int, path: Path) -> None:
    """Left: predicted against true content. Right: CANet's error against the oracle's on the same bag."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    truth = 100 * frame["true_content"]
    for key, style in (("direct", "x"), ("oracle", "."), ("canet", "o")):
        mae = frame[f"{key}_error_pp"].abs().mean()
        left.plot(truth, 100 * frame[key], style, ms=4, alpha=0.75, label=f"{MODELS[key]} (MAE {mae:.2f} pp)")
    lo, hi = float(truth.min()) - 2, float(truth.max()) + 2
    left.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    left.set(xlabel="true copper content (%)", ylabel="predicted copper content (%)",
             title=f"held-out test bags, N = {n} photos each")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.plot(frame["oracle_error_pp"], frame["canet_error_pp"], "o", ms=4, alpha=0.75)
    span = float(np.abs(frame[["oracle_error_pp", "canet_error_pp"]].to_numpy()).max()) + 0.5
    right.plot([-span, span], [-span, span], "k-", lw=0.8)
    right.axhline(0, color="grey", lw=0.5)
    right.axvline(0, color="grey", lw=0.5)
    right.set(xlabel="oracle error (pp): what the photos leave", ylabel="CANet error (pp)",
              title="on the diagonal: the photos, not the model")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(frame: pd.DataFrame) -> dict:
    """MAE by content band, how much of CANet's error the oracle shares, and the worst bags."""
    bands = pd.cut(100 * frame["true_content"], [0, 73, 86, 100], labels=["below 73", "73-86", "above 86"])
    by_band = {str(band): {key: round(float(part[f"{key}_error_pp"].abs().mean()), 2) for key in MODELS}
               | {"bags": len(part)} for band, part in frame.groupby(bands, observed=True)}
    canet, oracle = frame["canet_error_pp"], frame["oracle_error_pp"]
    return {
        "mae_pp": {key: round(float(frame[f"{key}_error_pp"].abs().mean()), 2) for key in MODELS},
        "bias_pp": {key: round(float(frame[f"{key}_error_pp"].mean()), 2) for key in MODELS},
        "by_content_band": by_band,
        "corr_canet_oracle_error": round(float(np.corrcoef(canet, oracle)[0, 1]), 3),
        "canet_minus_oracle_mae_pp": round(float((canet - oracle).abs().mean()), 2),
        "corr_canet_error_heavy_share": round(float(np.corrcoef(canet, frame["heavy_share_of_impurity_area"])[0, 1]), 3),
        "worst": frame.assign(abs_err=canet.abs()).nlargest(5, "abs_err")[
            ["true_content", "canet", "oracle", "heavy_share_of_impurity_area"]].round(4).reset_index().to_dict("records"),
    }


def markdown(s: dict, command: str, started: str, wall: float, host: str, n: int) -> str:
    mae, bias = s["mae_pp"], s["bias_pp"]
    lines = ["## Where the content error sits, bag by bag (`benchmarks/canet_errors.py`)", "",
             f"- `{command}`: {started}, wall {wall:.0f} s, {host}. Checkpoints: the main CANet and direct-regression "
             f"runs of `canet_synthetic.py --only main`; the 100 test bags at N = {n}. CSV `canet_test_bags.csv`, "
             "plot `canet_test_scatter.png`.", "",
             "| | CANet | direct regression | oracle |", "|---|---|---|---|",
             f"| MAE pp | {mae['canet']} | {mae['direct']} | {mae['oracle']} |",
             f"| mean signed error pp (bias) | {bias['canet']} | {bias['direct']} | {bias['oracle']} |"]
    for band, row in s["by_content_band"].items():
        lines.append(f"| MAE pp, true content {band} % ({row['bags']} bags) | {row['canet']} | {row['direct']} | "
                     f"{row['oracle']} |")
    lines += ["",
              f"- CANet's error against the oracle's on the same bag: correlation {s['corr_canet_oracle_error']}; "
              f"mean |CANet - oracle| {s['canet_minus_oracle_mae_pp']} pp (the part of the error the model adds).",
              f"- CANet's signed error against the heavy share ({' + '.join(HEAVY)}) of the visible impurity area: "
              f"correlation {s['corr_canet_error_heavy_share']}.",
              "- Worst five bags for CANet (content as mass fraction): "
              + "; ".join(f"bag {w['bag']}: true {w['true_content']:.3f}, CANet {w['canet']:.3f}, oracle "
                          f"{w['oracle']:.3f}, heavy share {w['heavy_share_of_impurity_area']:.2f}" for w in s["worst"]),
              ""]
    return "\n".join(lines)


def share_rows(runs: Path, names: list[str], tta: str = "none") -> tuple[list[dict], int]:
    """Per run, on the test bags, the fresh-seed bags and the validation bags: content MAE, the oracle's on the
    same photos, and mean |CANet - oracle|."""
    models = load_runs(runs, names, tta)
    task = next(iter(models.values()))[0]
    cfg = task.cfg
    n = cfg.data.images_per_sample
    densities = oracle_densities(cfg)[0]
    d = cfg.data  # val: the bags the runs chose their checkpoints on (all runs share the data recipe)
    splits = {"": test_split(task, FULL["test"]), "fresh_": test_split(task, FULL["test"], FRESH_SEED),
              "val_": render_split(task._spec(), d.synthetic_seed, "val", d.synthetic_val, cfg.model.img_size)}
    rho = cfg.model.copper_density
    sets = {}  # prefix -> (split, true contents, true copper area, true impurity mass per unit area, oracle)
    for prefix, split in splits.items():
        copper, others = visible_areas(split, n)
        sets[prefix] = (split, np.asarray(split.contents, dtype=float), copper, others @ densities,
                        area_content(copper, others @ densities, rho))
    rows = []
    for name, (task_of, model) in models.items():
        row = {"run": name if tta == "none" else f"{name} tta={tta}"}
        for prefix, (split, truth, true_copper, true_impurity, oracle) in sets.items():
            pred, copper, impurity = predict_parts(task_of, model, split, n)
            if not prefix:  # test bags: the share split into CANet's copper area and its impurity mass
                with_copper = area_content(copper, true_impurity, rho)
                with_impurity = area_content(true_copper, impurity, rho)
                row |= {"copper_area_share_pp": round(float(100 * np.abs(with_copper - oracle).mean()), 2),
                        "impurity_mass_share_pp": round(float(100 * np.abs(with_impurity - oracle).mean()), 2)}
            row |= {f"{prefix}mae_pp": round(float(100 * np.abs(pred - truth).mean()), 2),
                    f"{prefix}oracle_mae_pp": round(float(100 * np.abs(oracle - truth).mean()), 2),
                    f"{prefix}canet_minus_oracle_mae_pp": round(float(100 * np.abs(pred - oracle).mean()), 2),
                    f"{prefix}corr_with_oracle_error": round(float(np.corrcoef(pred - truth, oracle - truth)[0, 1]), 3)}
        rows.append(row)
    return rows, n


SHARE_JSON = RESULTS / "canet_share.json"


def share_markdown(records: list[dict]) -> str:
    """One table of every recorded ``--share`` invocation's rows, each invocation's command above it."""
    n = records[-1]["n"]
    lines = ["## The model's own share of the error, per run (`benchmarks/canet_errors.py`, option --share)", ""]
    lines += [f"- `{r['command']}`: {r['started']}, wall {r['wall_s']:.0f} s, {r['machine']}." for r in records]
    lines += [f"- Best-on-val checkpoints of `canet_synthetic.py` runs; the 100 test bags at N = {n}, and the 100 fresh "
              f"bags (generator seed {FRESH_SEED}) and the validation bags the checkpoint was chosen on, where the row has them "
              "(scored since 2026-12-04). Goal of issue 22: "
              "mean |CANet - oracle| <= 0.5 pp. Share split (test bags, scored since 2026-12-04, twenty-fourth "
              "session): the oracle's content with only its copper area replaced by CANet's (copper area), or with "
              "only its impurity mass per unit area replaced by CANet's latent-class areas x learnt densities "
              "(impurity mass); each as mean abs difference to the oracle.", "",
              "| run | MAE pp | oracle MAE pp (same photos) | mean abs(CANet - oracle) pp | share from the copper area "
              "pp | share from the impurity mass pp | error correlation with the oracle's | fresh: MAE pp | fresh: "
              "oracle MAE pp | fresh: mean abs(CANet - oracle) pp | val MAE pp |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['mae_pp']} | {r['oracle_mae_pp']} | {r['canet_minus_oracle_mae_pp']} | "
              f"{r.get('copper_area_share_pp', 'n/a')} | {r.get('impurity_mass_share_pp', 'n/a')} | "
              f"{r['corr_with_oracle_error']} | {r.get('fresh_mae_pp', 'n/a')} | {r.get('fresh_oracle_mae_pp', 'n/a')} | "
              f"{r.get('fresh_canet_minus_oracle_mae_pp', 'n/a')} | {r.get('val_mae_pp', 'n/a')} |"
              for record in records for r in record["rows"]]
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_canet",
                        help="the run folder of canet_synthetic.py (holds canet/best.pt and direct/best.pt)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--share", nargs="+", metavar="RUN", default=[],
                        help="only the model-share table of these CANet run folders under --runs")
    parser.add_argument("--tta", choices=TTA_MODES, default="none",
                        help="--share under flip test-time augmentation, as `scrapvision eval --tta`")
    args = parser.parse_args()
    if args.tta != "none" and not args.share:
        parser.error("--tta scores the runs of --share; name them")
    torch.set_num_threads(args.threads)
    started, t0, host = now(), time.time(), machine()
    command = "python benchmarks/canet_errors.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    if args.share:
        try:
            rows, n = share_rows(args.runs, args.share, args.tta)
        except ScrapvisionError as exc:
            raise SystemExit(f"canet_errors: {exc}") from None
        records = record_runs(SHARE_JSON, rows, command, started, time.time() - t0, host, n)
        write_section(MARKDOWN, "canet_share", share_markdown(records), header=HEADER)
        print(pd.DataFrame(rows).to_string(index=False))
        return
    try:
        frame, n = bag_table(args.runs)
    except ScrapvisionError as exc:
        raise SystemExit(f"canet_errors: {exc}") from None
    frame.round(5).to_csv(RESULTS / "canet_test_bags.csv")
    scatter(frame, n, RESULTS / "canet_test_scatter.png")
    stats = summary(frame)
    write_section(MARKDOWN, "canet_errors", markdown(stats, command, started, time.time() - t0, host, n), header=HEADER)
    print(pd.Series(stats["mae_pp"]).to_string())


if __name__ == "__main__":
    main()
