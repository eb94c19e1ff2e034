"""`python -m benchmarks` regenerates what RESULTS.md shows, and a quick run never replaces recorded numbers."""

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from scrapvision.data.rle import rle_encode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the scripts import their helpers as top-level modules

from benchmarks import plan  # noqa: E402

RESULTS_MD = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")


def test_full_mode_reruns_every_recorded_row():
    recorded = plan.recorded(RESULTS_MD)
    assert any("--seed 1" in c for c in recorded) and any("--height 704" in c for c in recorded)  # the parser sees them
    assert plan.kept(RESULTS_MD, "full") == []


def test_quick_mode_reruns_only_recorded_commands():
    """A quick-mode command that RESULTS.md does not record (a smoke setting) would overwrite recorded rows."""
    recorded = plan.recorded(RESULTS_MD)
    assert [c for c in plan.commands("quick") if plan.normalise(c) not in recorded] == []


def test_commands_split_across_processes_name_one_run():
    assert plan.normalise("python benchmarks/segdec_kolektor.py --modes full --folds 0,1 --height 704") == \
        plan.normalise("benchmarks/segdec_kolektor.py --modes full --height 704")
    # --threads changes how a process runs, not what it records
    assert plan.normalise("benchmarks/canet_synthetic.py --only main --threads 1") == "benchmarks/canet_synthetic.py"


def test_rle_quick_run_leaves_recorded_results_alone(tmp_path, monkeypatch):
    import rle_speed

    recorded = REPO / "benchmarks" / "results"
    for name in ("severstal.md", "severstal_rle_speed.json"):
        shutil.copy(recorded / name, tmp_path / name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(rle_speed, "RESULTS", tmp_path)
    monkeypatch.setattr(rle_speed, "SHAPE", (32, 200))  # small masks: the pure-Python reference is slow
    masks = np.zeros((30, 32, 200), dtype=np.uint8)
    for i, mask in enumerate(masks):
        mask[i : i + 2, 5 * i : 5 * i + 9] = 1
    strings = [(f"img{i}", rle_encode(m)) for i, m in enumerate(masks)]
    monkeypatch.setattr(rle_speed, "load_strings", lambda: (strings, "test masks"))
    rle_speed.main(["--quick", "--repeat", "1"])
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert json.loads((tmp_path / "severstal_rle_speed_quick.json").read_text())["n_masks_timed"] == 20


def test_write_section_replaces_only_its_block(tmp_path):
    from bench_env import write_section

    path = tmp_path / "head.md"
    path.write_text("# head\n\nhand-written notes\n\n<!-- a -->\nold a\n<!-- /a -->\n\n<!-- b -->\nold b\n<!-- /b -->\n")
    write_section(path, "a", "## new a\nrows\n")
    write_section(path, "c", "new c")
    assert path.read_text() == ("# head\n\nhand-written notes\n\n<!-- a -->\n## new a\nrows\n<!-- /a -->\n\n"
                                "<!-- b -->\nold b\n<!-- /b -->\n\n<!-- c -->\nnew c\n<!-- /c -->\n")
    assert write_section(path, "b", "smoke") == path and "smoke" in path.read_text()
    assert write_section(path, "b", "quick smoke", quick=True).name == "head_quick.md"
    assert "quick smoke" not in path.read_text()


def test_readme_speed_range_is_the_recorded_one():
    """README quotes the range of ONNX Runtime / eager throughput over the heads that speed.json recorded
    (at batch 8; speed.py also records batch 1)."""
    engine = "onnx"
    record = json.loads((REPO / "benchmarks" / "results" / "speed.json").read_text())
    rate = {(r["head"], r["engine"]): r["items_per_s"] for r in record["results"] if r.get("batch", 8) == 8}
    ratios = [rate[head, engine] / rate[head, "eager"] for head, e in rate if e == "eager"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    quoted = re.search(rf"`--engine {engine}`.*?measured ([\d.]+)-([\d.]+)x", readme, re.S)
    assert quoted, "README no longer quotes the measured speed-up"
    assert quoted.groups() == (f"{min(ratios):.2f}", f"{max(ratios):.2f}")


def test_canet_rows_survive_a_config_key_added_since_they_were_recorded(tmp_path):
    from canet_synthetic import FULL, merge_reports

    recipe = {"model": {"num_classes": 10}, "optim": {"lr": 0.003}, "loss": {}, "render_size": 96, "batch_size": 8}
    sizes = dict(FULL)
    old = {"recipe": recipe, "sizes": sizes, "canet": {"test": 1.87},
           "runs": [{"command": "old", "parts": ["main"]}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(old))
    grown = {**recipe, "optim": {"lr": 0.003, "backbone_lr_scale": 1.0}}  # a key the code gained later
    merged = merge_reports(path, {"recipe": grown, "sizes": sizes, "canet_ema": {"test": 1.86},
                                  "runs": [{"command": "new", "parts": ["ema"]}]})
    assert merged["canet"] == {"test": 1.87} and merged["canet_ema"] == {"test": 1.86}
    assert [r["command"] for r in merged["runs"]] == ["old", "new"]
    changed = {**recipe, "optim": {"lr": 0.001}}  # a recorded value that differs: the rows start over
    assert "canet" not in merge_reports(path, {"recipe": changed, "sizes": sizes, "runs": [{"command": "x", "parts": ["ema"]}]})


def test_mask_only_rows_of_another_seed_join_the_recorded_ones(tmp_path):
    """A second training seed of `canet_synthetic.py --only mask_only` adds its rows beside seed 0's, although
    the config has gained keys since (train.ema_decay); a recorded value that differs starts the record over.
    The table then shows both seeds and their mean."""
    from canet_report import mask_only_markdown
    from canet_synthetic import recorded_mask_only

    recipe = {"train": {"seed": 0, "epochs": 100}, "optim": {"lr": 0.003}}
    sizes = {"train": 640, "val": 32, "test": 100, "stirs": 8, "data_steps": 1600, "mask_only_bags": [40]}
    row = {"test": {"content_mae_pp": 4.7, "content_rmse_pp": 6.0, "area_mae_pp": 1.3},
           "test_fresh": {"content_mae_pp": 4.4}, "train_wall_s": 600, "assayed": 40, "mask_only": 600}
    old = {"sizes": sizes, "fresh_seed": 1, "recipe": recipe, "suffix": "", "rows": {"mask_only assayed=40": row},
           "runs": [{"command": "old", "commit": "a", "started": "t", "machine": "m"}]}
    path = tmp_path / "mask_only.json"
    path.write_text(json.dumps(old))
    grown = {"train": {"seed": 0, "epochs": 100, "ema_decay": 0.0}, "optim": {"lr": 0.003}}
    report = recorded_mask_only(path, {**old, "recipe": grown, "rows": {}, "runs": []})
    assert report["rows"] == old["rows"] and report["recipe"] == grown
    report["rows"]["mask_only assayed=40 seed=1"] = {**row, "seed": 1, "test": {**row["test"], "content_mae_pp": 4.5},
                                                     "test_fresh": {"content_mae_pp": 4.0}}
    table = mask_only_markdown(report)
    assert "| 40 | 600 | CANet, assayed + mask-only bags | 0, 1 | 4.60 / 4.20 | 4.70 / 4.40, 4.50 / 4.00 |" in table
    changed = {"train": {"seed": 0, "epochs": 50}, "optim": {"lr": 0.003}}
    assert recorded_mask_only(path, {**old, "recipe": changed, "rows": {}})["rows"] == {}


def test_every_benchmark_script_parses_its_arguments_before_it_runs():
    """`python benchmarks/X.py --help` must print help, not start a run that overwrites recorded results (the
    real-sample CV once ran for minutes on --help and replaced its section)."""
    import ast

    for path in sorted((REPO / "benchmarks").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        runnable = any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)
        if not runnable:
            continue
        calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        # parse_args itself, or a shared helper that builds the parser (layout_writer.converter_parser)
        assert any("parse" in call for call in calls), f"{path.name}: runs without parsing its arguments"


def test_probe_rows_of_several_folds_are_pooled_per_recipe():
    """pretrain_probe --fold K: a recipe scored on several folds' validation photos gets one pooled row, the mean
    of its per-fold means (each over seeds); rows of one fold only are not pooled."""
    from benchmarks.pretrain_probe import markdown

    spec = "probe:180:data.image_size=288:{}"
    rows = [{"spec": spec.format(0), "last": 40.0, "best": 40.0, "mean_last5": 40.0, "seconds": 1},
            {"spec": spec.format(1), "last": 44.0, "best": 44.0, "mean_last5": 44.0, "seconds": 1},
            {"spec": spec.format(0), "fold": 2, "last": 51.0, "best": 51.0, "mean_last5": 51.0, "seconds": 1},
            {"spec": "probe:160::0", "last": 30.0, "best": 30.0, "mean_last5": 30.0, "seconds": 1}]
    text = markdown({"runs": [], "linear": [], "finetune": rows})
    pooled = [line for line in text.splitlines() if line.startswith("| probe | 180 | data.image_size=288 | 0,2 |")]
    assert pooled == ["| probe | 180 | data.image_size=288 | 0,2 | 3 | **46.5** | 42.0 / 51.0 |"]
    assert "| probe | 180 (fold 2) | data.image_size=288 | 0 | 51.0 |" in text
    assert not any(line.startswith("| probe | 160 | - | 0 |") and "**" in line for line in text.splitlines())


def test_tagged_probe_rows_stay_apart_from_untagged_ones_and_linear_rows_pool_over_folds():
    """pretrain_probe --tag: rows of a repeated pretraining (another backbone under the same name) are shown and
    pooled apart from the earlier ones; frozen-feature rows of several folds get one row of per-score means."""
    from benchmarks.pretrain_probe import markdown

    scores = {"logreg C=0.1": 40.0, "kNN k=5": 30.0}
    linear = [{"backbone": "180", "size": 352, "features": "stages 2-4", **scores},
              {"backbone": "180", "size": 352, "features": "stages 2-4", "fold": 1, "logreg C=0.1": 50.0, "kNN k=5": 34.0},
              {"backbone": "180", "size": "224+352", "features": "stages 2-4", "tag": "new", **scores}]
    spec = "probe:180:data.image_size=352:0"
    tuned = [{"spec": spec, "last": 40.0, "best": 40.0, "mean_last5": 40.0, "seconds": 1},
             {"spec": spec, "fold": 1, "last": 50.0, "best": 50.0, "mean_last5": 50.0, "seconds": 1},
             {"spec": spec, "tag": "new", "last": 60.0, "best": 60.0, "mean_last5": 60.0, "seconds": 1},
             {"spec": spec, "fold": 1, "tag": "new", "last": 70.0, "best": 70.0, "mean_last5": 70.0, "seconds": 1}]
    lines = markdown({"runs": [], "linear": linear, "finetune": tuned}).splitlines()
    assert "| 180 | 352 | stages 2-4 | 0,1 | 45.0 | 32.0 |" in lines
    assert "| 180 [new] | 224+352 | stages 2-4 | 40.0 | 30.0 |" in lines
    assert "| probe | 180 | data.image_size=352 | 0,1 | 2 | **45.0** | 40.0 / 50.0 |" in lines
    assert "| probe | 180 [new] | data.image_size=352 | 0,1 | 2 | **65.0** | 60.0 / 70.0 |" in lines


def test_canet_probe_pairs_each_token_with_the_pixels_of_its_patch():
    """canet_probe.py pairs each ViT token with the pixels of its patch (row-major, as a feature map flattens):
    a wrong pairing would make its material probes meaningless."""
    import torch
    from canet_probe import tiles

    grid, p = 3, 2
    labels = np.arange(2 * grid * grid).reshape(2, grid, grid)  # photo n, patch row, patch column
    image = np.repeat(np.repeat(labels, p, axis=1), p, axis=2)  # [2, 6, 6]: each patch filled with its label
    flat_features = torch.from_numpy(labels).float()[:, None].flatten(2).transpose(1, 2).reshape(-1)
    patches = tiles(image, grid)
    assert patches.shape == (2 * grid * grid, p * p)
    np.testing.assert_array_equal(patches[:, 0], flat_features.numpy())
    assert (patches == patches[:, :1]).all()


def test_canet_probe_area_densities_recover_a_known_mixture_and_merge_materials():
    """canet_probe.py weighs material areas as the oracle does: on bags whose contents follow known densities the
    fit gives those densities back and the contents to the digit; merging materials sums their areas into one."""
    from canet_probe import copper_and_others, merge_columns, weighed_contents
    from canet_synthetic import fit_densities

    rng = np.random.default_rng(0)
    names = ["tray", "copper", "brass", "iron", "solder", "wood"]
    areas = rng.dirichlet(np.ones(len(names)), size=200)
    densities = np.array([0.0, 8.96, 9.7, 6.3, 9.8, 0.2])
    contents = 8.96 * areas[:, 1] / (areas @ densities)
    fitted = fit_densities(*copper_and_others(areas), contents, 8.96)
    np.testing.assert_allclose(fitted, np.delete(densities, 1), atol=1e-6)
    np.testing.assert_allclose(weighed_contents(areas, contents, areas, 8.96), contents, atol=1e-9)
    merged = merge_columns(areas, names, ("brass", "iron", "solder"))
    np.testing.assert_allclose(merged[:, 2], areas[:, 2:5].sum(1))
    assert (merged[:, 3:5] == 0).all() and np.allclose(merged.sum(1), 1)
    np.testing.assert_array_equal(merged[:, [0, 1, 5]], areas[:, [0, 1, 5]])
    # one density for three: the contents no longer fit exactly
    assert np.abs(weighed_contents(merged, contents, merged, 8.96) - contents).mean() > 1e-3


def test_canet_errors_splits_a_content_into_copper_area_and_impurity_mass(smoke, one_thread):
    """canet_errors.py's share split reads CANet's copper area and impurity mass per unit area from its outputs:
    the two must give back the content CANet reports (so swapping either for the oracle's isolates that part)."""
    from canet_errors import predict_parts

    from scrapvision.data.synthetic.copper_granules import render_split

    task, model, _ = smoke("canet")
    split = render_split(task._spec(), 0, "test", 3, task.cfg.model.img_size)
    content, copper, impurity = predict_parts(task, model, split, 2)
    rho = task.cfg.model.copper_density
    assert content.shape == copper.shape == impurity.shape == (3,)
    assert ((copper > 0) & (copper < 1) & (impurity > 0)).all()
    np.testing.assert_allclose(content, rho * copper / (rho * copper + impurity), rtol=1e-5)
