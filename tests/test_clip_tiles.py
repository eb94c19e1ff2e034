"""clip_anomaly on non-square and tiled inputs: maps land where the evidence is; stitched tiles match an
untiled run; training crops hold the defect."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from scrapvision.config import load_config
from scrapvision.errors import ConfigError
from scrapvision.heads.clip_anomaly import ClipAnomalyConfig, ClipAnomalyTask
from scrapvision.heads.clip_anomaly_parts.tiles import (
    random_crop,
    tile_boxes,
    tile_starts,
    tiled_probabilities,
)
from scrapvision.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def task_of(*overrides: str) -> ClipAnomalyTask:
    base = ["data.n_train=8", "data.n_val=4", "train.epochs=1", "train.batch_size=4", "train.device=cpu",
            "train.log_every=1000", "optim.warmup_epochs=0"]
    return ClipAnomalyTask(load_config(ClipAnomalyConfig, overrides=[*base, *overrides]))


def peak(change: torch.Tensor) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(int(change.argmax()), tuple(change.shape)))


@pytest.mark.parametrize("size", [(48, 24), (24, 48)])
def test_a_local_change_moves_the_map_at_its_own_place_in_non_square_inputs(size):
    """A transposed grid or a column-major reshape would move the peak to another patch."""
    torch.manual_seed(0)
    task = task_of(f"model.image_size=[{size[0]}, {size[1]}]", "model.patch_size=4")
    model = task.build_model().eval()
    x = torch.zeros(1, 3, *size)
    y = x.clone()
    y[..., 8:12, 16:20] = 3.0  # patch row 2, column 4 (in both orientations)
    with torch.no_grad():
        change = (model(y) - model(x)).abs().sum(1)[0]
    row, col = peak(change)
    assert 8 <= row < 12 and 16 <= col < 20


def test_tiled_probabilities_equal_the_untiled_map_of_a_pointwise_model():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 1)
    predict = lambda t: conv(t).softmax(1)  # noqa: E731 - the same answer for a pixel wherever the tile is
    images = torch.randn(2, 3, 70, 45)
    with torch.no_grad():
        whole = predict(images)
        for tile, overlap in (((32, 16), 0.25), ((70, 16), 0.0), ((24, 45), 0.5)):
            torch.testing.assert_close(tiled_probabilities(predict, images, tile, overlap, batch_size=3), whole)


def test_tile_starts_cover_the_axis_flush_with_its_end():
    for size, tile, overlap in ((100, 32, 0.25), (64, 32, 0.0), (33, 32, 0.5), (32, 32, 0.25)):
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s: s + tile] = True
        assert covered.all() and starts[0] == 0 and starts[-1] == size - tile
    assert tile_starts(100, 32, 0.25) == [0, 24, 48, 68]


def test_tiled_map_keeps_a_local_change_at_its_place():
    """Through the task: a 96x40 image seen as 32x16 tiles, evidence at a known place."""
    torch.manual_seed(0)
    task = task_of("model.image_size=[32, 16]", "model.patch_size=4", "data.resolution=[96, 40]")
    model = task.build_model().eval()
    x = torch.zeros(1, 3, 96, 40)
    y = x.clone()
    y[..., 60:64, 28:32] = 3.0
    with torch.no_grad():
        change = (task.probabilities(model, y) - task.probabilities(model, x)).abs().sum(1)[0]
    assert change.shape == (96, 40)
    row, col = peak(change)
    assert 60 <= row < 64 and 28 <= col < 32


def test_random_crops_hold_the_defect_and_stay_inside():
    rng = np.random.default_rng(0)
    image = np.arange(90 * 40 * 3, dtype=np.int64).reshape(90, 40, 3)
    mask = np.zeros((90, 40), np.uint8)
    mask[85, 2] = 1
    mask[0:3, :] = 255  # ignored pixels never count as the defect
    for _ in range(50):
        crop_img, crop_mask = random_crop(image, mask, (32, 16), rng)
        assert crop_img.shape == (32, 16, 3) and (crop_mask == 1).sum() == 1
        y, x = divmod(int(crop_img[0, 0, 0]) // 3, 40)
        assert np.array_equal(crop_img, image[y: y + 32, x: x + 16])


def test_random_crops_of_normal_images_show_border_pixels_often():
    rng = np.random.default_rng(0)
    rows = np.arange(90)[:, None, None].repeat(40, 1)
    seen = np.zeros(90)
    for _ in range(4000):
        crop = random_crop(rows, np.zeros((90, 40), np.uint8), (32, 16), rng)[0]
        seen[crop[:, 0, 0]] += 1
    assert seen.min() > 0.3 * seen.max()  # uniform offsets: the first row 1/32 as often as the middle ones


def test_tiled_recipe_trains_on_crops_and_scores_and_predicts_at_the_working_size(tmp_path):
    task = task_of("model.image_size=[32, 32]", "data.resolution=[64, 64]", f"train.out_dir={tmp_path}")
    train, val = task.build_datasets()
    assert train[0]["image"].shape == (3, 32, 32) and val[0]["image"].shape == (3, 64, 64)
    result = Trainer(task, run_dir=tmp_path / "run").fit()
    assert "val_pixel_ap" in result.metrics
    model = task.build_model().eval()
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((50, 90, 3), 120, np.uint8)).save(inputs / "a.png")
    task.predict(model, inputs, tmp_path / "out", argparse.Namespace(overlays=0, batch_size=1, workers=0))
    assert np.asarray(Image.open(tmp_path / "out" / "masks" / "a.png")).shape == (50, 90)
    task.cfg = load_config(ClipAnomalyConfig, base=task.cfg,
                           overrides=["model.mode=few_shot", "few_shot.k=2", "few_shot.references=labelled"])
    task.prepare_memory(model)  # reference images are larger than the model input: the bank holds their tiles
    n_tiles = len(tile_boxes(64, 64, (32, 32), 0.0))
    assert n_tiles == 4 and model.memory.ready and model.memory.bank[0].shape[0] == 2 * n_tiles * 16


def test_resolution_smaller_than_the_tile_is_a_config_error():
    with pytest.raises(ConfigError, match="data.resolution"):
        task_of("model.image_size=[32, 32]", "data.resolution=[64, 16]").build_datasets()
