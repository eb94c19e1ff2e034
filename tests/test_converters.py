"""benchmarks/dagm_to_folder.py and ksdd2_to_folder.py: generated folders in each published layout convert
into the generic layout that read_layout (and so every defect head) reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import dagm_to_folder, ksdd2_to_folder
from scrapvision.data.folder import read_folder_mask, read_layout
from scrapvision.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, array: np.ndarray, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def _texture(seed: int, shape=(40, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _dagm(root: Path) -> None:
    """Class1 and Class2, Train and Test: image 0002 of each is defective (a blob), 0001 is not."""
    for k, class_name in enumerate(("Class1", "Class2")):
        for j, part in enumerate(("Train", "Test")):
            folder = root / class_name / part
            rows = ["1"]
            for n in (1, 2):
                _png(folder / f"000{n}.PNG", _texture(10 * k + 2 * j + n))
                if n == 2:
                    mask = np.zeros((40, 48), np.uint8)
                    mask[5 + k: 15, 10: 20 + j] = 255
                    _png(folder / "Label" / f"000{n}_label.PNG", mask)
                    rows.append(f"{n}\t1\t000{n}.PNG\t0\t000{n}_label.PNG")
                else:
                    rows.append(f"{n}\t0\t000{n}.PNG\t0\t0")
            (folder / "Label" / "Labels.txt").write_text("\n".join(rows) + "\n")


def test_dagm_converts_into_the_folder_layout(tmp_path: Path) -> None:
    _dagm(tmp_path / "dagm")
    scan = read_layout(dagm_to_folder.convert(tmp_path / "dagm", tmp_path / "out"))
    items = {it.name: it for it in scan.items}
    assert sorted(items) == sorted(f"Class{k}/{p}/000{n}" for k in (1, 2) for p in ("Train", "Test") for n in (1, 2))
    assert {n for n, it in items.items() if it.label} == {n for n in items if n.endswith("0002")}
    assert {it.split for it in items.values()} == {"train", "test"} and items["Class2/Test/0001"].split == "test"
    mask = read_folder_mask(items["Class2/Test/0002"].mask)
    assert mask.sum() == (15 - 6) * (21 - 10) and mask[6, 10] == 1 and mask[5, 10] == 0
    original = np.asarray(Image.open(tmp_path / "dagm" / "Class1" / "Train" / "0001.PNG"))
    assert np.array_equal(np.asarray(Image.open(items["Class1/Train/0001"].image)), original)
    only = read_layout(dagm_to_folder.convert(tmp_path / "dagm", tmp_path / "one", classes=[2], split=False))
    assert len(only.items) == 4 and all(it.name.startswith("Class2/") and not it.split for it in only.items)


def test_dagm_with_a_missing_label_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    _dagm(tmp_path / "dagm")
    (tmp_path / "dagm" / "Class2" / "Test" / "Label" / "0002_label.PNG").unlink()
    with pytest.raises(DataError, match=r"Class2/Test/Label/0002_label\.PNG") as info:
        dagm_to_folder.convert(tmp_path / "dagm", tmp_path / "out")
    assert "\n" not in str(info.value)
    (tmp_path / "dagm" / "Class1" / "Train" / "Label" / "Labels.txt").write_text("1\n1\t0\t0001.PNG\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "dagm_to_folder.py"), str(tmp_path / "dagm"),
                           str(tmp_path / "cli")], capture_output=True, text=True)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Class1/Train/Label/Labels.txt, line 2" in done.stderr


def _ksdd2(root: Path) -> None:
    """train: 10000 defect-free, 10001 defective; test: 20000 defective. Colour images, as published."""
    for part, stems in (("train", (10000, 10001)), ("test", (20000,))):
        for stem in stems:
            _png(root / part / f"{stem}.png", np.stack([_texture(stem)] * 3, axis=-1), "RGB")
            truth = np.zeros((40, 48), np.uint8)
            if stem != 10000:
                truth[20:30, 3:9] = 255
            _png(root / part / f"{stem}_GT.png", truth)


def test_ksdd2_converts_into_the_folder_layout(tmp_path: Path) -> None:
    _ksdd2(tmp_path / "ksdd2")
    scan = read_layout(ksdd2_to_folder.convert(tmp_path / "ksdd2", tmp_path / "out"))
    items = {it.name: it for it in scan.items}
    assert sorted(items) == ["test/20000", "train/10000", "train/10001"]
    assert [items[n].label for n in ("train/10000", "train/10001", "test/20000")] == [0, 1, 1]
    assert items["train/10000"].mask is None and items["test/20000"].split == "test"
    assert read_folder_mask(items["train/10001"].mask).sum() == 60
    assert not (tmp_path / "out" / "images" / "train" / "10000_GT.png").exists()


def test_ksdd2_image_without_ground_truth_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    _ksdd2(tmp_path / "ksdd2")
    (tmp_path / "ksdd2" / "test" / "20000_GT.png").unlink()
    with pytest.raises(DataError, match=r"test/20000\.png: no ground truth 20000_GT\.png") as info:
        ksdd2_to_folder.convert(tmp_path / "ksdd2", tmp_path / "out")
    assert "\n" not in str(info.value)


def test_dagm_source_that_does_not_exist_is_one_line(tmp_path):
    from benchmarks.dagm_to_folder import convert

    with pytest.raises(DataError, match="folder not found"):
        convert(tmp_path / "missing", tmp_path / "out")


def _dagm_flat(root: Path) -> None:
    """A flat re-upload (class1/NNNN.PNG, class1/true_masks/NNNN_label.PNG, no Labels.txt): 0002 is masked."""
    for n in (1, 2, 3):
        _png(root / "class1" / f"000{n}.PNG", _texture(n))
    mask = np.zeros((40, 48), np.uint8)
    mask[4:9, 6:12] = 255
    _png(root / "class1" / "true_masks" / "0002_label.PNG", mask)


def test_dagm_flat_copy_asks_what_an_unmasked_image_is(tmp_path: Path) -> None:
    _dagm_flat(tmp_path / "flat")
    with pytest.raises(DataError, match=r"class1: no Labels.txt, so image 0001\.PNG .*--unmasked good") as info:
        dagm_to_folder.convert(tmp_path / "flat", tmp_path / "out")
    assert "\n" not in str(info.value)
    good = read_layout(dagm_to_folder.convert(tmp_path / "flat", tmp_path / "good", unmasked="good"))
    assert {it.name: it.label for it in good.items} == {"class1/0001": 0, "class1/0002": 1, "class1/0003": 0}
    assert read_folder_mask(next(it for it in good.items if it.label).mask).sum() == 5 * 6
    assert not any(it.split for it in good.items)
    skip = read_layout(dagm_to_folder.convert(tmp_path / "flat", tmp_path / "skip", classes=[1], unmasked="skip"))
    assert [it.name for it in skip.items] == ["class1/0002"]
