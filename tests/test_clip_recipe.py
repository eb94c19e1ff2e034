"""The pieces of clip_anomaly's real-defect recipe: dilated training masks and checkpoint selection by a
chosen validation metric (issue 21)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scrapvision.config import load_config
from scrapvision.errors import ConfigError
from scrapvision.heads.clip_anomaly import ClipAnomalyConfig, ClipAnomalyTask
from scrapvision.heads.clip_anomaly_parts.data import dilate_anomalies
from scrapvision.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def task_of(*overrides: str) -> ClipAnomalyTask:
    base = ["model.image_size=[32, 32]", "data.n_train=8", "data.n_val=4", "train.epochs=1", "train.batch_size=4",
            "train.device=cpu", "train.log_every=1000", "optim.warmup_epochs=0"]
    return ClipAnomalyTask(load_config(ClipAnomalyConfig, overrides=[*base, *overrides]))


def test_dilation_grows_each_class_into_normal_pixels_only():
    mask = np.zeros((9, 9), np.uint8)
    mask[4, 4] = 2  # one pixel of class 2
    mask[0, :] = 255  # ignored row next to nothing: stays ignored, never spreads
    mask[8, 8] = 1
    grown = dilate_anomalies(mask, 3)
    assert (grown == 2).sum() == 9 and (grown[3:6, 3:6] == 2).all()
    assert (grown == 255).sum() == 9 and (grown[0] == 255).all()
    assert (grown == 1).sum() == 4 and (grown[7:, 7:] == 1).all()  # clipped at the corner
    assert np.array_equal(dilate_anomalies(mask, 1), mask)


def test_only_the_training_masks_are_dilated():
    plain, dilated = task_of(), task_of("data.dilate=5")
    for task in (plain, dilated):
        train, _ = task.build_datasets()
        train.augment = False  # flips do not change counts, but keep the comparison pixel by pixel
    (train_plain, val_plain), (train_dilated, val_dilated) = plain.build_datasets(), dilated.build_datasets()
    i = next(i for i, anomalous in enumerate(train_plain.anomalous()) if anomalous)
    raw = train_plain.raw(i)[1]
    assert np.array_equal(train_plain[i]["mask"].numpy(), raw)
    assert np.array_equal(train_dilated[i]["mask"].numpy(), dilate_anomalies(raw, 5))
    assert (train_dilated[i]["mask"] != 0).sum() > (raw != 0).sum()
    assert all(np.array_equal(val_dilated[j]["mask"].numpy(), val_plain[j]["mask"].numpy())
               for j in range(len(val_plain)))
    with pytest.raises(ConfigError, match="data.dilate"):
        task_of("data.dilate=0")


def test_monitor_chooses_the_metric_that_picks_best_pt(tmp_path):
    task = task_of("monitor=pixel_ap", "train.epochs=3")
    assert task.monitor == ("pixel_ap", "max") and task_of().monitor == ("miou", "max")
    result = Trainer(task, run_dir=tmp_path / "run").fit()
    curve = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert result.monitor == "pixel_ap" and result.best_metric == pytest.approx(curve["val_pixel_ap"].max())
    with pytest.raises(ConfigError, match="monitor"):
        task_of("monitor=loss")
