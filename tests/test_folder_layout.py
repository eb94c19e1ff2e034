"""The generic images/ + masks/ layout and MVTec AD: good folders read, every broken one names its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scrapvision.data.folder import read_folder_mask, read_layout, scan_layout
from scrapvision.errors import DataError


def _image(path: Path, size=(24, 16), value=100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)


def _mask(path: Path, size=(24, 16), value=1, box=(2, 2, 8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((size[1], size[0]), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = value
    Image.fromarray(m).save(path)


def make_folder(root: Path) -> Path:
    """4 images: a class-1 mask, a binary 0/255 mask in a sub-folder, a defect-free one, a weak label."""
    for name in ["a", "line2/b", "c", "d"]:
        _image(root / "images" / f"{name}.png")
    _mask(root / "masks" / "a.png", value=1)
    _mask(root / "masks" / "line2" / "b.png", value=255)
    (root / "labels.csv").write_text("image,label,group\na.png,1,coil1\nline2/b.png,1,coil1\nc.png,0,coil2\n"
                                     "d.png,2,coil3\n")
    return root


def test_folder_layout_reads_classes_groups_and_weak_labels(tmp_path):
    scan = read_layout(make_folder(tmp_path), num_classes=3)
    by_name = {it.name: it for it in scan.items}
    assert sorted(by_name) == ["a", "c", "d", "line2/b"]
    assert [it.name for it in scan.items] == ["a", "c", "d", "line2/b"]
    assert by_name["a"].label == 1 and by_name["a"].pixel_labelled and by_name["a"].group == "coil1"
    assert by_name["line2/b"].mask == tmp_path / "masks" / "line2" / "b.png"
    assert by_name["c"].label == 0 and by_name["c"].mask is None and by_name["c"].pixel_labelled
    assert by_name["d"].label == 2 and not by_name["d"].pixel_labelled  # label without mask: weak
    binary = read_folder_mask(tmp_path / "masks" / "line2" / "b.png")
    assert set(np.unique(binary).tolist()) == {0, 1}


def test_no_labels_csv_means_mask_decides(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "labels.csv").unlink()
    scan = read_layout(tmp_path)
    labels = {it.name: it.label for it in scan.items}
    assert labels == {"a": 1, "line2/b": 1, "c": 0, "d": 0}
    assert {it.group for it in scan.items} == {"a", "line2/b", "c", "d"}


@pytest.mark.parametrize("breakage, named", [
    (lambda r: _mask(r / "masks" / "a.png", size=(20, 16)), "a.png: size 20x16 differs"),
    (lambda r: _mask(r / "masks" / "ghost.png"), "ghost.png: no image"),
    (lambda r: _mask(r / "masks" / "a.png", value=7), "a.png: values [7] are not classes"),
    (lambda r: _image(r / "images" / "c.jpg"), "listed twice"),
    (lambda r: (r / "labels.csv").write_text("image,label\na.png,1\na.png,1\n"), "row 3: image 'a.png' is listed twice"),
    (lambda r: (r / "labels.csv").write_text("image,label\nzzz.png,1\n"), "row 2: image 'zzz.png' is not under"),
    (lambda r: (r / "labels.csv").write_text("image,label\nc.png,1\na.png,0\n"), "label 0 but its mask a.png"),
    (lambda r: (r / "labels.csv").write_text("image,label\nc.png,bad\n"), "label 'bad' is not a whole number"),
    (lambda r: (r / "labels.csv").write_text("image,lab\nc.png,1\n"), "missing column(s) label"),
])
def test_broken_folder_is_one_line_naming_the_file(tmp_path, breakage, named):
    make_folder(tmp_path)
    breakage(tmp_path)
    with pytest.raises(DataError) as info:
        read_layout(tmp_path, num_classes=3)
    assert named in str(info.value) and "\n" not in str(info.value)


def test_scan_collects_every_problem(tmp_path):
    make_folder(tmp_path)
    _mask(tmp_path / "masks" / "ghost.png")
    _mask(tmp_path / "masks" / "a.png", size=(20, 16))
    scan = scan_layout(tmp_path, num_classes=3)
    assert len(scan.problems) == 2 and len(scan.items) == 3


def make_mvtec(root: Path) -> Path:
    for i in range(3):
        _image(root / "train" / "good" / f"{i:03d}.png")
    _image(root / "test" / "good" / "000.png")
    for kind in ["scratch", "crack"]:
        _image(root / "test" / kind / "000.png")
        _mask(root / "ground_truth" / kind / "000_mask.png", value=255)
    return root


def test_mvtec_layout(tmp_path):
    scan = read_layout(make_mvtec(tmp_path))
    assert scan.class_names == ("good", "crack", "scratch")
    labels = {it.name: it.label for it in scan.items}
    assert labels["test/crack/000"] == 1 and labels["test/scratch/000"] == 2 and labels["test/good/000"] == 0
    assert sum(name.startswith("train/good/") for name in labels) == 3
    assert all(it.split == "" for it in scan.items)  # cross-validated: the official train half has no defect
    assert all(it.mask is not None for it in scan.items if it.label)


def test_mvtec_missing_mask_names_the_image(tmp_path):
    make_mvtec(tmp_path)
    (tmp_path / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(DataError, match=r"crack/000.png: no mask"):
        read_layout(tmp_path)


def test_images_are_listed_in_natural_order(tmp_path):
    for name in ["img10", "img2", "img1"]:
        _image(tmp_path / "images" / f"{name}.png")
    assert [it.name for it in read_layout(tmp_path).items] == ["img1", "img2", "img10"]
