"""Kaggle Dice, the Severstal reader (both CSV formats, coverage), its Dataset, and the synthetic strips."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from scrapvision.data.images import read_image
from scrapvision.data.rle import rle_decode
from scrapvision.data.severstal import (
    SeverstalDataset,
    load_image_labelled,
    load_records,
    read_train_csv,
    split_records,
)
from scrapvision.data.synthetic.steel_strip import generate_records, write_kaggle_layout
from scrapvision.errors import DataError
from scrapvision.metrics import KaggleDiceMeter, dice_per_class, kaggle_dice, kaggle_dice_pairs
from tests.conftest import real_dataset

# ---------------------------------------------------------------------------------------- Kaggle Dice


def _pair(pred_pixels, target_pixels, shape=(4, 4)):
    pred, target = np.zeros(shape, bool), np.zeros(shape, bool)
    for r, c in pred_pixels:
        pred[r, c] = True
    for r, c in target_pixels:
        target[r, c] = True
    return pred, target


def test_kaggle_dice_hand_computed_cases():
    empty_empty = _pair([], [])  # 1 by the Kaggle rule
    empty_pred = _pair([], [(0, 0)])  # 0
    empty_target = _pair([(1, 1)], [])  # 0
    partial = _pair([(0, 0), (0, 1), (0, 2), (0, 3)], [(0, 0), (0, 1)])  # 2*2 / (4+2) = 2/3
    half = _pair([(0, 0), (1, 0)], [(1, 0), (2, 0)])  # 2*1 / (2+2) = 1/2
    # images x classes: image 0 = (empty_empty, empty_pred), image 1 = (partial, half)
    pred = np.stack([np.stack([empty_empty[0], empty_pred[0]]), np.stack([partial[0], half[0]])])
    target = np.stack([np.stack([empty_empty[1], empty_pred[1]]), np.stack([partial[1], half[1]])])
    assert kaggle_dice(pred, target) == pytest.approx((1 + 0 + 2 / 3 + 1 / 2) / 4)
    assert dice_per_class(pred, target) == pytest.approx([(1 + 2 / 3) / 2, (0 + 1 / 2) / 2])
    np.testing.assert_allclose(kaggle_dice_pairs(pred, target).numpy(), [[1, 0], [2 / 3, 1 / 2]])
    assert kaggle_dice(empty_target[0][None, None], empty_target[1][None, None]) == 0.0
    assert kaggle_dice(empty_empty[0][None, None], empty_empty[1][None, None]) == 1.0


def test_kaggle_dice_accepts_torch_and_float_targets_and_batches_like_the_whole():
    rng = np.random.default_rng(0)
    pred, target = rng.random((6, 4, 8, 9)) < 0.3, rng.random((6, 4, 8, 9)) < 0.2
    target[0] = False
    pred[0, :2] = False  # two empty/empty pairs
    whole = kaggle_dice(pred, target)
    assert kaggle_dice(torch.from_numpy(pred), torch.from_numpy(target).float()) == pytest.approx(whole)
    meter = KaggleDiceMeter()
    meter.update(pred[:2], target[:2])
    meter.update(torch.from_numpy(pred[2:]), torch.from_numpy(target[2:]))
    assert meter.value() == pytest.approx(whole)
    assert meter.per_class() == pytest.approx(dice_per_class(pred, target))
    with pytest.raises(ValueError, match="shape"):
        kaggle_dice(pred, target[:, :3])


# ---------------------------------------------------------------------------------------- reader

SHAPE = (6, 10)
# image id -> RLE per class; "b" has no row at all in the new format (= defect-free)
LABELS = {"a.jpg": ["1 3", "", "20 5 30 2", ""], "b.jpg": ["", "", "", ""], "c.png": ["", "7 4", "", "55 6"]}


def _write_images(root, names=LABELS, shape=SHAPE):
    (root / "train_images").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        pixels = np.full((*shape, 3), 40 * i + 10, np.uint8)
        Image.fromarray(pixels).save(root / "train_images" / name, format="PNG")  # PNG under .jpg: read by content


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _new_rows(labels=LABELS):
    return [(i, c + 1, r) for i, rles in labels.items() for c, r in enumerate(rles) if r]


def _old_rows(labels=LABELS):
    return [(f"{i}_{c + 1}", r) for i, rles in labels.items() for c, r in enumerate(rles)]


@pytest.mark.parametrize("fmt", ["new", "old"])
def test_reader_reads_both_csv_formats(tmp_path, fmt):
    _write_images(tmp_path)
    if fmt == "new":
        _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], _new_rows())
    else:
        _write_csv(tmp_path / "train.csv", ["ImageId_ClassId", "EncodedPixels"], _old_rows())
    records = load_records(tmp_path)
    assert [r.image_id for r in records] == ["a.jpg", "b.jpg", "c.png"]
    for record in records:
        assert record.shape == SHAPE and list(record.rles) == LABELS[record.image_id]
        masks = record.masks()
        assert masks.shape == (4, *SHAPE)
        for c, rle in enumerate(LABELS[record.image_id]):
            np.testing.assert_array_equal(masks[c], rle_decode(rle, SHAPE))
    assert records[0].labels == (True, False, True, False) and not any(records[1].labels)
    assert records[0].masks()[2].sum() == 7  # runs "20 5 30 2"


def test_coverage_list_restricts_to_completely_labelled_images(tmp_path):
    _write_images(tmp_path)
    _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], _new_rows())
    _write_csv(tmp_path / "images_covered.csv", ["ImageId", "n_defect_classes"], [("c.png", 2), ("b.jpg", 0), ("z.jpg", 1)])
    assert [r.image_id for r in load_records(tmp_path)] == ["b.jpg", "c.png"]
    other = tmp_path / "only_a.csv"
    _write_csv(other, ["ImageId"], [("a.jpg",)])
    assert [r.image_id for r in load_records(tmp_path, coverage=other)] == ["a.jpg"]


BAD_NEW = [
    ([("a.jpg", 5, "1 3")], "line 2", "unknown ClassId"),
    ([("a.jpg", 1, "1 3"), ("a.jpg", 1, "9 1")], "line 3", "repeats line 2"),
    ([("a.jpg", 1, "1 3"), ("c.png", 2, "4 2 1 1")], "line 3", "not sorted"),
    ([("a.jpg", 1, "1 3 5")], "line 2", "odd number"),
    ([("a.jpg", 1, "60 2")], "line 2", "past the image"),
    ([("", 1, "1 3")], "line 2", "empty ImageId"),
    ([("a.jpg", 1, "1 3"), ("a.jpg", "NaN", "9 1")], "line 3", "unknown ClassId 'NaN'"),
    ([("a.jpg", "", "1 3")], "line 2", "unknown ClassId ''"),
]


@pytest.mark.parametrize("rows,where,problem", BAD_NEW)
def test_bad_rows_raise_one_line_error_naming_file_and_line(tmp_path, rows, where, problem):
    _write_images(tmp_path)
    _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], rows)
    with pytest.raises(DataError) as info:
        load_records(tmp_path)
    message = str(info.value)
    assert "train.csv" in message and where in message and problem in message and "\n" not in message


def test_bad_header_and_old_format_keys(tmp_path):
    _write_images(tmp_path)
    _write_csv(tmp_path / "train.csv", ["Image", "Pixels"], [("a.jpg", "1 3")])
    with pytest.raises(DataError, match="train.csv: columns Image,Pixels are neither"):
        load_records(tmp_path)
    _write_csv(tmp_path / "train.csv", ["ImageId_ClassId", "EncodedPixels"], [("a.jpg_1", "1 2"), ("a.jpg", "")])
    with pytest.raises(DataError, match="line 3: ImageId_ClassId 'a.jpg' has no"):
        load_records(tmp_path)
    _write_csv(tmp_path / "train.csv", ["ImageId_ClassId", "EncodedPixels"], [("a.jpg_0", "1 2")])
    with pytest.raises(DataError, match="line 2: unknown ClassId '0'"):
        read_train_csv(tmp_path / "train.csv", SHAPE)


def test_coverage_list_without_an_image_id_column_names_the_file(tmp_path):
    _write_images(tmp_path)
    _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], _new_rows())
    _write_csv(tmp_path / "images_covered.csv", ["Image", "n_defect_classes"], [("a.jpg", 2)])
    with pytest.raises(DataError) as info:
        load_records(tmp_path)
    message = str(info.value)
    assert "images_covered.csv: has no ImageId column (found Image,n_defect_classes)" in message
    assert "\n" not in message


def test_image_of_wrong_size_is_a_data_error_naming_the_file(tmp_path):
    _write_images(tmp_path)
    Image.fromarray(np.zeros((7, 10, 3), np.uint8)).save(tmp_path / "train_images" / "c.png")
    _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], _new_rows())
    record = load_records(tmp_path, shape=SHAPE)[2]
    with pytest.raises(DataError, match=r"c.png: size 10x7 differs from the mask size 10x6"):
        SeverstalDataset([record])[0]


def test_read_image_channel_policy_converts_grey_rgba_and_16_bit(tmp_path):
    grey = np.arange(24, dtype=np.uint8).reshape(4, 6) * 10
    Image.fromarray(grey).save(tmp_path / "grey.png")
    rgb = read_image(tmp_path / "grey.png")
    assert rgb.shape == (4, 6, 3) and all(np.array_equal(rgb[..., c], grey) for c in range(3))
    rgba = np.dstack([grey, 255 - grey, grey // 2, np.zeros_like(grey)])  # fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])  # alpha dropped, not composited
    deep = np.array([[0, 257, 1000], [32896, 60000, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")  # 16-bit grey PNG
    expected = np.round(deep / 257).astype(np.uint8)  # full 16-bit range -> 0..255, not clipped at 255
    assert expected.tolist() == [[0, 1, 4], [128, 233, 255]]
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png", mode="L"), expected)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[..., 1], expected)


def test_grey_image_in_the_kaggle_layout_reads_as_three_equal_channels(tmp_path):
    _write_images(tmp_path)
    grey = np.full(SHAPE, 77, np.uint8)
    Image.fromarray(grey).save(tmp_path / "train_images" / "b.jpg", format="PNG")
    _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], _new_rows())
    record = load_records(tmp_path, shape=SHAPE)[1]
    assert record.image_id == "b.jpg"
    np.testing.assert_array_equal(record.load_image(), np.repeat(grey[..., None], 3, axis=2))
    assert SeverstalDataset([record])[0]["image"].shape == (3, *SHAPE)


def test_missing_folder_and_csv_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_records(tmp_path / "nope")
    _write_images(tmp_path)
    with pytest.raises(DataError, match="train.csv: not found"):
        load_records(tmp_path)


# ---------------------------------------------------------------------------------------- dataset


def test_dataset_item_shapes_normalisation_and_exact_masks():
    records = generate_records(3, seed=4, shape=(32, 96), clean_fraction=0.0)
    item = SeverstalDataset(records)[1]
    assert item["image"].shape == (3, 32, 96) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (4, 32, 96) and item["mask"].dtype == torch.float32
    assert item["image_id"] == records[1].image_id
    np.testing.assert_array_equal(item["mask"].numpy(), records[1].masks())
    grey = records[1].image.astype(np.float32) / 255
    np.testing.assert_allclose(item["image"][0].numpy(), (grey - 0.485) / 0.229, atol=1e-5)
    resized = SeverstalDataset(records, image_size=(16, 48))[1]
    assert resized["image"].shape == (3, 16, 48) and set(resized["mask"].unique().tolist()) <= {0.0, 1.0}


def test_augmentation_is_seeded_per_sample_and_flips_independently():
    records = generate_records(1, seed=5, shape=(16, 40), clean_fraction=0.0)
    base = records[0].masks()
    flips = {"none": base, "h": base[:, :, ::-1], "v": base[:, ::-1, :], "hv": base[:, ::-1, ::-1]}
    dataset = SeverstalDataset(records * 24, augment=True, seed=7)
    seen = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            mask = dataset[i]["mask"].numpy().astype(bool)
            seen.append(next(k for k, v in flips.items() if np.array_equal(mask, v)))
    assert {"none", "h", "v", "hv"} <= set(seen)  # the two flips are independent draws
    dataset.set_epoch(0)
    again = SeverstalDataset(records * 24, augment=True, seed=7)
    for i in (0, 5, 23):
        assert torch.equal(dataset[i]["image"], again[i]["image"])
        assert torch.equal(dataset[i]["mask"], again[i]["mask"])


def test_split_records_is_deterministic_and_disjoint():
    records = generate_records(10, seed=0, shape=(8, 16))
    train, val = split_records(records, 0.3, seed=1)
    assert len(val) == 3 and len(train) == 7
    assert {r.image_id for r in train}.isdisjoint(r.image_id for r in val)
    assert [r.image_id for r in split_records(records, 0.3, seed=1)[1]] == [r.image_id for r in val]


# ---------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_prefix_stable():
    a = generate_records(6, seed=3, shape=(32, 200))
    b = generate_records(9, seed=3, shape=(32, 200))
    for x, y in zip(a, b):
        assert x.image_id == y.image_id and x.rles == y.rles and np.array_equal(x.image, y.image)
    c = generate_records(6, seed=4, shape=(32, 200))
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c))


def test_synthetic_masks_mark_the_changed_pixels_with_the_class_contrast():
    records = generate_records(60, seed=0, shape=(64, 400))
    counts = np.sum([r.labels for r in records], axis=0)
    assert all(counts > 0) and counts[2] == counts.max()  # every class occurs, class 3 most
    assert any(not any(r.labels) for r in records)  # some defect-free strips
    brighter = {0: True, 1: False, 2: True, 3: False}  # pits/scratches bright, cracks/blotches dark
    for record in records:
        image = record.image.astype(np.float32)
        for c, mask in enumerate(record.masks()):
            if not mask.any():
                continue
            ring = np.zeros_like(mask)
            ys, xs = np.nonzero(mask)
            ring[max(ys.min() - 4, 0):ys.max() + 5, max(xs.min() - 4, 0):xs.max() + 5] = True
            ring &= ~record.masks().any(0) & (image > 20)  # strip background next to the defect
            contrast = image[mask].mean() - image[ring].mean()
            assert (contrast > 15) if brighter[c] else (contrast < -15), (record.image_id, c + 1, contrast)


def test_synthetic_kaggle_layout_reads_back_through_the_reader(tmp_path):
    write_kaggle_layout(tmp_path, 5, seed=2, shape=(32, 200))
    records = load_records(tmp_path)
    expected = generate_records(5, seed=2, shape=(32, 200))
    assert [r.rles for r in records] == [r.rles for r in expected]
    image = records[0].load_image()
    assert image.shape == (32, 200, 3)
    assert np.abs(image[..., 0].astype(int) - expected[0].image).mean() < 3  # JPEG q95 of the same pixels
    with pytest.raises(DataError, match="image_format"):
        write_kaggle_layout(tmp_path, 1, image_format="gif")


def test_image_labelled_records_carry_their_classes_and_no_mask_supervision(tmp_path):
    _write_images(tmp_path, names=[*LABELS, "d.jpg", "e.jpg"])
    _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], _new_rows())
    _write_csv(tmp_path / "weak.csv", ["ImageId", "ClassId"], [("d.jpg", 3), ("d.jpg", 1), ("e.jpg", 0)])
    weak = load_image_labelled(tmp_path, "weak.csv")
    full = load_records(tmp_path, image_labelled=[r.image_id for r in weak])  # no coverage list: the rest
    assert [r.image_id for r in weak] == ["d.jpg", "e.jpg"] and [r.image_id for r in full] == list(LABELS)
    assert weak[0].labels == (True, False, True, False) and weak[1].labels == (False,) * 4
    assert weak[0].shape == SHAPE and not weak[0].pixel_labelled and all(r.pixel_labelled for r in full)
    item = SeverstalDataset(weak + full[:1])[0]
    assert item["pixel_labelled"] == 0 and item["present"].tolist() == [1, 0, 1, 0] and item["mask"].sum() == 0
    item = SeverstalDataset(full[:1])[0]
    assert item["pixel_labelled"] == 1 and item["present"].tolist() == [1, 0, 1, 0]  # from the masks


@pytest.mark.parametrize(("rows", "covered", "problem"), [
    ([("d.jpg", 5)], True, "weak.csv line 2: ClassId '5' is not 0"),
    ([("d.jpg", 1), ("", 2)], True, "weak.csv line 3: empty ImageId"),
    ([("zz.jpg", 2)], True, "weak.csv: image zz.jpg has no file"),
    ([("a.jpg", 1)], False, "train.csv: image a.jpg has complete masks here but is listed with image-level labels"),
    ([("b.jpg", 1)], True, "covered.csv: image b.jpg has complete masks here"),  # no rows, but listed as complete
])
def test_bad_image_label_rows_are_one_line_errors(tmp_path, rows, covered, problem):
    _write_images(tmp_path, names=[*LABELS, "d.jpg"])
    _write_csv(tmp_path / "train.csv", ["ImageId", "ClassId", "EncodedPixels"], _new_rows())
    if covered:
        _write_csv(tmp_path / "images_covered.csv", ["ImageId"], [(n,) for n in LABELS])
    _write_csv(tmp_path / "weak.csv", ["ImageId", "ClassId"], rows)
    with pytest.raises(DataError, match=problem) as err:
        load_records(tmp_path, image_labelled=[r.image_id for r in load_image_labelled(tmp_path, "weak.csv")])
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------- real sample


def test_real_sample_records_match_the_independent_label_table():
    root = real_dataset("severstal_sample")
    records = load_records(root)
    with open(root / "images_labels.csv", newline="") as handle:
        table = {row["ImageId"]: row for row in csv.DictReader(handle) if row["in_rle_subset"] == "1"}
    assert sorted(r.image_id for r in records) == sorted(table) and len(records) == 16
    for record in records:
        areas = dict(x.split(":") for x in table[record.image_id]["rle_pixel_area_per_class"].split(";") if x)
        sums = record.masks().sum(axis=(1, 2))
        assert {str(c + 1): str(int(s)) for c, s in enumerate(sums) if s} == areas, record.image_id
    assert sum(not any(r.labels) for r in records) == 2
    item = SeverstalDataset(records[:2], image_size=(128, 800))[1]
    assert item["image"].shape == (3, 128, 800) and item["mask"].sum() > 0
