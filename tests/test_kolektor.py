"""KolektorSDD reader and its split: tiny written layouts, plus the real data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scrapvision.config import load_config
from scrapvision.data.kolektor import kolektor_folds, list_kolektor, read_kolektor_mask
from scrapvision.errors import DataError
from scrapvision.heads.clip_anomaly import ClipAnomalyConfig, ClipAnomalyTask
from scrapvision.heads.clip_anomaly_parts.data import kolektor_sets
from scrapvision.heads.segdec import SegDecConfig, SegDecTask
from tests.conftest import real_dataset


def _write_item(root: Path, item: str, part: int, defect: bool, suffix: str = ".png", palette: bool = False) -> None:
    folder = root / item
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 16), 90, np.uint8)).save(folder / f"Part{part}.jpg")
    mask = np.zeros((40, 16), np.uint8)
    if defect:
        mask[10:20, 5:7] = 1 if palette else 255
    img = Image.fromarray(mask, mode="L")
    if palette:
        img = img.convert("P")
        img.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    img.save(folder / f"Part{part}_label{suffix}")


def test_list_reads_bmp_png_and_palette_masks(tmp_path: Path) -> None:
    _write_item(tmp_path, "kos01", 0, False, ".bmp")
    _write_item(tmp_path, "kos01", 1, True, ".bmp")
    _write_item(tmp_path, "kos02", 10, True, ".png", palette=True)
    _write_item(tmp_path, "kos02", 2, False, ".png")
    items = list_kolektor(tmp_path)
    assert [(i.item, i.part, i.defective) for i in items] == [
        ("kos01", "Part0", False), ("kos01", "Part1", True), ("kos02", "Part2", False), ("kos02", "Part10", True)]
    mask = read_kolektor_mask(items[3].mask)  # palette index 1 must count as defect
    assert mask.dtype == bool and mask.sum() == 20


def test_missing_mask_is_one_line_error(tmp_path: Path) -> None:
    _write_item(tmp_path, "kos01", 0, False)
    (tmp_path / "kos01" / "Part0_label.png").unlink()
    with pytest.raises(DataError, match="Part0.jpg: no mask") as info:
        list_kolektor(tmp_path)
    assert "\n" not in str(info.value)
    assert list_kolektor(tmp_path, require_masks=False)[0].mask is None


def _three_items(root: Path) -> Path:
    for n in range(1, 4):
        _write_item(root, f"kos{n:02d}", 0, defect=n == 1)
        _write_item(root, f"kos{n:02d}", 1, defect=False)
    return root / "kos02" / "Part1_label.png"


def test_mask_of_another_size_names_the_mask_and_both_sizes(tmp_path: Path) -> None:
    mask = _three_items(tmp_path)
    Image.fromarray(np.zeros((30, 16), np.uint8)).save(mask)
    with pytest.raises(DataError) as info:
        list_kolektor(tmp_path)
    message = str(info.value)
    assert f"{mask}: size 16x30 differs from its image Part1.jpg 16x40" in message and "\n" not in message


def test_colour_mask_is_refused_and_grey_stored_as_rgb_is_read(tmp_path: Path) -> None:
    mask = _three_items(tmp_path)
    grey = np.zeros((40, 16), np.uint8)
    grey[5:9, 3:6] = 255
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(mask)  # grey re-saved as RGB: accepted
    item = next(i for i in list_kolektor(tmp_path) if i.mask == mask)
    assert item.defective and read_kolektor_mask(mask).sum() == 12
    red = np.zeros((40, 16, 3), np.uint8)
    red[5:9, 3:6] = (255, 0, 0)
    Image.fromarray(red).save(mask)
    with pytest.raises(DataError, match=f"{mask}: mode RGB has colour pixels") as info:
        list_kolektor(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="colour"):
        read_kolektor_mask(mask)  # also without its image, e.g. for segdec's prediction metrics


@pytest.mark.parametrize("head", ["segdec", "clip_anomaly"])
@pytest.mark.parametrize("bad", ["size", "colour"])
def test_both_heads_refuse_a_bad_kolektor_mask(tmp_path: Path, head: str, bad: str) -> None:
    mask = _three_items(tmp_path)
    if bad == "size":
        Image.fromarray(np.zeros((20, 16), np.uint8)).save(mask)
    else:
        Image.fromarray(np.full((40, 16, 3), (0, 0, 200), np.uint8)).save(mask)
    with pytest.raises(DataError, match="Part1_label.png: .*(differs|colour)"):
        if head == "segdec":
            SegDecTask(load_config(SegDecConfig, None, [f"data.root={tmp_path}"])).all_samples()
        else:
            kolektor_sets(str(tmp_path), (32, 16), fold=0, n_folds=3, val_fraction=0.2, split_seed=0, aug_seed=0)


def test_folds_group_items_and_duplicates(tmp_path: Path) -> None:
    for n in range(1, 35):
        for part in range(3):
            _write_item(tmp_path, f"kos{n:02d}", part, defect=part == 0 and n % 3 == 0)
    items = list_kolektor(tmp_path)
    folds = kolektor_folds(items, n_folds=3, seed=0)
    by_item: dict[str, set[int]] = {}
    for item, fold in zip(items, folds):
        by_item.setdefault(item.item, set()).add(fold)
    assert all(len(f) == 1 for f in by_item.values())
    assert by_item["kos01"] == by_item["kos26"] and by_item["kos27"] == by_item["kos34"]
    pos = [sum(i.defective for i, f in zip(items, folds) if f == k) for k in range(3)]
    assert max(pos) - min(pos) <= 1
    assert kolektor_folds(items, seed=0) == folds
    assert kolektor_folds(items, seed=1) != folds


@pytest.mark.parametrize("fold", [0, 2])
def test_clip_anomaly_kolektor_validates_on_training_folds_as_segdec(tmp_path: Path, fold: int) -> None:
    """The test fold is only scored: validation comes out of the training folds, the very split segdec uses."""
    for n in range(1, 16):
        for part in range(3):
            _write_item(tmp_path, f"kos{n:02d}", part, defect=part == 0 and n % 3 == 0)
    common = [f"data.root={tmp_path}", f"data.fold={fold}", "data.val_fraction=0.2"]
    clip = ClipAnomalyTask(load_config(ClipAnomalyConfig, None, [*common, "data.format=kolektor",
                                                                 "model.image_size=[32,16]"]))
    train, val = clip.build_datasets()
    test = clip.build_eval_dataset()
    items = {name: {n.split("_")[0] for n in part.names} for name, part in (("train", train), ("val", val), ("test", test))}
    assert val.names and not items["val"] & items["test"] and not items["train"] & (items["val"] | items["test"])
    segdec_parts = SegDecTask(load_config(SegDecConfig, None, common)).split()
    assert [part.names for part in (train, val, test)] == \
        [[s.name.replace("/", "_") for s in part] for part in segdec_parts]


def test_clip_anomaly_reads_kolektor_converted_to_the_folder_layout_as_natively(tmp_path: Path) -> None:
    """benchmarks/kolektor_to_folder.py keeps clip_anomaly's folds, validation split, order and pixels."""
    from benchmarks.kolektor_to_folder import convert

    for n in range(1, 16):
        for part in range(3):
            _write_item(tmp_path / "native", f"kos{n:02d}", part, defect=part == 0 and n % 3 == 0)
    folder = convert(tmp_path / "native", tmp_path / "folder")
    parts = {}
    for layout, root in (("kolektor", tmp_path / "native"), ("folder", folder)):
        task = ClipAnomalyTask(load_config(ClipAnomalyConfig, None, [f"data.root={root}", f"data.format={layout}",
                                                                     "data.fold=1", "model.image_size=[40,16]"]))
        parts[layout] = (*task.build_datasets(), task.build_eval_dataset())
    for native, layout in zip(parts["kolektor"], parts["folder"]):
        assert native.names == [n.replace("/", "_") for n in layout.names]
        assert native.anomalous() == layout.anomalous()
        for i in range(len(native)):
            assert all(np.array_equal(a, b) for a, b in zip(native.raw(i), layout.raw(i)))


@pytest.mark.realdata
def test_real_kolektorsdd_counts_and_folds() -> None:
    root = real_dataset("kolektorsdd")
    items = list_kolektor(root)
    assert len(items) == 399 and sum(i.defective for i in items) == 52
    folds = kolektor_folds(items)
    item_fold = {i.item: f for i, f in zip(items, folds)}
    assert item_fold["kos01"] == item_fold["kos26"] and item_fold["kos27"] == item_fold["kos34"]
    assert sorted(set(folds)) == [0, 1, 2]
    pos = [sum(i.defective for i, f in zip(items, folds) if f == k) for k in range(3)]
    assert max(pos) - min(pos) <= 2  # stratified: about a third of the 52 defective images each
