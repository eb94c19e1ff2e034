"""The physics-grounded copper-granule generator and the on-disk sample reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import real_dataset
from scrapvision.data.copper_samples import (
    CopperSetDataset,
    FolderStore,
    SampleStore,
    list_samples,
    read_sample,
)
from scrapvision.data.synthetic.copper_granules import (
    COPPER,
    IMPURITIES,
    GeneratorSpec,
    generate_sample,
    make_bag,
    materials,
    render_split,
    write_dataset,
)
from scrapvision.errors import DataError

SMALL = GeneratorSpec(image_size=48, field_mm=15.0, stirs=2)


def test_same_seed_same_sample_other_index_differs():
    a, b = generate_sample(SMALL, 3, 1), generate_sample(SMALL, 3, 1)
    c = generate_sample(SMALL, 3, 2)
    assert a.copper_content == b.copper_content
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    assert a.copper_content != c.copper_content
    assert not np.array_equal(a.images[0], c.images[0])


def test_content_is_copper_mass_over_total_mass_of_the_bag():
    bag = make_bag(SMALL, np.random.default_rng(7))
    density = np.array([m.density for m in materials()])[bag["material"]]
    mass = bag["area"] * bag["t"] * density  # the volume factor cancels in the ratio
    expected = mass[bag["material"] == 0].sum() / mass.sum()
    assert bag["copper_content"] == pytest.approx(expected, rel=1e-9)
    assert sum(bag["mass_fractions"].values()) == pytest.approx(1.0)
    assert bag["mass_fractions"]["copper"] == pytest.approx(bag["copper_content"])


def test_materials_are_physical_and_distinct():
    assert COPPER.density == 8.96 and len(IMPURITIES) == 9
    assert len({m.name for m in IMPURITIES}) == 9
    assert all(m.density > 0 for m in IMPURITIES)
    assert len(materials(3)) == 4
    with pytest.raises(ValueError):
        materials(0)


def test_spread_and_the_area_bias_that_density_causes():
    """Contents span the 60-99 % range; copper, the densest material, shows less area than mass."""
    samples = [generate_sample(SMALL, 0, i) for i in range(12)]
    contents = np.array([s.copper_content for s in samples])
    areas = np.array([np.mean([(m > 127).mean() for m in s.masks]) for s in samples])
    assert 0.55 < contents.min() and contents.max() <= 1.0
    assert contents.max() - contents.min() > 0.15
    assert (areas < contents).mean() > 0.8


def test_mask_is_binary_and_matches_the_reported_copper_area():
    sample = generate_sample(SMALL, 1, 0)
    for mask, entry, image in zip(sample.masks, sample.info["images"], sample.images):
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask > 127).mean() == pytest.approx(entry["copper_area"])
        assert sum(entry["area_by_material"].values()) == pytest.approx(1.0)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        copper_rgb = image[mask > 127].astype(float).mean(0)
        assert copper_rgb[0] > copper_rgb[2]  # copper reads red-brown, not blue


def test_write_then_read_round_trip(tmp_path):
    write_dataset(tmp_path, SMALL, {"train": 2, "val": 1}, seed=5)
    samples = list_samples(tmp_path / "train")
    assert [s.name for s in samples] == ["sample_00000", "sample_00001"]
    direct = generate_sample(SMALL, 5, 1, "train")
    assert samples[1].copper_content == pytest.approx(direct.copper_content)
    images, masks, areas, content = FolderStore(samples, 32).get(1)
    assert images.shape == (2, 32, 32, 3) and masks.shape == (2, 32, 32)
    np.testing.assert_allclose(areas, [e["copper_area"] for e in direct.info["images"]], atol=1e-6)
    np.testing.assert_allclose(masks.mean((1, 2)) / 255, areas, atol=0.01)  # area-resizing keeps the share
    rendered = render_split(SMALL, 5, "train", 2, 32)
    np.testing.assert_allclose(rendered.areas[1], areas, atol=1e-6)
    np.testing.assert_array_equal(rendered.masks[1], masks)
    np.testing.assert_array_equal(rendered.images[1], images)  # PNG on disk is lossless
    assert rendered.contents[1] == pytest.approx(content)


def test_dataset_items_and_seeded_augmentation(tmp_path):
    rendered = render_split(SMALL, 0, "train", 2, 32)
    store = SampleStore(list(rendered.images), list(rendered.masks), list(rendered.areas), list(rendered.contents))
    train = CopperSetDataset(store, images_per_sample=3, train=True, seed=1)
    item = train[0]
    assert item["images"].shape == (3, 3, 32, 32) and item["mask"].shape == (3, 32, 32)
    assert item["area"].shape == (3,) and 0 <= float(item["images"].min()) and float(item["images"].max()) <= 1
    again = CopperSetDataset(store, 3, train=True, seed=1)[0]
    assert np.array_equal(item["images"].numpy(), again["images"].numpy())
    # the mask turns with its photo: copper pixels stay red-brown after the seeded rotation/flip
    copper = item["mask"] > 0.99
    assert float(item["images"][:, 0][copper].mean()) > float(item["images"][:, 2][copper].mean())
    train.set_epoch(1)
    assert not np.array_equal(train[0]["images"].numpy(), item["images"].numpy())
    evaluation = CopperSetDataset(store, 3, train=False)[1]  # 2 photos, N = 3: cycles
    assert np.array_equal(evaluation["images"][0].numpy(), evaluation["images"][2].numpy())
    assert float(evaluation["content"]) == pytest.approx(rendered.contents[1])


def _sample_folder(tmp_path, content=0.9):
    write_dataset(tmp_path, SMALL, {"train": 1})
    folder = tmp_path / "train" / "sample_00000"
    meta = json.loads((folder / "sample.json").read_text())
    meta["copper_content"] = content
    (folder / "sample.json").write_text(json.dumps(meta))
    return folder


@pytest.mark.parametrize("content, words", [(87.3, "outside [0, 1]"), ("high", "must be a number"),
                                            (float("nan"), "must be a number, got nan"),
                                            (None, "must be a number, got None")])
def test_bad_content_is_a_one_line_error(tmp_path, content, words):
    folder = _sample_folder(tmp_path, content)
    with pytest.raises(DataError, match=r"sample\.json") as info:
        read_sample(folder)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_missing_content_key_names_the_file(tmp_path):
    folder = _sample_folder(tmp_path)
    (folder / "sample.json").write_text(json.dumps({"copper": 0.9}))
    with pytest.raises(DataError, match=r"sample\.json: no 'copper_content' key") as info:
        read_sample(folder)
    assert "\n" not in str(info.value)


def test_mask_of_another_size_names_the_mask_and_both_sizes(tmp_path):
    folder = _sample_folder(tmp_path)
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(folder / "masks" / "stir_00.png")
    with pytest.raises(DataError, match=r"stir_00\.png: size 30x20 differs from its image 48x48") as info:
        FolderStore([read_sample(folder)], 32).get(0)
    assert "\n" not in str(info.value)


def test_colour_mask_is_refused_and_grey_stored_as_rgb_is_read(tmp_path):
    folder = _sample_folder(tmp_path)
    path = folder / "masks" / "stir_00.png"
    expected = FolderStore([read_sample(folder)], 32).get(0)[2]
    grey = np.asarray(Image.open(path))
    assert grey.max() == 255  # the photo holds copper, so the red version really is colour
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(path)
    np.testing.assert_array_equal(FolderStore([read_sample(folder)], 32).get(0)[2], expected)
    colour = np.zeros((*grey.shape, 3), np.uint8)
    colour[..., 0] = grey  # copper painted red
    Image.fromarray(colour).save(path)
    with pytest.raises(DataError, match=r"stir_00\.png: mode RGB has colour pixels") as info:
        FolderStore([read_sample(folder)], 32).get(0)
    assert "\n" not in str(info.value)


def test_missing_mask_and_missing_json_name_the_file(tmp_path):
    folder = _sample_folder(tmp_path)
    (folder / "masks" / "stir_01.png").unlink()
    with pytest.raises(DataError, match="stir_01"):
        read_sample(folder)
    assert read_sample(folder, need_masks=False).masks is None  # predict needs photos only
    (folder / "sample.json").unlink()
    with pytest.raises(DataError, match="no sample.json"):
        read_sample(folder, need_masks=False)


def test_truncated_photo_is_a_one_line_error(tmp_path):
    folder = _sample_folder(tmp_path)
    photo = folder / "images" / "stir_00.png"
    photo.write_bytes(photo.read_bytes()[:100])
    with pytest.raises(DataError, match="stir_00.png"):
        FolderStore([read_sample(folder)], 32).get(0)


def test_real_copper_granules_read_when_present():
    root = real_dataset("copper_granules")
    samples = list_samples(root / "train")
    assert samples and all(0 <= s.copper_content <= 1 for s in samples)


def test_material_maps_match_the_masks_and_the_recorded_areas():
    """The per-pixel material map (0 tray, 1 copper, 2.. impurities) is what the copper mask and the JSON's
    per-material areas are counted from, so a probe of per-material features can trust it."""
    sample = generate_sample(SMALL, 5, 0)
    names = ["tray", *(m.name for m in materials(SMALL.impurity_types))]
    for material_map, mask, record in zip(sample.material_maps, sample.masks, sample.info["images"]):
        assert material_map.shape == mask.shape and material_map.dtype == np.uint8
        np.testing.assert_array_equal(mask == 255, material_map == 1)
        shares = np.bincount(material_map.ravel(), minlength=len(names)) / material_map.size
        assert shares == pytest.approx([record["area_by_material"][n] for n in names])
    assert len({int(v) for m in sample.material_maps for v in np.unique(m)}) > 3  # tray, copper and impurities
