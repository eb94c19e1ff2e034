"""clip_anomaly data and metrics: synthetic scenes, class-mask reader, IoU / AP / AUPRO, overlays, Kolektor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import average_precision_score

from conftest import real_dataset
from scrapvision.data.class_masks import list_class_mask_items, read_class_list, read_class_mask, read_item
from scrapvision.data.kolektor import list_kolektor
from scrapvision.data.synthetic.scrap_anomaly import SCRAP_CLASSES, make_scene, write_scrap_anomaly
from scrapvision.errors import DataError
from scrapvision.heads.clip_anomaly_parts.data import kolektor_sets, resize_pair
from scrapvision.heads.clip_anomaly_parts.metrics import SegAnomalyMeter, aupro, iou_per_class
from scrapvision.heads.clip_anomaly_parts.overlay import class_colours, save_overlay

pytestmark = pytest.mark.usefixtures("one_thread")


def test_synthetic_scenes_are_deterministic_and_labelled():
    a_img, a_mask = make_scene(3, 7, 96)
    b_img, b_mask = make_scene(3, 7, 96)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_mask, b_mask)
    assert not np.array_equal(make_scene(3, 8, 96)[0], a_img)
    masks, images = [], []
    for i in range(30):
        img, mask = make_scene(0, i, 64)
        images.append(img)
        masks.append(mask)
    masks, images = np.stack(masks), np.stack(images).astype(float)
    assert masks.max() < len(SCRAP_CLASSES)
    assert set(np.unique(masks)) == set(range(len(SCRAP_CLASSES)))  # every impurity occurs
    clean = np.mean([not m.any() for m in masks])
    assert 0.1 < clean < 0.45  # ~25 % scenes without impurity
    brightness = images.mean(-1)
    assert brightness[masks == 4].mean() < brightness[masks == 0].mean() - 25  # rubber is dark
    assert brightness[masks == 5].mean() > brightness[masks == 0].mean() + 40  # aluminium is bright


def test_class_mask_reader_round_trip(tmp_path):
    root = write_scrap_anomaly(tmp_path / "scrap", n_train=3, n_val=2, size=48, seed=1)
    assert read_class_list(root) == SCRAP_CLASSES
    train, val = list_class_mask_items(root)
    assert [len(train), len(val)] == [3, 2]
    image, mask = read_item(val[1], len(SCRAP_CLASSES))
    expected_image, expected_mask = make_scene(1, 1_000_001, 48)
    assert np.array_equal(image, expected_image) and np.array_equal(mask, expected_mask)
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    (flat / "masks").mkdir()
    (flat / "classes.txt").write_text("steel\n# comment\n\nplastic\n")
    for i in range(10):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(flat / "images" / f"{i}.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "masks" / f"{i}.png")
    train, val = list_class_mask_items(flat, val_fraction=0.3, seed=0)
    assert len(val) == 3 and not {t.name for t in train} & {v.name for v in val}
    assert list_class_mask_items(flat, 0.3, 0) == (train, val)  # the split is seeded


def test_class_mask_reader_rejects_bad_masks(tmp_path):
    good = np.zeros((8, 8), np.uint8)
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "bad_value.png")
    with pytest.raises(DataError, match=r"bad_value.png: values \[7\]"):
        read_class_mask(tmp_path / "bad_value.png", 6)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png: mode RGB is colour"):
        read_class_mask(tmp_path / "rgb.png", 6)
    Image.fromarray(good).save(tmp_path / "small.png")
    with pytest.raises(DataError, match="small.png: size 8x8 differs"):
        read_class_mask(tmp_path / "small.png", 6, shape=(9, 8))
    palette = Image.fromarray(np.array([[0, 2], [255, 1]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [9] * (253 * 3))
    palette.save(tmp_path / "palette.png")
    assert read_class_mask(tmp_path / "palette.png", 3).tolist() == [[0, 2], [255, 1]]  # indices, not grey
    (tmp_path / "classes.txt").write_text("only-one\n")
    with pytest.raises(DataError, match="at least 2 classes"):
        read_class_list(tmp_path)


def test_class_list_with_a_repeated_name_names_the_file_and_lines(tmp_path):
    (tmp_path / "classes.txt").write_text("steel\n# comment\nplastic\nwood\n plastic \n")
    with pytest.raises(DataError) as info:
        read_class_list(tmp_path)
    message = str(info.value)
    assert f"{tmp_path / 'classes.txt'} line 5: duplicate class name 'plastic' (first on line 3)" in message
    assert "\n" not in message


def test_missing_mask_file_names_the_image_and_the_mask(tmp_path):
    root = write_scrap_anomaly(tmp_path / "scrap", n_train=3, n_val=1, size=32, seed=0)
    mask = next((root / "train" / "masks").glob("*.png"))
    mask.unlink()
    with pytest.raises(DataError) as info:
        list_class_mask_items(root)
    message = str(info.value)
    assert f"{mask.stem}." in message and f"no mask {mask}" in message and "\n" not in message


def test_resize_keeps_small_impurities():
    mask = np.zeros((40, 40), np.uint8)
    mask[8:12, 8:12] = 2  # 4x4 object: exactly one pixel at 1/4 scale
    mask[20:23, 20:23] = 1  # 3x3: 9/16 of a target pixel, kept (>= half of it)
    mask[30, 30] = 3  # a single pixel: 1/16 of a target pixel, too small to keep
    _, small = resize_pair(np.zeros((40, 40, 3), np.uint8), mask, (10, 10))
    assert small.shape == (10, 10) and small[2, 2] == 2 and (small == 2).sum() == 1
    assert small[5, 5] == 1 and (small == 3).sum() == 0


def _reference_aupro(masks, maps, max_fpr=0.3):
    """Slow, obvious version: explicit thresholds, explicit region loops."""
    import cv2

    regions_per_image = []
    for m in masks:
        n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        regions_per_image.append([comp == r for r in range(1, n)])
    normal = np.concatenate([a[~m] for a, m in zip(maps, masks)])
    points = [(0.0, 0.0)]
    for t in sorted(np.unique(np.concatenate([a.ravel() for a in maps])), reverse=True):
        fpr = (normal >= t).mean()
        overlaps = [(a[r] >= t).mean() for a, rs in zip(maps, regions_per_image) for r in rs]
        points.append((fpr, float(np.mean(overlaps))))
    fpr, pro = np.array(points).T
    keep = fpr <= max_fpr
    x, y = list(fpr[keep]), list(pro[keep])
    if fpr.max() > max_fpr:
        i = np.argmax(fpr > max_fpr)
        y.append(np.interp(max_fpr, fpr[i - 1: i + 1], pro[i - 1: i + 1]))
        x.append(max_fpr)
    return float(np.trapezoid(y, x) / max_fpr)


def test_aupro_matches_slow_reference_and_extremes():
    rng = np.random.default_rng(0)
    masks = [np.zeros((12, 12), bool) for _ in range(3)]
    masks[0][2:5, 2:5] = True
    masks[0][8:11, 7:9] = True
    masks[1][5:7, 1:11] = True
    maps = [np.round(rng.random((12, 12)) + 0.6 * m, 2) for m in masks]  # ties on purpose
    assert aupro(masks, maps) == pytest.approx(_reference_aupro(masks, maps), abs=1e-9)
    assert aupro(masks, [m.astype(float) for m in masks]) == pytest.approx(1.0)
    assert aupro(masks, [1.0 - m for m in masks]) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(aupro([np.zeros((4, 4), bool)], [rng.random((4, 4))]))


def test_meter_iou_ap_and_image_auroc():
    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
    ious = iou_per_class(confusion)
    assert ious[0] == pytest.approx(8 / 11) and ious[1] == pytest.approx(3 / 6) and math.isnan(ious[2])
    meter = SegAnomalyMeter(["steel", "wood", "rubber"])
    target = np.zeros((2, 4, 4), np.int64)
    target[0, :2, :2] = 1
    target[1, 3, 3] = 255  # ignored
    probs = np.zeros((2, 3, 4, 4))
    probs[:, 0] = 0.9
    probs[:, 2] = 0.1
    probs[0, :, :2, :2] = np.array([0.2, 0.7, 0.1])[:, None, None]
    meter.update(probs, target)
    out = meter.compute()
    assert out["iou_steel"] == pytest.approx(1.0) and out["iou_wood"] == pytest.approx(1.0)
    assert math.isnan(out["iou_rubber"]) and out["miou"] == pytest.approx(1.0)
    labels = np.r_[target[0].ravel() > 0, np.zeros(15, bool)]
    scores = np.r_[(1 - probs[0, 0]).ravel(), np.full(15, 0.1)]
    assert out["pixel_ap"] == pytest.approx(average_precision_score(labels, scores))
    assert out["image_auroc"] == pytest.approx(1.0) and out["pixel_auroc"] == pytest.approx(1.0)
    assert out["image_ap"] == pytest.approx(1.0)
    pooled = SegAnomalyMeter(["steel", "wood", "rubber"])
    pooled.extend(meter)
    pooled.extend(meter)
    assert pooled.confusion.sum() == 2 * meter.confusion.sum() and pooled.compute()["pixel_ap"] == out["pixel_ap"]


def test_overlay_has_a_legend_with_every_impurity(tmp_path):
    image, mask = make_scene(0, 1, 64)
    path = save_overlay(tmp_path / "o.png", image, mask, (mask > 0) * 0.9, SCRAP_CLASSES, "scene")
    rgb = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3).astype(int)
    colours = np.round(class_colours(len(SCRAP_CLASSES)) * 255).astype(int)
    for c in colours[1:]:  # solid legend patches: each impurity colour appears even if not predicted
        assert (np.abs(rgb - c).sum(1) <= 3).sum() > 20


@pytest.mark.realdata
def test_kolektor_folds_for_anomaly_segmentation():
    root = real_dataset("kolektorsdd")
    train, val, test, classes = kolektor_sets(str(root), (256, 96), fold=0, n_folds=3, val_fraction=0.2,
                                              split_seed=0, aug_seed=0)
    assert classes == ("normal", "defect") and len(train) + len(val) + len(test) == 399
    assert 0.25 < len(test) / 399 < 0.42 and 0.1 < len(val) / (len(train) + len(val)) < 0.3
    items = {n.split("_")[0] for n in train.names + val.names}
    held_out = {n.split("_")[0] for n in test.names}
    assert not items & held_out and ("kos01" in items) == ("kos26" in items)
    names = set(test.names)
    defective = [f"{it.item}_{it.part}" for it in list_kolektor(root) if it.defective and f"{it.item}_{it.part}" in names]
    assert len(defective) >= 10  # about a third of the 52 defective images
    sample = test[test.names.index(defective[0])]  # the defect survives the resize to 256x96
    assert sample["image"].shape == (3, 256, 96) and set(sample["mask"].unique().tolist()) == {0, 1}
