"""The segdec head: config, schedules, loss, targets, sampling, supervision, metrics, fit, reload, predict."""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scrapvision.api import evaluate, load_trained
from scrapvision.checkpoint import load_checkpoint
from scrapvision.config import from_dict, load_config, to_dict
from scrapvision.data.kolektor import DUPLICATE_ITEMS, list_kolektor
from scrapvision.data.synthetic.surface_defects import generate_parts, make_part, write_kolektor_layout
from scrapvision.errors import ConfigError, DataError
from scrapvision.heads.segdec import SegDecConfig, SegDecTask, _choose_supervision, seg_weight, segdec_loss
from scrapvision.heads.segdec_parts.data import Sample, SegDecDataset, balanced_order, pixel_targets
from scrapvision.heads.segdec_parts.metrics import decision_metrics
from scrapvision.trainer import Trainer
from tests.conftest import REPO, real_dataset

TINY = ["model.widths=[4,4,8,8,8,8,8,8,8,16]", "data.height=72", "data.width=72", "data.synthetic_items=9",
        "data.synthetic_parts=6", "data.synthetic_defect_rate=0.5", "train.batch_size=8", "train.log_every=1000",
        "train.device=cpu", "optim.lr=0.003"]


def _task(*overrides: str) -> SegDecTask:
    return SegDecTask(load_config(SegDecConfig, None, [*TINY, *overrides]))


def test_config_round_trip_and_yaml_files() -> None:
    cfg = load_config(SegDecConfig, None, ["loss.schedule=dynamic", "data.supervision=mixed"])
    assert from_dict(SegDecConfig, to_dict(cfg)) == cfg
    for name in ("segdec.yaml", "segdec-paper.yaml"):
        loaded = load_config(SegDecConfig, REPO / "tasks" / name)
        assert loaded.model.backbone == "segdec"
    assert load_config(SegDecConfig, REPO / "tasks" / "segdec.yaml") == SegDecConfig()
    with pytest.raises(ConfigError, match="loss.schedule"):
        load_config(SegDecConfig, None, ["loss.schedule=linear"])
    with pytest.raises(ConfigError, match="data.height"):
        SegDecTask(load_config(SegDecConfig, None, ["data.height=100"]))


def test_schedules() -> None:
    assert seg_weight("constant", 0.7, 10, constant=0.3) == 0.3
    assert seg_weight("dynamic", 0.0, 10) == 1.0 and seg_weight("dynamic", 0.25, 10) == pytest.approx(0.75)
    assert seg_weight("decay", 0.0, 10) == 1.0
    assert seg_weight("decay", 0.3, 10, beta=0.2) == pytest.approx(0.8 ** 3)
    assert seg_weight("decay", 1.0, 10, beta=0.2) > 0.0


def _batch(target: torch.Tensor, gamma: list[float], label: list[float]) -> dict[str, torch.Tensor]:
    return {"target": target, "weight": torch.ones_like(target), "gamma": torch.tensor(gamma),
            "label": torch.tensor(label)}


def test_loss_gamma_and_balance() -> None:
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 1, 1] = 1.0
    seg = torch.zeros(2, 1, 4, 4)
    dec = torch.zeros(2)
    labelled = _batch(target, [1.0, 1.0], [1.0, 0.0])
    total, l_seg, l_dec = segdec_loss(dec, seg, labelled, w_seg=1.0, delta=1.0)
    assert l_seg > 0 and total == pytest.approx(float(l_seg))
    _, l_seg_unlabelled, _ = segdec_loss(dec, seg, _batch(target, [0.0, 0.0], [1.0, 0.0]), 1.0, 1.0)
    assert float(l_seg_unlabelled) == 0.0
    total, _, l_dec = segdec_loss(dec, seg, labelled, w_seg=0.0, delta=0.5)
    assert total == pytest.approx(0.5 * float(l_dec))
    good = torch.full_like(seg, -8.0)
    good[0, 0, 1, 1] = 8.0
    assert segdec_loss(dec, good, labelled, 1.0, 1.0, "mse")[1] < segdec_loss(dec, seg, labelled, 1.0, 1.0, "mse")[1]


def test_pixel_targets_dilation_and_distance_weights() -> None:
    mask = np.zeros((32, 32), bool)
    mask[16, 4:28] = True  # a one-pixel crack
    t1, w1 = pixel_targets(mask, 8, dilate=1, weighted=False, p=2.0, max_weight=1.0)
    t5, w5 = pixel_targets(mask, 8, dilate=5, weighted=True, p=2.0, max_weight=1.0)
    assert t1.shape == (4, 4) and t5.sum() > t1.sum() * 3
    assert np.all(w1 == 1.0)
    assert w5.min() < 1.0 and w5[0, 0] == 1.0  # defect cells are down-weighted at the uncertain border
    empty_t, empty_w = pixel_targets(np.zeros((32, 32), bool), 8, 5, True, 2.0, 1.0)
    assert empty_t.sum() == 0 and np.all(empty_w == 1.0)


def test_balanced_order_cycles_negatives() -> None:
    labels = [True] * 3 + [False] * 7
    seen: list[int] = []
    for epoch in range(7):
        order = balanced_order(labels, epoch, seed=0, generator=torch.Generator().manual_seed(epoch))
        assert sorted(i for i in order if labels[i]) == [0, 1, 2] and len(order) == 6
        seen += [i for i in order if not labels[i]]
    assert sorted(seen) == sorted(list(range(3, 10)) * 3)  # 21 draws = every negative exactly 3 times


def test_supervision_modes() -> None:
    samples = [Sample(f"s{i}", np.zeros((8, 8), np.uint8), None, i < 6, True, f"k{i}") for i in range(10)]
    cfg = SegDecConfig().data
    weak = _choose_supervision(samples, replace(cfg, supervision="weak"))
    assert len(weak) == 10 and not any(s.labelled for s in weak if s.defective)
    assert all(s.labelled for s in weak if not s.defective)
    mixed = _choose_supervision(samples, replace(cfg, supervision="mixed", n_positives=4, n_labelled=2))
    pos = [s for s in mixed if s.defective]
    assert len(pos) == 4 and sum(s.labelled for s in pos) == 2 and len(mixed) == 8
    with pytest.raises(ConfigError, match="n_labelled"):
        _choose_supervision(samples, replace(cfg, supervision="mixed", n_positives=3, n_labelled=5))


def test_decision_metrics() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    perfect = decision_metrics(labels, np.array([0.1, 0.2, 0.3, 0.8, 0.9]))
    assert perfect["ap"] == 1.0 and perfect["auroc"] == 1.0 and perfect["fp"] == 0 and perfect["fn"] == 0
    swapped = decision_metrics(labels, np.array([0.1, 0.2, 0.95, 0.8, 0.9]))
    assert swapped["auroc"] == pytest.approx(4 / 6) and swapped["f1"] < 1.0
    assert swapped["ap"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert swapped["fp"] + swapped["fn"] >= 1
    assert np.isnan(decision_metrics(np.zeros(3), np.ones(3))["ap"])


def test_synthetic_parts_are_deterministic_with_exact_masks(tmp_path: Path) -> None:
    a, b = make_part(3, 1, 2, True, 96, 80), make_part(3, 1, 2, True, 96, 80)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.defective
    clean = make_part(3, 1, 2, False, 96, 80)
    assert not clean.defective
    changed = a.image.astype(int) != clean.image.astype(int)
    assert changed[a.mask].mean() > 0.9 and not changed[~a.mask].any()  # the defect is exactly the mask
    parts = generate_parts(n_items=3, parts_per_item=4, defect_rate=0.5, height=80, width=80, seed=1)
    items = list_kolektor(write_kolektor_layout(tmp_path, parts))
    assert [i.defective for i in items] == [p.defective for p in parts]


def test_validation_is_carved_from_the_training_folds_by_item() -> None:
    """The split that picks best.pt and the threshold shares no item (nor a duplicated item's copy) with
    the test fold that ``eval`` reports, nor with the training images."""
    task = _task("data.synthetic_items=30", "data.synthetic_parts=2")
    train_set, val_set = task.build_datasets()
    test_set = task.build_eval_dataset()
    items = [{DUPLICATE_ITEMS.get(s.group, s.group) for s in d.samples} for d in (train_set, val_set, test_set)]
    assert all(items) and not items[0] & items[1] and not items[1] & items[2] and not items[0] & items[2]
    assert len(train_set) + len(val_set) + len(test_set) == 60
    assert any(s.defective for s in val_set.samples) and any(not s.defective for s in val_set.samples)
    assert 0.1 < len(val_set) / (len(train_set) + len(val_set)) < 0.3  # data.val_fraction=0.2 of the rest
    assert "kos01" in items[0] | items[1] | items[2] and "kos26" not in items[0] | items[1] | items[2]
    with pytest.raises(ConfigError, match="data.val_fraction"):
        _task("data.val_fraction=0.8")


def test_fit_picks_checkpoint_and_threshold_on_validation_and_reloads(tmp_path: Path) -> None:
    task = _task("train.epochs=3", "train.eval_every=1")
    result = Trainer(task, run_dir=tmp_path / "run").fit()
    assert result.metrics["val_auroc"] > 0.75, result.metrics
    assert task.threshold == 0.5  # evaluate never changed the task
    _, val_set = task.build_datasets()
    test_set = task.build_eval_dataset()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    epochs = [r for r in logged if r["kind"] == "epoch"]
    best = load_checkpoint(tmp_path / "run" / "best.pt", task="segdec")
    model = task.build_model()
    model.load_state_dict(best["model"])
    val_scores = task.score(model, DataLoader(val_set, batch_size=16))
    on_val = decision_metrics(val_scores["label"] > 0.5, val_scores["score"])
    # best.pt is the epoch with the highest AP on the validation images, and its threshold is their best-F one
    assert on_val["ap"] == pytest.approx(max(r["val_ap"] for r in epochs))
    assert best["extras"]["threshold"] == pytest.approx(on_val["best_threshold"])
    assert best["extras"]["threshold"] == pytest.approx(best["metrics"]["val_best_threshold"])
    # eval on the checkpoint scores the test fold at that threshold, and leaves it as it was
    fresh, reloaded = load_trained("segdec", tmp_path / "run" / "best.pt")
    metrics = evaluate(fresh, reloaded)
    assert metrics["n"] == len(test_set) and metrics["threshold"] == pytest.approx(best["extras"]["threshold"])
    assert fresh.threshold == pytest.approx(best["extras"]["threshold"])
    test_scores = fresh.score(reloaded, DataLoader(test_set, batch_size=16))
    wrong = (test_scores["score"] >= fresh.threshold) != (test_scores["label"] > 0.5)
    assert metrics["fp"] + metrics["fn"] == wrong.sum()
    _predict_writes_outputs(fresh, reloaded, tmp_path)


def _predict_writes_outputs(task: SegDecTask, model: torch.nn.Module, tmp_path: Path) -> None:
    parts = generate_parts(n_items=2, parts_per_item=3, defect_rate=0.5, height=96, width=80, seed=5)
    data = write_kolektor_layout(tmp_path / "kolektor", parts)
    args = argparse.Namespace(threshold=None, no_overlays=False)
    out = task.predict(model, data, tmp_path / "pred", args)
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["image"] for r in rows) == sorted(f"{p.item}/{p.part}.png" for p in parts)
    assert all(0 <= float(r["score"]) <= 1 for r in rows)
    assert all(r["decision"] == str(int(float(r["score"]) >= task.threshold)) for r in rows), rows
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == len(parts)
    assert (tmp_path / "pred" / "pr_curve.png").stat().st_size > 1000
    report = next(csv.DictReader((tmp_path / "pred" / "metrics.csv").open()))
    assert float(report["threshold"]) == pytest.approx(task.threshold, abs=1e-5)
    strict = task.predict(model, data, tmp_path / "strict", argparse.Namespace(threshold=1.01, no_overlays=True))
    report = next(csv.DictReader((strict.parent / "metrics.csv").open()))  # nothing passes 1.01: every defect missed
    assert float(report["fn"]) == sum(p.defective for p in parts) and float(report["fp"]) == 0
    (data / "kos01" / "Part0.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="Part0.png") as info:
        task.predict(model, data, tmp_path / "pred2", args)
    assert "\n" not in str(info.value)


def test_backbone_option_builds_registry_encoder() -> None:
    model = _task("model.backbone=tiny_cnn").build_model().eval()
    decision, seg = model(torch.rand(1, 1, 72, 72))
    assert decision.shape == (1,) and seg.shape == (1, 1, 9, 9)
    with pytest.raises(Exception, match="backbone"):
        _task("model.backbone=no_such_net").build_model()


@pytest.mark.realdata
def test_real_kolektor_split_and_dataset() -> None:
    root = real_dataset("kolektorsdd")
    task = SegDecTask(load_config(SegDecConfig, None, [f"data.root={root}", "data.height=200", "data.width=80"]))
    train, val, test = task.split()
    assert len(train) + len(val) + len(test) == 399
    groups = [{DUPLICATE_ITEMS.get(s.group, s.group) for s in part} for part in (train, val, test)]
    assert not groups[0] & groups[1] and not groups[1] & groups[2] and not groups[0] & groups[2]
    assert sum(s.defective for s in val) >= 5 and 0.1 < len(val) / (len(train) + len(val)) < 0.3
    dataset = SegDecDataset([s for s in test if s.defective][:1], 200, 80, dilate=3, weighted=True)
    item = dataset[0]
    assert item["image"].shape == (1, 200, 80) and item["target"].shape == (1, 25, 10)
    assert item["label"] == 1 and item["target"].max() > 0


@pytest.mark.realdata
def test_real_severstal_as_binary_defects() -> None:
    root = real_dataset("severstal_sample")
    task = SegDecTask(load_config(SegDecConfig, None, [f"data.root={root}", "data.dataset=severstal",
                                                       "data.height=128", "data.width=400"]))
    samples = task.all_samples()
    assert len(samples) == 16 and 0 < sum(s.defective for s in samples) < 16
    train, _ = task.build_datasets()
    item = next(train[i] for i in range(len(train)) if train.samples[i].defective)
    assert item["image"].shape == (1, 128, 400) and item["target"].shape == (1, 16, 50)
    assert item["target"].max() > 0


def test_paper_encoder_loads_local_weights_and_refuses_a_file_that_does_not_fit(tmp_path):
    """``model.weights`` is not ignored by the paper network: its encoder is restored exactly."""
    from scrapvision.api import build_task
    from scrapvision.errors import CheckpointError

    smoke = list(build_task("segdec").smoke_overrides)
    torch.manual_seed(1)
    source = build_task("segdec", overrides=smoke).build_model()
    torch.save(source.encoder.state_dict(), tmp_path / "encoder.pt")
    torch.manual_seed(2)
    loaded = build_task("segdec", overrides=[*smoke, f"model.weights={tmp_path / 'encoder.pt'}"]).build_model()
    for key, value in source.encoder.state_dict().items():
        torch.testing.assert_close(loaded.encoder.state_dict()[key], value, rtol=0, atol=0, msg=key)
    partial = dict(list(source.encoder.state_dict().items())[2:])
    torch.save(partial, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="partial.pt: does not fit"):
        build_task("segdec", overrides=[*smoke, f"model.weights={tmp_path / 'partial.pt'}"]).build_model()


def test_warning_when_the_decision_loss_stays_at_chance_after_the_balance_moved_to_it() -> None:
    task = SegDecTask(SegDecConfig())
    early = {"epoch": 2, "train_loss_dec": 0.69, "train_w_seg": 0.72}  # balance still on segmentation
    learning = {"epoch": 6, "train_loss_dec": 0.21, "train_w_seg": 0.38}
    stuck = {"epoch": 7, "train_loss_dec": 0.66, "train_w_seg": 0.32}
    assert task.epoch_end(early) == [] and task.epoch_end(learning) == []
    (message,) = task.epoch_end(stuck)
    assert "epoch 7" in message and "0.660" in message and "chance" in message and "\n" not in message
    assert task.epoch_end({**stuck, "epoch": 8}) == []  # once per run
    assert task.epoch_end({"epoch": 1, "train_loss": 0.3}) == []  # a record without the terms


def test_decision_head_learning_rate_scale_makes_its_own_parameter_group() -> None:
    cfg = from_dict(SegDecConfig, {"optim": {"decision_lr_scale": 10.0}, "model": {"widths": [4] * 9 + [16]}})
    task = SegDecTask(cfg)
    model = task.build_model()
    rest, head = task.param_groups(model)
    assert head["lr"] == pytest.approx(10 * cfg.optim.lr) and "lr" not in rest
    assert {id(p) for p in head["params"]} == {id(p) for p in model.decision.parameters()}
    assert len(rest["params"]) + len(head["params"]) == len(list(model.parameters()))
    default = SegDecTask(replace(cfg, optim=replace(cfg.optim, decision_lr_scale=1.0)))
    assert len(default.param_groups(model)) == 1  # unchanged recipe: one group, old runs still resume


def test_letterbox_keeps_the_aspect_ratio_and_the_defect_where_it_was() -> None:
    from scrapvision.heads.segdec_parts.data import fit

    mask = np.zeros((200, 40), np.float32)  # a tall part, defect in its upper quarter
    mask[40:60, 10:30] = 1
    out = fit(mask, 64, 64, "letterbox")
    rows, cols = np.nonzero(out > 0)
    assert out.shape == (64, 64)
    assert np.all(out[:, :25] == 0) and np.all(out[:, 39:] == 0)  # 40 px wide at scale 0.32 = 13 px, centred
    assert 12 <= rows.mean() <= 17 and 29 <= cols.mean() <= 34  # centre of the defect: row 50 / 200 * 64, col 32
    stretched = fit(mask, 64, 64, "stretch")
    assert np.nonzero(stretched > 0)[1].mean() > 30 and (stretched > 0).sum() > 3 * (out > 0).sum()


def test_photometric_jitter_is_seeded_per_sample_and_leaves_targets_alone() -> None:
    parts = generate_parts(n_items=2, parts_per_item=2, seed=0, defect_rate=0.5)
    samples = [Sample(f"{p.item}/{p.part}", p.image, p.mask, p.defective, True, p.item) for p in parts]
    plain = SegDecDataset(samples, 72, 72, flip=True, seed=3)
    jitter = SegDecDataset(samples, 72, 72, flip=True, seed=3, photometric=True)
    a, b, again = plain[1], jitter[1], jitter[1]
    assert torch.equal(a["target"], b["target"]) and torch.equal(a["weight"], b["weight"])  # same flips
    assert not torch.equal(a["image"], b["image"]) and torch.equal(b["image"], again["image"])
    assert 0.0 <= float(b["image"].min()) and float(b["image"].max()) <= 1.0
    jitter.set_epoch(1)
    assert not torch.equal(jitter[1]["image"], b["image"])


def test_letterbox_and_photometric_train_end_to_end_and_reload(tmp_path: Path) -> None:
    task = _task("train.epochs=1", "data.resize=letterbox", "data.photometric=true", "data.height=96")
    Trainer(task, run_dir=tmp_path / "run").fit()
    reloaded, model = load_trained("segdec", tmp_path / "run" / "last.pt")
    assert reloaded.cfg.data.resize == "letterbox" and reloaded.cfg.data.photometric
    metrics = evaluate(reloaded, model)
    assert 0.0 <= metrics["ap"] <= 1.0


def test_rotate90_turns_image_and_target_together_and_needs_a_square() -> None:
    mask = np.zeros((80, 80), bool)
    mask[8:24, 40:72] = True  # an off-centre, non-square defect: every turn and mirror moves it
    sample = Sample("a", mask.astype(np.uint8) * 255, mask, True, True, "a")
    data = SegDecDataset([sample], 80, 80, flip=True, seed=0, rotate90=True)
    seen = set()
    for epoch in range(24):
        data.set_epoch(epoch)
        item = data[0]
        image, target = item["image"][0].numpy(), item["target"][0].numpy()
        pooled = image.reshape(10, 8, 10, 8).mean(axis=(1, 3))  # the image at the target's stride
        assert np.allclose(pooled, target, atol=1e-6), epoch
        seen.add(tuple(np.argwhere(image > 0.5).mean(axis=0).round(1)))
    assert len(seen) == 8, "quarter turns and flips together give all eight placements of the defect"
    with pytest.raises(ConfigError, match="data.rotate90"):
        _task("data.rotate90=true", "data.height=96", "data.width=80")


def test_pos_weight_scales_only_the_defect_pixels_of_the_segmentation_loss() -> None:
    seg = torch.zeros(1, 1, 2, 2)  # logit 0 everywhere: every pixel loses ln 2
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    batch = {"target": target, "weight": torch.ones_like(target), "gamma": torch.ones(1), "label": torch.ones(1)}
    _, plain, _ = segdec_loss(torch.zeros(1), seg, batch, 1.0, 1.0)
    _, weighted, _ = segdec_loss(torch.zeros(1), seg, batch, 1.0, 1.0, pos_weight=7.0)
    assert plain.item() == pytest.approx(np.log(2))
    assert weighted.item() == pytest.approx(np.log(2) * (7 + 3) / 4)  # one defect pixel x7, three clean x1


def test_dice_term_is_the_batch_soft_dice_of_the_labelled_images_only() -> None:
    seg = torch.full((2, 1, 2, 2), -30.0)
    seg[0, 0, 0, 0] = 30.0  # image 0: the defect pixel found exactly; image 1 (unlabelled): all wrong
    target = torch.zeros(2, 1, 2, 2)
    target[0, 0, 0, 0] = 1.0
    target[1] = 1.0
    _, plain, _ = segdec_loss(torch.zeros(2), seg, _batch(target, [1.0, 0.0], [1.0, 1.0]), 1.0, 1.0)
    _, with_dice, _ = segdec_loss(torch.zeros(2), seg, _batch(target, [1.0, 0.0], [1.0, 1.0]), 1.0, 1.0, dice=1.0)
    assert with_dice.item() == pytest.approx(plain.item(), abs=1e-6)  # perfect overlap on the labelled image
    miss = seg.clone()
    miss[0, 0, 0, 0] = -30.0  # the labelled defect missed: Dice loss 1 - eps / (1 + eps) = 0.5 with eps 1
    _, plain_miss, _ = segdec_loss(torch.zeros(2), miss, _batch(target, [1.0, 0.0], [1.0, 1.0]), 1.0, 1.0)
    _, dice_miss, _ = segdec_loss(torch.zeros(2), miss, _batch(target, [1.0, 0.0], [1.0, 1.0]), 1.0, 1.0, dice=2.0)
    assert dice_miss.item() - plain_miss.item() == pytest.approx(2.0 * 0.5, abs=1e-4)
    _, none_labelled, _ = segdec_loss(torch.zeros(2), miss, _batch(target, [0.0, 0.0], [1.0, 1.0]), 1.0, 1.0, dice=1.0)
    assert none_labelled.item() == 0.0  # weak batch: no pixel term at all


def test_auto_pos_weight_is_the_clean_to_defect_ratio_of_defective_images() -> None:
    from scrapvision.heads.segdec_parts.data import auto_pos_weight

    mask = np.zeros((80, 80), bool)
    mask[16:32, 40:56] = True  # exactly 2x2 of the 10x10 cells at stride 8
    clean = np.zeros((80, 80), bool)
    samples = [Sample("d", mask.astype(np.uint8) * 255, mask, True, True, "d"),
               Sample("c", clean.astype(np.uint8), clean, False, True, "c")]  # clean images do not count
    assert auto_pos_weight(SegDecDataset(samples, 80, 80)) == pytest.approx(96 / 4)
    assert auto_pos_weight(SegDecDataset(samples[1:], 80, 80)) == 1.0  # no defect pixel: plain loss
    task = _task("loss.pos_weight=0")
    assert task.pos_weight == 1.0
    task.build_datasets()
    assert 1.0 < task.pos_weight <= 100.0  # the synthetic parts' thin cracks are rare pixels


def test_pad_keeps_the_native_scale_and_shrinks_only_larger_images() -> None:
    from scrapvision.heads.segdec_parts.data import fit

    small = np.ones((40, 60), np.float32)
    out = fit(small, 80, 80, "pad")
    assert out.shape == (80, 80) and out.sum() == 40 * 60  # not enlarged: each pixel stays one pixel
    rows, cols = np.nonzero(out)
    assert (rows.min(), cols.min()) == (20, 10)  # centred
    big = fit(np.ones((160, 100), np.float32), 80, 80, "pad")
    assert np.count_nonzero(big) == 80 * 50  # shrunk to fit, aspect kept


def test_training_crops_keep_a_defect_of_every_defective_image_and_roam_on_clean_ones() -> None:
    mask = np.zeros((160, 160), bool)
    mask[130:134, 20:26] = True  # a pin-hole near a corner: a uniform crop would miss it most of the time
    samples = [Sample("d", mask.astype(np.uint8) * 255, mask, True, True, "d"),
               Sample("c", np.add.outer(np.arange(160), np.arange(160)).astype(np.uint8), np.zeros((160, 160), bool),
                      False, True, "c")]  # a ramp: every window of the clean image holds other grey levels
    data = SegDecDataset(samples, 160, 160, flip=True, seed=0, crop=80, rotate90=True)
    corners = set()
    for epoch in range(16):
        data.set_epoch(epoch)
        defective, clean = data[0], data[1]
        assert defective["image"].shape == (1, 80, 80) and defective["target"].shape == (1, 10, 10)
        assert defective["image"].max() > 0.5 and defective["target"].sum() > 0, epoch  # the defect is inside
        corners.add(round(float(clean["image"].sum()), 3))
    assert len(corners) >= 8, "clean crops must land at many places"
    whole = SegDecDataset(samples, 160, 160, flip=False, seed=0)[0]
    assert whole["image"].shape == (1, 160, 160)  # validation / eval: the whole canvas
    with pytest.raises(ConfigError, match="data.crop"):
        _task("data.crop=84")
    with pytest.raises(ConfigError, match="data.crop"):
        _task("data.crop=72", "data.supervision=weak")
