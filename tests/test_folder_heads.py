"""Each defect head trains and scores on the generic folder layout; `data check` says yes or lists problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scrapvision.api import get_task_class
from scrapvision.cli import main

FOLDER_HEADS = ("severstal", "clip_anomaly", "segdec")


def make_defect_folder(root: Path, n: int = 16, size: tuple[int, int] = (96, 48)) -> Path:
    """Grey parts with a bright scratch (class 1 or 2) on every other image, in eight coils."""
    rng = np.random.default_rng(0)
    rows = ["image,label,group"]
    for i in range(n):
        width, height = size
        image = rng.integers(60, 90, (height, width), dtype=np.uint8)
        name = f"coil{i % 8}/img{i:02d}"
        label = 0
        if i % 2:
            label = 1 + (i // 2) % 2
            mask = np.zeros((height, width), np.uint8)
            y = 8 + (i * 5) % (height - 16)
            mask[y:y + 6, 10:70] = label
            image[mask > 0] = 230
            (root / "masks" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        rows.append(f"{name}.png,{label},coil{i % 8}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _overrides(name: str) -> list[str]:
    extra = {"clip_anomaly": ["data.n_folds=2", "data.val_fraction=0.34"],  # the format is picked by itself
             "segdec": ["data.n_folds=2", "data.val_fraction=0.34"],
             "severstal": ["data.val_fraction=0.34"]}[name]
    return [arg for o in (*get_task_class(name).smoke_overrides, "train.epochs=1", *extra) for arg in ("--set", o)]


@pytest.mark.slow
@pytest.mark.parametrize("name", FOLDER_HEADS)
def test_head_trains_and_evaluates_on_the_folder_layout(name, tmp_path, one_thread, capsys):
    data = make_defect_folder(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["data", "check", "--task", name, "--data", str(data), *_overrides(name)]) == 0
    out = capsys.readouterr().out
    assert "images: 16 readable" in out and "defective: 8 (50.0 %)" in out and "usable: yes" in out
    assert main(["train", "--task", name, "--data", str(data), "--out", str(run), *_overrides(name)]) == 0
    capsys.readouterr()
    assert main(["eval", "--task", name, "--data", str(data), "--checkpoint", str(run / "last.pt"),
                 *_overrides(name)]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("name", FOLDER_HEADS)
def test_data_check_lists_every_problem_and_exits_2(name, tmp_path, capsys):
    data = make_defect_folder(tmp_path / "data")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "masks" / "coil1" / "img01.png")  # wrong size
    Image.fromarray(np.ones((48, 96), np.uint8)).save(data / "masks" / "orphan.png")  # no image
    assert main(["data", "check", "--task", name, "--data", str(data), *_overrides(name)]) == 2
    err = capsys.readouterr().err
    assert "img01.png: size 10x10 differs" in err and "orphan.png: no image" in err


@pytest.mark.parametrize("name", FOLDER_HEADS)
def test_training_on_a_broken_folder_is_one_line_naming_the_file(name, tmp_path, capsys):
    data = make_defect_folder(tmp_path / "data")
    Image.fromarray(np.ones((48, 90), np.uint8)).save(data / "masks" / "coil1" / "img01.png")
    code = main(["train", "--task", name, "--data", str(data), "--out", str(tmp_path / "run"), *_overrides(name)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "img01.png" in err, err


def test_data_check_writes_a_contact_sheet(tmp_path, capsys):
    data = make_defect_folder(tmp_path / "data")
    sheet = tmp_path / "sheet.png"
    assert main(["data", "check", "--task", "severstal", "--data", str(data), "--sheet", str(sheet)]) == 0
    image = np.asarray(Image.open(sheet).convert("RGB"))
    assert image.shape[0] > 100 and (image[..., 0] > 200).any()


@pytest.mark.slow
@pytest.mark.parametrize("name", ("segdec", "clip_anomaly"))
def test_eval_of_another_folder_scores_all_of_it_and_of_the_training_folder_its_held_out_fold(
        name, tmp_path, one_thread, capsys, monkeypatch):
    data = make_defect_folder(tmp_path / "data")
    other = make_defect_folder(tmp_path / "other")  # a second folder, as a held-out set would be
    run = tmp_path / "run"
    assert main(["train", "--task", name, "--data", str(data), "--out", str(run), *_overrides(name)]) == 0
    scored = []
    evaluate = get_task_class(name).evaluate

    def counting(self, model, loader):
        scored.append(len(loader.dataset))
        return evaluate(self, model, loader)

    monkeypatch.setattr(get_task_class(name), "evaluate", counting)
    capsys.readouterr()
    for folder, split in ((data, "auto"), (other, "auto"), (other, "held-out"), (data, "all")):
        assert main(["eval", "--task", name, "--data", str(folder), "--checkpoint", str(run / "last.pt"),
                     "--split", split, "--engine", "torch", *_overrides(name)]) == 0
    held_out = scored[0]
    assert 0 < held_out < 16 and scored == [held_out, 16, held_out, 16]
    err = capsys.readouterr().err
    assert err.count("is not the folder the checkpoint was trained on") == 1 and str(other) in err
    # every image as the test set is for eval only
    assert main(["train", "--task", name, "--data", str(data), "--out", str(tmp_path / "again"),
                 *_overrides(name), "--set", "data.fold=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.fold" in err[0] and "not for training" in err[0], err


def test_eval_split_all_of_a_head_without_that_mode_is_one_line(tmp_path, capsys):
    assert main(["eval", "--task", "canet", "--checkpoint", str(tmp_path / "missing.pt"), "--split", "all"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--split all" in err[0] and "canet" in err[0], err
