"""canet with mask-only training samples (masks, no assay): loss, batches, the disk reader, the direct baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_canet import TINY as CANET_TINY
from test_canet import tiny_task as canet_tiny_task
from torch.utils.data import DataLoader

from scrapvision.data.copper_samples import CopperSetDataset, SampleStore
from scrapvision.data.sampling import EpochSampler
from scrapvision.data.synthetic.copper_granules import GeneratorSpec, write_dataset
from scrapvision.distributed import DistInfo
from scrapvision.errors import ConfigError, DataError
from scrapvision.heads.canet import CanetTask
from scrapvision.models.canet import canet_loss
from scrapvision.trainer import Trainer

# test_canet's tiny recipe, with a smaller split (14 training bags) and head
TINY = [*CANET_TINY, "model.hidden=16", "data.synthetic_train=14", "data.synthetic_val=4"]


def tiny_task(tmp_path: Path, *extra: str) -> CanetTask:
    return canet_tiny_task(tmp_path, *TINY[len(CANET_TINY):], *extra)


def test_content_term_ignores_mask_only_samples():
    content = torch.tensor([0.9, 0.0, 0.7])  # the mask-only sample (index 1) holds a placeholder
    assayed = torch.tensor([1.0, 0.0, 1.0])
    area = torch.rand(3, 2)
    pred = torch.tensor([0.8, 0.2, 0.75], requires_grad=True)
    outputs = {"content": pred, "area": area.clone()}
    loss, logs = canet_loss(outputs, area, content, 0.2, 0.8, assayed=assayed)
    expected = ((0.8 - 0.9) ** 2 + (0.75 - 0.7) ** 2) / 2  # mean over the two assayed samples only
    assert logs["content_mse"] == pytest.approx(expected)
    value = loss.detach().item()
    assert value == pytest.approx(0.8 * expected)
    other = canet_loss(outputs, area, torch.tensor([0.9, 0.5, 0.7]), 0.2, 0.8, assayed=assayed)[0]
    assert other.detach().item() == pytest.approx(value)  # the placeholder's value does not count
    assert canet_loss(outputs, area, content, 0.2, 0.8)[0].detach().item() != pytest.approx(value)  # it would, unweighted
    loss.backward()
    assert pred.grad[1] == 0 and torch.isfinite(pred.grad).all()


def test_a_batch_without_assayed_samples_keeps_a_finite_area_term():
    pred = torch.tensor([0.8, 0.2], requires_grad=True)
    area = torch.tensor([[0.3, 0.4], [0.5, 0.6]])
    loss, logs = canet_loss({"content": pred, "area": area + 0.1}, area, torch.zeros(2), 0.2, 0.8,
                            assayed=torch.zeros(2))
    assert logs["content_mse"] == 0 and loss.detach().item() == pytest.approx(0.2 * 0.01)
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros(2))


def test_synthetic_assayed_keeps_the_first_bags_labels(tmp_path, capsys):
    full = tiny_task(tmp_path)._store("train")
    train, _ = tiny_task(tmp_path, "data.assayed=3").build_datasets()
    assert train.assayed() == [True] * 3 + [False] * 11
    assert [train.store.contents[i] for i in range(3)] == full.contents[:3]
    item = train[5]
    assert float(item["assayed"]) == 0 and math.isfinite(float(item["content"]))
    assert "3 training samples assayed, 11 mask-only" in capsys.readouterr().err


@pytest.mark.parametrize("batch_size", [4, 3])
def test_every_batch_of_every_epoch_holds_assayed_samples(tmp_path, batch_size):
    task = tiny_task(tmp_path, "data.assayed=3", f"train.batch_size={batch_size}")
    train, _ = task.build_datasets()
    sampler = EpochSampler(task.epoch_indices, train, seed=0, info=DistInfo())
    lengths, drawn = set(), set()
    for epoch in range(6):
        train.set_epoch(epoch)
        sampler.set_epoch(epoch)
        order = list(sampler)
        lengths.add(len(order))
        assert sorted(i for i in order if i < 3) == [0, 1, 2]  # every assayed bag once per epoch
        drawn |= set(order)
        for batch in DataLoader(train, batch_size=batch_size, sampler=sampler):
            assert batch["assayed"].sum() >= 1
    assert len(lengths) == 1  # the Trainer sizes its schedule on epoch 0
    assert drawn == set(range(14))  # the mask-only bags are cycled through over the epochs


def test_each_ddp_rank_gets_assayed_samples_in_every_batch(tmp_path):
    task = tiny_task(tmp_path, "data.assayed=4", "train.batch_size=4")
    train, _ = task.build_datasets()
    for rank in (0, 1):
        sampler = EpochSampler(task.epoch_indices, train, seed=0, info=DistInfo(rank=rank, world_size=2))
        sampler.set_epoch(1)
        shard = list(sampler)
        assert all(any(i < 4 for i in shard[b:b + 2]) for b in range(0, len(shard), 2))  # 2 = 4 / world_size


def test_synthetic_mask_only_run_trains(tmp_path):
    task = tiny_task(tmp_path, "data.assayed=3", "train.epochs=2")
    metrics = Trainer(task).fit().metrics
    assert math.isfinite(metrics["val_content_mae_pp"]) and math.isfinite(metrics["train_loss"])


def test_assayed_beyond_the_train_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="data.assayed=15") as info:
        tiny_task(tmp_path, "data.assayed=15")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="data.assayed"):
        tiny_task(tmp_path, "data.assayed=-1")


def test_direct_baseline_drops_mask_only_samples(tmp_path, capsys):
    train, _ = tiny_task(tmp_path, "data.assayed=5", "model.kind=direct").build_datasets()
    assert len(train) == 5 and all(train.assayed())
    assert "dropped 9" in capsys.readouterr().err


def _disk_data(tmp_path: Path) -> Path:
    root = write_dataset(tmp_path / "data", GeneratorSpec(image_size=48, field_mm=15.0, stirs=2),
                         {"train": 4, "val": 2})
    (root / "train" / "sample_00001" / "sample.json").unlink()  # no sample.json at all
    meta = root / "train" / "sample_00002" / "sample.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "copper_content"}))
    return root


def test_disk_mask_only_train_samples_train(tmp_path, capsys):
    root = _disk_data(tmp_path)
    task = tiny_task(tmp_path, f"data.root={root}", "train.epochs=1")
    train, _ = task.build_datasets()
    assert train.assayed() == [True, False, False, True]
    assert "2 training samples assayed, 2 mask-only" in capsys.readouterr().err
    assert math.isfinite(Trainer(task).fit().metrics["val_content_mae_pp"])


def test_disk_val_sample_without_content_is_a_one_line_error(tmp_path):
    root = _disk_data(tmp_path)
    (root / "val" / "sample_00001" / "sample.json").unlink()
    with pytest.raises(DataError, match="sample_00001") as info:
        tiny_task(tmp_path, f"data.root={root}").build_datasets()
    assert "val" in str(info.value) and "\n" not in str(info.value)


def test_disk_train_sample_without_masks_is_still_an_error(tmp_path):
    root = _disk_data(tmp_path)
    for mask in (root / "train" / "sample_00001" / "masks").iterdir():
        mask.unlink()
    (root / "train" / "sample_00001" / "masks").rmdir()
    with pytest.raises(DataError, match="sample_00001.*no masks") as info:
        tiny_task(tmp_path, f"data.root={root}").build_datasets()
    assert "\n" not in str(info.value)


def test_store_without_labels_cannot_train(tmp_path):
    store = SampleStore([], [], [], [])
    assert CopperSetDataset(store, 2, train=True).assayed() == []
    root = _disk_data(tmp_path)
    for name in ("sample_00000", "sample_00003"):
        (root / "train" / name / "sample.json").unlink()
    with pytest.raises(DataError, match="no training sample has a copper_content"):
        tiny_task(tmp_path, f"data.root={root}").build_datasets()


def test_config_command_refuses_a_bad_assayed_count_without_building_the_task(capsys):
    """The data checks live in the config, so `scrapvision config` (which builds no task) refuses them too."""
    from scrapvision.cli import main

    assert main(["config", "--task", "canet", "--set", "data.assayed=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.assayed=-1" in err[0], err
