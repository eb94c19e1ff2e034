"""Self-supervised pretraining: every head loads the backbone it writes, a file of another backbone is
refused in one line, a resumed run writes the same backbone, and unlabeled folders follow the image
policies. Runs on a handful of generated images in a few seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import set_args
from scrapvision import TASKS
from scrapvision.api import build_task, train
from scrapvision.cli import main
from scrapvision.heads import load_all
from scrapvision.trainer import seed_everything

load_all()
SMOKE = list(TASKS.get("pretrain").smoke_overrides)
CNN = "tiny_cnn"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """backbone.safetensors of two short runs: a CNN (for four heads) and the CLIP tower (clip_anomaly)."""
    out = tmp_path_factory.mktemp("pretrain")
    runs = {CNN: [], "clip_scrap_tiny": ["model.backbone=clip_scrap_tiny"]}
    files = {}
    for name, extra in runs.items():
        result = train("pretrain", overrides=[*SMOKE, "train.epochs=2", *extra], run_dir=out / name)
        files[name] = result.run_dir / "backbone.safetensors"
    return files


#: head -> (overrides that put the pretrained backbone in it, which pretraining it loads)
HEAD_SETUPS = {
    "scrap_cls": ([f"model.backbone={CNN}"], CNN),
    "severstal": ([f"model.backbone={CNN}"], CNN),
    "segdec": ([f"model.backbone={CNN}", "model.in_chans=3"], CNN),  # in_chans=1 would sum the stem's RGB filters
    "canet": ([f"model.backbone={CNN}", "model.patch_size=0", "model.vit_depth=0"], CNN),
    "clip_anomaly": ([], "clip_scrap_tiny"),
}


def test_every_head_is_covered():
    assert set(HEAD_SETUPS) == set(TASKS.names()) - {"pretrain", "toy"}


@pytest.mark.parametrize("head", sorted(HEAD_SETUPS))
def test_every_head_loads_the_pretrained_backbone(head, pretrained, capsys):
    extra, source = HEAD_SETUPS[head]
    weights = pretrained[source]
    task = build_task(head, overrides=[*TASKS.get(head).smoke_overrides, *extra, f"model.weights={weights}"])
    model_state = task.build_model().state_dict()
    saved = load_file(str(weights))
    for key, tensor in saved.items():
        matches = [k for k in model_state if k == key or k.endswith(f".{key}")]
        assert len(matches) == 1, (key, matches)
        torch.testing.assert_close(model_state[matches[0]], tensor, rtol=0, atol=0, msg=key)
    assert f"loaded {len(saved)} of the backbone's" in capsys.readouterr().err


def test_square_clip_pretraining_loads_into_a_non_square_head(pretrained, capsys):
    """Pretraining crops are square; KolektorSDD's clip_anomaly runs at 200x80: the position grid is resampled
    to the head's (rows, cols), not refused as another architecture, and not transposed."""
    from timm.layers import resample_abs_pos_embed

    saved = load_file(str(pretrained["clip_scrap_tiny"]))  # 32 px crops, patch 8: a 4x4 grid
    task = build_task("clip_anomaly", overrides=[*TASKS.get("clip_anomaly").smoke_overrides, "model.image_size=[48,16]",
                                                 f"model.weights={pretrained['clip_scrap_tiny']}"])
    state = task.build_model().state_dict()
    key = "visual.positional_embedding"
    loaded = next(v for k, v in state.items() if k.endswith(key))
    expected = resample_abs_pos_embed(saved[key][None], (6, 2), num_prefix_tokens=1)[0]  # 48/8 rows, 16/8 columns
    torch.testing.assert_close(loaded, expected)
    conv = next(v for k, v in state.items() if k.endswith("visual.conv1.weight"))
    torch.testing.assert_close(conv, saved["visual.conv1.weight"], rtol=0, atol=0)
    assert f"loaded {len(saved)} of the backbone's" in capsys.readouterr().err


def test_run_folder_has_backbone_and_loss_plot(pretrained):
    run = pretrained[CNN].parent
    assert (run / "curves.png").stat().st_size > 1000
    last = torch.load(run / "last.pt", weights_only=True)["model"]
    saved = load_file(str(pretrained[CNN]))
    assert saved.keys() == {k.removeprefix("backbone.") for k in last if k.startswith("backbone.")}
    for key, tensor in saved.items():
        torch.testing.assert_close(last[f"backbone.{key}"], tensor, rtol=0, atol=0)


def test_probe_recipe_trains_scrap_cls_on_the_frozen_pretrained_backbone(pretrained, tmp_path):
    """tasks/scrap_cls-probe.yaml from the CLI: the trained checkpoint's backbone is, tensor for tensor (batch-norm
    statistics too), the pretrained file, and the probe's linear layer was fitted on its stages and the photo statistics."""
    recipe = Path(__file__).resolve().parents[1] / "tasks" / "scrap_cls-probe.yaml"
    overrides = [*TASKS.get("scrap_cls").smoke_overrides, f"model.backbone={CNN}", f"model.weights={pretrained[CNN]}",
                 "train.epochs=2", "data.image_size=48"]
    run = tmp_path / "probe"
    assert main(["train", "--task", "scrap_cls", "--config", str(recipe), "--out", str(run), *set_args(overrides)]) == 0
    state = torch.load(run / "last.pt", weights_only=True)["model"]
    saved = load_file(str(pretrained[CNN]))
    for key, tensor in saved.items():
        torch.testing.assert_close(state[f"backbone.{key}"], tensor, rtol=0, atol=0, msg=key)
    from scrapvision.models.image_stats import ColourTextureStats

    stats = ColourTextureStats(48, lbp=True).dim  # the recipe's model.image_stats with model.image_stats_lbp
    assert state["head.weight"].shape[1] == state["standardize.running_mean"].numel() == 24 + 32 + 48 + stats  # tiny_cnn stages 2-4
    task = build_task("scrap_cls", config=recipe, overrides=overrides)
    seed_everything(task.cfg.train.seed)  # as the Trainer does before build_model: the head as it started
    fresh = task.build_model().state_dict()
    assert not torch.equal(state["head.weight"], fresh["head.weight"]), "the probe's linear layer was not fitted"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scrapvision: error:"), err
    return err[0]


def test_file_of_another_backbone_is_one_line_exit_2(pretrained, tmp_path, capsys):
    overrides = [*TASKS.get("scrap_cls").smoke_overrides, f"model.weights={pretrained[CNN]}"]  # test_efficientnet
    assert main(["train", "--task", "scrap_cls", "--out", str(tmp_path / "run"), *set_args(overrides)]) == 2
    line = one_line_error(capsys)
    assert "backbone.safetensors: does not fit this backbone" in line
    assert "missing conv_stem.weight" in line and "stages.0.0.weight" in line, line


@pytest.mark.parametrize("method", [[], ["model.method=simmim", "model.backbone=clip_scrap_tiny", "data.mask_unit=8"]],
                         ids=["simclr", "simmim"])
def test_resume_after_an_interruption_writes_the_same_backbone(method, tmp_path, monkeypatch):
    overrides = [*SMOKE, "train.epochs=3", *method]
    straight = train("pretrain", overrides=overrides, run_dir=tmp_path / "straight")
    cls, healthy, calls = TASKS.get("pretrain"), TASKS.get("pretrain").compute_loss, []

    def interrupted_in_epoch_2(self, model, batch, progress):
        calls.append(progress)
        if progress > 1 / 3:
            raise KeyboardInterrupt
        return healthy(self, model, batch, progress)

    monkeypatch.setattr(cls, "compute_loss", interrupted_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train("pretrain", overrides=overrides, run_dir=tmp_path / "cut")
    monkeypatch.setattr(cls, "compute_loss", healthy)
    cut_after_1 = load_file(str(tmp_path / "cut" / "backbone.safetensors"))
    resumed = train("pretrain", resume=tmp_path / "cut")
    a = load_file(str(straight.run_dir / "backbone.safetensors"))
    b = load_file(str(resumed.run_dir / "backbone.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(cut_after_1[k], a[k]) for k in a)  # the cut run really stopped early


def write_images(folder: Path, n: int, bad: int = 0) -> Path:
    """``n`` readable photos in nested folders and in several formats, plus ``bad`` truncated JPEGs."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sub = folder / f"cam{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)).save(sub / f"p{i}.{['png', 'jpg', 'bmp'][i % 3]}")
    for i in range(bad):
        (folder / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


def test_several_folders_with_an_unreadable_file_are_skipped_and_counted(tmp_path, capsys):
    a, b = write_images(tmp_path / "a", 4, bad=1), write_images(tmp_path / "b", 3)
    task = build_task("pretrain", overrides=SMOKE, data=f"{a},{b}")
    train_set, val_set = task.build_datasets()
    assert len(train_set) + len(val_set) == 7
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and "broken0.jpg" in err
    view = train_set[0]
    assert view["view1"].shape == (3, 32, 32) and not torch.equal(view["view1"], view["view2"])


@pytest.mark.parametrize("case", ["empty", "only_unreadable", "missing"])
def test_folder_without_a_readable_image_is_one_line_exit_2(case, tmp_path, capsys):
    folder = tmp_path / case
    if case == "empty":
        folder.mkdir()
    elif case == "only_unreadable":
        write_images(folder, 0, bad=2)
    good = write_images(tmp_path / "good", 3)
    code = main(["train", "--task", "pretrain", "--data", f"{good},{folder}", "--out", str(tmp_path / "run"),
                 *set_args(SMOKE)])
    assert code == 2
    line = one_line_error(capsys)
    assert str(folder) in line, line
    assert {"empty": "holds no images", "only_unreadable": "none of its 2 image file(s) is readable",
            "missing": "not found"}[case] in line


def test_without_lightly_the_error_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import sys

    for name in [m for m in sys.modules if m == "lightly" or m.startswith("lightly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "lightly", None)  # import lightly -> ImportError
    assert main(["train", "--task", "pretrain", "--out", str(tmp_path / "run"), *set_args(SMOKE)]) == 2
    assert "pip install 'scrapvision[pretrain]'" in one_line_error(capsys)


def test_pretrain_subcommand_reads_several_folders_and_names_its_outputs(tmp_path, capsys):
    a, b = write_images(tmp_path / "a", 3), write_images(tmp_path / "b", 3)
    args = ["pretrain", "--data", f"{a},{b}", "--out", str(tmp_path / "run"), *set_args([*SMOKE, "train.epochs=1"])]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "run" / "backbone.safetensors") in out and "model.weights=" in out
    assert (tmp_path / "run" / "config.yaml").read_text().count(str(a)) == 1


def test_color_strength_zero_keeps_the_colours_of_both_views_and_bad_values_are_one_line(tmp_path, capsys):
    """data.color_strength scales SimCLR's colour jitter: at 0 the two views of a flat-coloured photo keep its
    colour (crops and flips cannot change it), at 1 they do not; outside [0, 5] is a one-line error."""
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), (200, 90 + 20 * i, 40), np.uint8)).save(folder / f"p{i}.png")
    spreads = {}
    for strength in (0.0, 1.0):
        task = build_task("pretrain", overrides=[*SMOKE, f"data.color_strength={strength}", "data.val_fraction=0"],
                          data=str(folder))
        train_set, _ = task.build_datasets()
        pair = train_set[0]
        # mean colour of one view against the other's (crops, flips and blur leave a flat image flat)
        spreads[strength] = float((pair["view1"].mean((1, 2)) - pair["view2"].mean((1, 2))).abs().max())
    assert spreads[0.0] < 1e-4 < 0.05 < spreads[1.0], spreads
    code = main(["train", "--task", "pretrain", "--data", str(folder), "--out", str(tmp_path / "run"),
                 *set_args([*SMOKE, "data.color_strength=-1"])])
    assert code == 2 and "data.color_strength" in one_line_error(capsys)
