"""The ground-tile generator (issue 25's stand-in for a set segdec was not tuned for)."""

import numpy as np

from scrapvision.data.folder import scan_folder
from scrapvision.data.synthetic.ground_tiles import DEFECT_TYPES, make_tile, write_ground_tiles


def test_tiles_are_deterministic_and_vary_in_size() -> None:
    a, b = make_tile(3, 7), make_tile(3, 7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    shapes = {make_tile(0, i)[0].shape for i in range(12)}
    assert len(shapes) > 6, "sizes and aspect ratios must vary"


def test_every_defect_type_changes_the_image_where_its_mask_is() -> None:
    seen = set()
    for index in range(60):
        image, mask, kind = make_tile(0, index, defect_rate=1.0)
        assert kind == DEFECT_TYPES[index % len(DEFECT_TYPES)] and mask.any(), (index, kind)
        twin, twin_mask, twin_kind = make_tile(0, index, defect_rate=0.0)  # the same surface, no defect
        assert twin_kind == "" and not twin_mask.any()
        diff = np.abs(image.astype(float) - twin)
        assert diff[mask].mean() > 3.0 > diff[~mask].mean(), (index, kind)
        seen.add(kind)
    assert seen == set(DEFECT_TYPES)


def test_written_layout_reads_back_with_exact_labels(tmp_path) -> None:
    root = write_ground_tiles(tmp_path / "tiles", count=20, seed=1, defect_rate=0.5)
    scan = scan_folder(root, decode=True)
    assert not scan.problems
    by_key = {it.name: it for it in scan.items}
    for index in range(20):
        image, mask, kind = make_tile(1, index, defect_rate=0.5)
        item = by_key[f"tile{index:04d}"]
        assert (item.label > 0) == bool(kind) == bool(mask.any())
