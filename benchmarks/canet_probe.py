"""What CANet's patch features know about the materials, and what its latent classes make of it (issue 22).

    python benchmarks/canet_probe.py "canet ema=0.999 depth=6" ["canet ema=0.999 lambda_i=0.1" ...]

CANet learns its I impurity classes from the assays alone; the model's own share of the content error (issue 22)
asks whether they match the materials. For each CANet run of ``canet_synthetic.py`` (its best.pt under
``--runs``), on the first N photos of the first 160 train bags and of the 100 test bags, with the generator's
per-pixel material maps pooled to the ViT's patch grid:

- linear probes (logistic regression fitted on train-bag patches, scored on the test-bag patches that are at
  least 99 % one material): the ViT's patch features (what the backbone tells apart), per-patch colour
  statistics (mean, spread and 90th percentile of RGB: no learning at all) and the neck's latent-class
  probabilities (what the classes that weigh the areas tell apart). Balanced accuracy over the tray, copper and
  the impurities, and the recall of each material;
- where the latent classes put each material: the class taking most of its pure train patches, with the
  density CANet learnt for it;
- content from material areas (the model's own share of the error, issue 22): a neck of CANet's shape trained on
  the true material fraction of every train patch over the run's frozen features (an upper bound on what
  material supervision could make of these features), its areas weighed with densities fitted as the oracle
  fits them; and, with no model, the true areas with brass, iron and solder counted as one material (how
  CANet's latent classes lump them). Each against the oracle refitted on the same train bags.

The material labels feed the probes only; CANet never sees them. Rows of earlier invocations stay
(``canet_probe.json``); a run probed again keeps its newest row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_env import machine, now, write_section  # noqa: E402
from canet_errors import load_runs  # noqa: E402
from canet_report import HEADER, MARKDOWN, record_runs  # noqa: E402
from canet_synthetic import FULL, RESULTS, area_content, fit_densities  # noqa: E402

from scrapvision.data.synthetic.copper_granules import generate_sample, materials  # noqa: E402
from scrapvision.errors import ScrapvisionError  # noqa: E402

PROBE_JSON = RESULTS / "canet_probe.json"
HEAVY_METALS = ("brass", "iron", "solder")  # the materials CANet's latent classes lump into one heavy class
NECK_EPOCHS = 20
PURE = 0.99  # a patch this much one material is labelled with it
PROBE_PATCHES = 40_000  # patches each probe is fitted on (a random draw of the train bags' patches)
TRAIN_BAGS = 160  # train bags the probes are fitted on: 164k patches, of which about 40k are pure


@dataclasses.dataclass
class Bags:
    """The first N photos of some bags at the model's resolution, per-pixel materials and true contents."""

    images: np.ndarray  # uint8 [bags, N, S, S, 3]
    maps: np.ndarray  # uint8 [bags, N, S, S]: 0 tray, 1 copper, 2.. impurities
    contents: np.ndarray  # [bags]


def render(spec, seed: int, split: str, count: int, n: int) -> Bags:
    """The generator's bags, rendering only the N photos used (the first N of the full bag: same pixels)."""
    spec = dataclasses.replace(spec, stirs=n)
    images, maps, contents = [], [], []
    for index in tqdm(range(count), desc=f"render {split}", leave=False):
        sample = generate_sample(spec, seed, index, split)
        images.append(np.stack(sample.images))
        maps.append(np.stack(sample.material_maps))
        contents.append(sample.copper_content)
    return Bags(np.stack(images), np.stack(maps), np.array(contents))


def tiles(a: np.ndarray, grid: int) -> np.ndarray:
    """[N, S, S, ...] -> [N * grid * grid, (S / grid)^2, ...]: the pixels of each patch of the grid."""
    n, size = a.shape[:2]
    p = size // grid
    return a.reshape(n, grid, p, grid, p, *a.shape[3:]).swapaxes(2, 3).reshape(n * grid * grid, p * p, *a.shape[3:])


def material_fractions(bags: Bags, grid: int, count: int) -> np.ndarray:
    """[bags, patches, materials]: the share of each material in each patch."""
    return np.stack([np.stack([(tiles(m, grid) == k).mean(1) for k in range(count)], -1) for m in bags.maps])


def colour_statistics(bags: Bags, grid: int) -> np.ndarray:
    """[bags, patches, 9]: mean, standard deviation and 90th percentile of each patch's RGB."""
    out = []
    for images in bags.images:
        pixels = tiles(images, grid).astype(np.float32) / 255
        out.append(np.concatenate([pixels.mean(1), pixels.std(1), np.percentile(pixels, 90, axis=1)], 1))
    return np.stack(out)


@torch.no_grad()
def model_patches(model: torch.nn.Module, bags: Bags, desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[bags, patches, C] ViT features, [bags, patches, K] latent-class probabilities, [bags] CANet content."""
    feats, probs, contents = [], [], []
    for images in tqdm(bags.images, desc=desc, leave=False):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)[None]
        f = model.features(x)  # [N, C, h, w]
        p = model.neck(f).softmax(1)
        feats.append(f.flatten(2).transpose(1, 2).reshape(-1, f.shape[1]).numpy())
        probs.append(p.flatten(2).transpose(1, 2).reshape(-1, p.shape[1]).numpy())
        contents.append(float(model.content_from_proportions(p.mean((2, 3)).mean(0))))
    return np.stack(feats), np.stack(probs), np.array(contents)


def fit_probe(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """Standardised multinomial logistic regression on at most PROBE_PATCHES rows of (x, y)."""
    take = np.random.default_rng(seed).permutation(len(y))[:PROBE_PATCHES]
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[take], y[take])


def probe_scores(train_x: np.ndarray, train_frac: np.ndarray, test_x: np.ndarray, test_frac: np.ndarray,
                 names: list[str]) -> dict:
    """Balanced accuracy and per-material recall of a probe fitted on pure train patches, on pure test patches."""
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    tr_frac, te_frac = flat(train_frac), flat(test_frac)
    tr, te = tr_frac.max(1) >= PURE, te_frac.max(1) >= PURE
    probe = fit_probe(flat(train_x)[tr], tr_frac[tr].argmax(1))
    truth, pred = te_frac[te].argmax(1), probe.predict(flat(test_x)[te])
    present = sorted(set(truth))
    recall = recall_score(truth, pred, labels=present, average=None, zero_division=0)
    return {"balanced_accuracy": round(float(balanced_accuracy_score(truth, pred)), 3),
            "recall": {names[k]: round(float(r), 3) for k, r in zip(present, recall)}}


def mae_pp(pred: np.ndarray, truth: np.ndarray) -> float:
    return round(float(100 * np.abs(pred - truth).mean()), 2)


def merge_columns(areas: np.ndarray, names: list[str], merged: tuple[str, ...]) -> np.ndarray:
    """[bags, K] areas with the ``merged`` materials summed into the first of them (the others' columns 0)."""
    out = areas.copy()
    keep, *rest = (names.index(m) for m in merged)
    out[:, keep] += out[:, rest].sum(1)
    out[:, rest] = 0
    return out


def copper_and_others(areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[bags, K] areas in material-map order (tray, copper, impurities) -> the copper column and the rest, as
    ``canet_synthetic.fit_densities`` and ``area_content`` take them."""
    return areas[:, 1], np.delete(areas, 1, axis=1)


def weighed_contents(train_areas: np.ndarray, train_contents: np.ndarray, areas: np.ndarray, rho: float) -> np.ndarray:
    """Contents of ``areas`` with densities fitted on the train bags' areas, as the oracle does."""
    densities = fit_densities(*copper_and_others(train_areas), train_contents, rho)
    copper, others = copper_and_others(areas)
    return area_content(copper, others @ densities, rho)


def material_neck(train_x: np.ndarray, train_frac: np.ndarray, hidden: int, seed: int = 0) -> torch.nn.Module:
    """A neck of CANet's shape (two hidden layers, per patch) fitted by soft cross-entropy to the true material
    fraction of every train patch, mixed ones too, for NECK_EPOCHS epochs (no choice on the test bags)."""
    torch.manual_seed(seed)
    x = torch.from_numpy(train_x.reshape(-1, train_x.shape[-1])).float()
    y = torch.from_numpy(train_frac.reshape(-1, train_frac.shape[-1])).float()
    neck = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, hidden),
                               torch.nn.GELU(), torch.nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.Adam(neck.parameters(), lr=1e-3)
    for _ in range(NECK_EPOCHS):
        for idx in torch.randperm(len(x)).split(1024):
            loss = -(y[idx] * neck(x[idx]).log_softmax(1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return neck.eval()


def area_contents(t_feat: np.ndarray, t_frac: np.ndarray, e_feat: np.ndarray, e_frac: np.ndarray,
                  train: Bags, test: Bags, names: list[str], hidden: int, canet: np.ndarray, rho: float) -> dict:
    """Test-bag content from material areas: the oracle (true areas), the true areas with the heavy metals as
    one material, the material-supervised neck's areas, and CANet; MAE and mean abs difference to the oracle."""
    true_tr, true_te = t_frac.mean(1), e_frac.mean(1)  # [bags, K]: visible shares of the N photos
    oracle = weighed_contents(true_tr, train.contents, true_te, rho)
    lumped_tr, lumped_te = (merge_columns(a, names, HEAVY_METALS) for a in (true_tr, true_te))
    lumped = weighed_contents(lumped_tr, train.contents, lumped_te, rho)
    neck = material_neck(t_feat, t_frac, hidden)
    with torch.no_grad():
        shares = [neck(torch.from_numpy(f.reshape(-1, f.shape[-1])).float()).softmax(1).view(len(f), -1, len(names))
                  .mean(1).numpy() for f in (t_feat, e_feat)]
    necked = weighed_contents(shares[0], train.contents, shares[1], rho)
    truth = test.contents
    row = lambda pred: {"mae_pp": mae_pp(pred, truth), "minus_oracle_pp": mae_pp(pred, oracle)}  # noqa: E731
    return {"oracle": row(oracle), "heavy_as_one": row(lumped), "material_neck": row(necked), "canet": row(canet),
            "material_neck_area_mae_pp": mae_pp(shares[1], true_te)}


def probe_run(name: str, model: torch.nn.Module, train: Bags, test: Bags, names: list[str]) -> dict:
    """One run's row: the probes, where the latent classes put the materials, and CANet's test MAE."""
    t_feat, t_prob, _ = model_patches(model, train, f"{name}: train bags")
    e_feat, e_prob, canet = model_patches(model, test, f"{name}: test bags")
    grid = int(round(np.sqrt(t_feat.shape[1] / train.images.shape[1])))
    t_frac, e_frac = (material_fractions(b, grid, len(names)) for b in (train, test))
    logs = (lambda p: np.log(p + 1e-6))  # noqa: E731
    colour = [colour_statistics(b, grid) for b in (train, test)]
    probes = {"vit_features": probe_scores(t_feat, t_frac, e_feat, e_frac, names),
              "colour_statistics": probe_scores(colour[0], t_frac, colour[1], e_frac, names),
              "latent_classes": probe_scores(logs(t_prob), t_frac, logs(e_prob), e_frac, names)}
    # the latent class that takes most of each material's pure train patches
    flat_frac, flat_prob = t_frac.reshape(-1, len(names)), t_prob.reshape(-1, t_prob.shape[-1])
    pure = flat_frac.max(1) >= PURE
    votes = np.zeros((len(names), t_prob.shape[-1]))
    np.add.at(votes, (flat_frac[pure].argmax(1), flat_prob[pure].argmax(1)), 1)
    group = votes.argmax(1)
    densities = model.impurity_densities().detach().view(-1).numpy()
    groups = {int(g): [names[m] for m in np.flatnonzero(group == g)] for g in sorted(set(group))}
    truth = test.contents
    hidden = model.neck[0].out_channels
    return {"run": name, "probes": probes,
            "from_areas": area_contents(t_feat, t_frac, e_feat, e_frac, train, test, names, hidden, canet,
                                        float(model.copper_density)),
            "latent_groups": {str(g): {"density": None if g == 0 else round(float(densities[g - 1]), 3),
                                       "materials": m} for g, m in groups.items()},
            "canet_mae_pp": mae_pp(canet, truth)}


def markdown(records: list[dict]) -> str:
    lines = ["## What the patch features know about the materials (script benchmarks/canet_probe.py)", ""]
    lines += [f"- `{r['command']}`: {r['started']}, wall {r['wall_s']:.0f} s, {r['machine']}." for r in records]
    n = records[-1]["n"]
    lines += [f"- Best-on-val checkpoints of `canet_synthetic.py` runs; patches of the first N = {n} photos of "
              f"{TRAIN_BAGS} train bags (probe fits) and of the 100 test bags (scores). Material labels feed the "
              "probes only; CANet never sees them. A pure patch is at least 99 % one material; balanced accuracy "
              "over the tray, copper and the 9 impurities.", "",
              "| run | CANet test MAE pp | probe balanced accuracy: ViT features | colour statistics | latent classes |",
              "|---|---|---|---|---|"]
    rows = [r for record in records for r in record["rows"]]
    for r in rows:
        p = r["probes"]
        lines.append(f"| {r['run']} | {r['canet_mae_pp']} | {p['vit_features']['balanced_accuracy']} | "
                     f"{p['colour_statistics']['balanced_accuracy']} | {p['latent_classes']['balanced_accuracy']} |")
    lines += ["", "Recall per material on pure test patches (ViT-feature probe / latent-class probe):", ""]
    names = list(rows[-1]["probes"]["vit_features"]["recall"])
    lines += ["| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for r in rows:
        vit, lat = r["probes"]["vit_features"]["recall"], r["probes"]["latent_classes"]["recall"]
        lines.append(f"| {r['run']} | " + " | ".join(f"{vit.get(k, '-')} / {lat.get(k, '-')}" for k in names) + " |")
    lines += ["", "Where the latent classes put the materials (the class taking most of each material's pure train "
              "patches; learnt density in g/cm3, class 0 = copper):", ""]
    for r in rows:
        groups = "; ".join(f"class {g}" + ("" if v["density"] is None else f" ({v['density']})") + ": "
                           + ", ".join(v["materials"]) for g, v in r["latent_groups"].items())
        lines.append(f"- {r['run']}: {groups}")
    areas = [r for r in rows if "from_areas" in r]
    if areas:
        lines += ["", "Content from material areas, test bags (MAE pp / mean abs difference to the oracle pp; the oracle "
                  f"and every density refitted on the same {TRAIN_BAGS} train bags, so CANet's difference is not the "
                  "share table's). Heavy metals as one: the true areas with " + ", ".join(HEAVY_METALS)
                  + " counted as one material (no model). Material neck: CANet's neck shape trained on the true "
                  f"material fractions of every train patch over the run's frozen features ({NECK_EPOCHS} epochs), "
                  "its areas weighed as the oracle weighs the true ones.", "",
                  "| run | oracle | heavy metals as one | material neck on the features | material neck: area MAE pp "
                  "(per material) | CANet |", "|---|---|---|---|---|---|"]
        for r in areas:
            a = r["from_areas"]
            cells = {k: f"{a[k]['mae_pp']} / {a[k]['minus_oracle_pp']}" for k in
                     ("oracle", "heavy_as_one", "material_neck", "canet")}
            lines.append(f"| {r['run']} | {cells['oracle']} | {cells['heavy_as_one']} | {cells['material_neck']} | "
                         f"{a['material_neck_area_mae_pp']} | {cells['canet']} |")
    return "\n".join(lines + [""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_", nargs="*", metavar="RUN", help="CANet run folders under --runs")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "bench_canet",
                        help="the run folder of canet_synthetic.py")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report", action="store_true", help="only rebuild the markdown from the JSON")
    args = parser.parse_args()
    if args.report:
        write_section(MARKDOWN, "canet_probe", markdown(json.loads(PROBE_JSON.read_text())), header=HEADER)
        return
    if not args.runs_:
        parser.error("name at least one CANet run (a folder under --runs), or --report")
    torch.set_num_threads(args.threads)
    started, t0, host = now(), time.time(), machine()
    command = "python benchmarks/canet_probe.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    try:
        models = load_runs(args.runs, args.runs_)
    except ScrapvisionError as exc:
        raise SystemExit(f"canet_probe: {exc}") from None
    task = next(iter(models.values()))[0]
    cfg = task.cfg
    spec, n = task._spec(), cfg.data.images_per_sample
    if spec.image_size != cfg.model.img_size:
        raise SystemExit(f"canet_probe: render size {spec.image_size} differs from model.img_size "
                         f"{cfg.model.img_size}; the material maps would need resizing")
    names = ["tray", *(m.name for m in materials(spec.impurity_types))]
    train = render(spec, cfg.data.synthetic_seed, "train", min(TRAIN_BAGS, cfg.data.synthetic_train), n)
    test = render(spec, cfg.data.synthetic_seed, "test", FULL["test"], n)
    rows = [probe_run(name, model, train, test, names)
            for name, (_, model) in models.items()]
    records = record_runs(PROBE_JSON, rows, command, started, time.time() - t0, host, n)
    write_section(MARKDOWN, "canet_probe", markdown(records), header=HEADER)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
