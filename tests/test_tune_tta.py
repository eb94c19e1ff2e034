"""Flip TTA (scrapvision/tta.py), `scrapvision tune` and its YAML (scrapvision/tuning.py, the severstal and segdec
searches), and severstal's class-balanced sampling."""

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
import yaml

from conftest import one_line_error
from scrapvision.api import build_task, load_trained
from scrapvision.cli import main
from scrapvision.data.severstal import SeverstalDataset, SeverstalRecord
from scrapvision.data.synthetic.steel_strip import write_kaggle_layout
from scrapvision.errors import ConfigError
from scrapvision.heads import load_all
from scrapvision.heads.severstal_parts.post import THRESHOLDS, PostStats, postprocess, search
from scrapvision.metrics import kaggle_dice
from scrapvision.tta import PASSES, tta_average
from scrapvision.tuning import tuned_path

load_all()


@pytest.mark.parametrize("mode", list(PASSES))
def test_flip_back_is_exact(mode):
    """An identity 'model' must come back unchanged: each pass is turned back before the mean. Without the
    turn back, the mean of an asymmetric map and its mirror images is not the map."""
    height = 6 if mode == "d4" else 4  # d4 transposes, so it takes square images only
    x = torch.arange(2 * 3 * height * 6, dtype=torch.float32).view(2, 3, height, 6)
    calls = []

    def predict(images):
        calls.append(images)
        return images, images.mean(dim=(2, 3))  # a map and an image-level output

    maps, pooled = tta_average(predict, x, mode)
    assert len(calls) == len(PASSES[mode]) and len({tuple(c.flatten()[:6].tolist()) for c in calls}) == len(calls)
    torch.testing.assert_close(maps, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, x.mean(dim=(2, 3)))


def test_rotating_tta_on_a_non_square_image_is_a_config_error():
    with pytest.raises(ConfigError, match="d4: rotates the image, so it needs square inputs; got 4x6 px"):
        tta_average(lambda images: images, torch.zeros(1, 1, 4, 6), "d4")


def _head_maps(task, model, x):
    """The outputs of a head's ``probabilities``, probability maps first."""
    out = task.probabilities(model, x)
    return sorted((out,) if isinstance(out, torch.Tensor) else out, key=lambda t: -t.ndim)


@pytest.mark.parametrize("name", ["severstal", "segdec", "clip_anomaly"])
def test_tta_makes_each_head_flip_equivariant(name, smoke, one_thread):
    """With hvflip, predicting on a flipped image gives the flipped prediction of the image (a property only
    exact un-flipping has); without TTA the untrained, asymmetric model does not."""
    task, model, _ = smoke(name)
    x = torch.randn_like(task.example_input(2))
    for dims in ((-1,), (-2,)):
        task.tta = "none"
        plain, plain_flipped = _head_maps(task, model, x), _head_maps(task, model, x.flip(dims))
        assert not torch.allclose(plain[0].flip(dims), plain_flipped[0], atol=1e-5)
        task.tta = "hvflip"
        ref, flipped = _head_maps(task, model, x), _head_maps(task, model, x.flip(dims))
        for a, b in zip(ref, flipped):
            torch.testing.assert_close(b, a.flip(dims) if a.ndim == 4 else a, rtol=1e-5, atol=1e-6)
    task.tta = "none"


def test_search_finds_min_area_and_gate_and_scores_like_postprocess():
    """Class 1: 10-px false blobs on clean images (a minimum area removes them); class 2: large false masks
    the classifier doubts (only the gate removes them). Each tuned score equals the real post-processing's."""
    n, shape = 8, (64, 384)
    probs, truth = torch.zeros(n, 4, *shape), torch.zeros(n, 4, *shape, dtype=torch.bool)
    labels = torch.full((n, 4), 0.9)
    for i in range(n):
        if i < 4:  # clean images: a small blob in class 1, a big doubted mask in class 2
            probs[i, 0, :2, :5] = 0.9
            probs[i, 1, :20, :30] = 0.9
            labels[i, 1] = 0.1
        else:
            truth[i, :2, 10:30, 10:30] = True
            probs[i, :2, 10:30, 10:30] = 0.9
    logits = torch.logit(probs, eps=1e-6)
    stats = PostStats(THRESHOLDS)
    stats.update(torch.sigmoid(logits), truth, labels)
    current = {"threshold": (0.5,) * 4, "min_area": (0,) * 4, "cls_threshold": 0.0}
    found = search(stats, current)
    assert 10 < found["min_area"][0] <= 400 and found["cls_threshold"][0] == 0
    assert 0.1 < found["cls_threshold"][1] <= 0.9
    assert found["dice"][:2] == [1.0, 1.0] and found["dice_current"][:2] == [0.5, 0.5]
    for values, key in ((current, "dice_current"), (found, "dice")):
        masks = postprocess(logits, labels, shape, values["threshold"], values["min_area"], values["cls_threshold"])
        per_class = [kaggle_dice(masks[:, c : c + 1], truth[:, c : c + 1]) for c in range(4)]
        assert per_class == pytest.approx(found[key], abs=1e-12)


@pytest.mark.parametrize(("false_blobs", "changes"), [(1, False), (2, True)])
def test_search_keeps_the_current_values_when_one_image_decides(false_blobs, changes):
    """6 validation images; class 1 has small false blobs on ``false_blobs`` clean images. Removing one blob
    gains one image's worth (1/6): noise, the current values stay. Removing two is more: the area changes."""
    n, shape = 6, (64, 384)
    probs, truth = torch.zeros(n, 4, *shape), torch.zeros(n, 4, *shape, dtype=torch.bool)
    for i in range(n):
        if i < false_blobs:
            probs[i, 0, :2, :5] = 0.9
        elif i >= 3:
            truth[i, 0, 10:30, 10:30] = True
            probs[i, 0, 10:30, 10:30] = 0.9
    stats = PostStats(THRESHOLDS)
    stats.update(probs, truth, torch.full((n, 4), 0.9))
    current = {"threshold": (0.5,) * 4, "min_area": (0,) * 4, "cls_threshold": 0.0}
    found = search(stats, current)
    assert found["dice_current"][0] == pytest.approx(1 - false_blobs / n)
    assert (found["min_area"][0] > 10) == changes and found["threshold"][0] == 0.5
    assert found["dice"][0] == pytest.approx(1.0 if changes else 1 - false_blobs / n)


def _eval(checkpoint, tmp_path, *extra):
    out = tmp_path / "m.json"
    assert main(["eval", "--task", "severstal", "--checkpoint", str(checkpoint), "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_tune_writes_yaml_that_eval_uses_and_the_command_line_overrides(smoke, tmp_path, one_thread, capsys):
    checkpoint = shutil.copy(smoke("severstal")[2], tmp_path / "best.pt")
    assert main(["tune", "--task", "severstal", "--checkpoint", str(checkpoint), "--tta", "hflip"]) == 0
    doc = yaml.safe_load(tuned_path(checkpoint).read_text())
    post = doc["config"]["post"]
    assert post["tta"] == "hflip" and len(post["threshold"]) == len(post["min_area"]) == 4
    tuned, untuned = _eval(checkpoint, tmp_path), _eval(checkpoint, tmp_path, "--untuned", "--tta", "hflip")
    # eval scores the tuned values exactly as the search did, and never below the untuned ones
    assert tuned["dice"] == pytest.approx(doc["validation"]["dice_tuned"], abs=1e-9)
    assert untuned["dice"] == pytest.approx(doc["validation"]["dice_before"], abs=1e-9)
    assert tuned["dice"] >= untuned["dice"]
    # every post-processing key set on the command line: the tuned file no longer matters
    sets = ["--set", "post.threshold=[0.01,0.01,0.01,0.01]", "--set", "post.min_area=[0,0,0,0]",
            "--set", "post.cls_threshold=0.0"]
    forced, forced_untuned = _eval(checkpoint, tmp_path, *sets), _eval(checkpoint, tmp_path, "--untuned", *sets)
    assert forced["dice"] == forced_untuned["dice"] != tuned["dice"]
    task, _ = load_trained("severstal", checkpoint, tta="none")
    assert task.tta == "none" and list(task.cfg.post.threshold) == post["threshold"]
    assert "tuned on validation" in capsys.readouterr().err


def test_tuned_file_of_other_weights_or_task_is_a_one_line_error(smoke, tmp_path, capsys):
    checkpoint = shutil.copy(smoke("severstal")[2], tmp_path / "best.pt")
    tuned_path(checkpoint).write_text(yaml.safe_dump({"task": "severstal", "checkpoint_sha256": "0" * 64}))
    assert main(["eval", "--task", "severstal", "--checkpoint", str(checkpoint)]) == 2
    assert "tuned for other weights" in one_line_error(capsys)
    tuned_path(checkpoint).write_text(yaml.safe_dump({"task": "segdec"}))
    assert main(["eval", "--task", "severstal", "--checkpoint", str(checkpoint)]) == 2
    assert "tuned for task 'segdec'" in one_line_error(capsys)
    tuned_path(checkpoint).write_text(yaml.safe_dump({"task": "severstal", "config": {"post": {"nope": 1}}}))
    assert main(["eval", "--task", "severstal", "--checkpoint", str(checkpoint)]) == 2
    assert "best.tuned.yaml" in one_line_error(capsys)


def test_tune_without_a_validation_split_or_for_a_head_without_tuning(smoke, tmp_path, capsys):
    data = write_kaggle_layout(tmp_path / "one", n=1, seed=3, shape=(64, 384))
    assert main(["tune", "--task", "severstal", "--checkpoint", str(smoke("severstal")[2]), "--data", str(data)]) == 2
    assert "no validation split" in one_line_error(capsys)
    assert main(["tune", "--task", "canet", "--checkpoint", str(smoke("canet")[2])]) == 2
    assert "no post-processing to tune" in one_line_error(capsys)


def test_segdec_tune_sets_the_decision_threshold(smoke, tmp_path, one_thread):
    checkpoint = shutil.copy(smoke("segdec")[2], tmp_path / "best.pt")
    assert main(["tune", "--task", "segdec", "--checkpoint", str(checkpoint), "--tta", "hflip"]) == 0
    doc = yaml.safe_load(tuned_path(checkpoint).read_text())
    task, _ = load_trained("segdec", checkpoint)
    assert task.threshold == doc["extras"]["threshold"] and task.tta == "hflip"
    assert doc["validation"]["f1_tuned"] >= doc["validation"]["f1_before"]


def test_balanced_sampling_draws_each_defect_group_equally():
    """12 clean images, 5 of class 1, 2 of class 3, 1 holding classes 2 and 4 (counts for class 2): four
    groups, each drawn 20 / 4 = 5 times an epoch, so class 2 is in 25 % of the draws instead of 5 %."""
    rows = [()] * 12 + [(0,)] * 5 + [(2,)] * 2 + [(1, 3)]
    records = [SeverstalRecord(f"{i}.jpg", tuple("1 1" if c in row else "" for c in range(4)), (8, 8))
               for i, row in enumerate(rows)]
    dataset = SeverstalDataset(records)
    task = build_task("severstal", overrides=["data.sampling=balanced"])
    for epoch in range(3):
        order = task.epoch_indices(dataset, epoch, torch.Generator().manual_seed(epoch))
        assert len(order) == len(rows)
        present = Counter(c for i in order for c in rows[i])
        assert sum(not rows[i] for i in order) == 5 and present[0] == 5 and present[2] == 5 and present[1] == 5
    uniform = build_task("severstal").epoch_indices(dataset, 0, torch.Generator().manual_seed(0))
    assert sorted(uniform) == list(range(len(rows)))
    assert np.isclose(sum(1 in rows[i] for i in uniform) / len(rows), 0.05)


def test_tta_on_a_head_without_it_is_a_one_line_error(smoke, capsys):
    assert main(["eval", "--task", "pretrain", "--checkpoint", str(smoke("pretrain")[2]), "--tta", "hflip"]) == 2
    assert "no flip test-time augmentation" in one_line_error(capsys)


def test_canet_eval_takes_flip_tta_and_it_changes_the_scores(smoke, tmp_path, one_thread):
    """--tta reaches canet's eval: the flips are extra passes of each photo, so the scores move."""
    scores = []
    for extra in ([], ["--tta", "hvflip"]):
        out = tmp_path / f"canet{len(extra)}.json"
        assert main(["eval", "--task", "canet", "--checkpoint", str(smoke("canet")[2]), "--out", str(out), *extra]) == 0
        scores.append(json.loads(out.read_text()))
    assert scores[0]["content_mae_pp"] != scores[1]["content_mae_pp"]


def test_clip_anomaly_threshold_counts_match_the_class_decision():
    """Every candidate's confusion matrix from the bucketed counts equals the one of class_map itself."""
    from scrapvision.heads.clip_anomaly_parts.post import ThresholdStats, class_map

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=(3, 16, 16)).transpose(0, 3, 1, 2).astype(np.float32)
    target = rng.integers(0, 4, size=(3, 16, 16))
    target[0, :2] = 255
    stats = ThresholdStats(4, current=0.33)
    stats.update(probs[:2], target[:2])
    stats.update(probs[2:], target[2:])
    valid = target != 255
    for threshold, confusion in zip(stats.thresholds, stats.confusions()):
        pred = class_map(probs, float(threshold))
        expected = np.bincount(target[valid] * 4 + pred[valid], minlength=16).reshape(4, 4)
        np.testing.assert_array_equal(confusion, expected)
    assert 0.33 in stats.thresholds.tolist()


def test_clip_anomaly_tune_then_eval_scores_the_tuned_threshold(smoke, tmp_path, one_thread):
    checkpoint = shutil.copy(smoke("clip_anomaly")[2], tmp_path / "best.pt")
    assert main(["tune", "--task", "clip_anomaly", "--checkpoint", str(checkpoint)]) == 0
    doc = yaml.safe_load(tuned_path(checkpoint).read_text())
    out = tmp_path / "m.json"
    assert main(["eval", "--task", "clip_anomaly", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["miou"] == pytest.approx(doc["validation"]["miou_tuned"], abs=1e-12)
    assert doc["validation"]["miou_tuned"] >= doc["validation"]["miou_before"]


def test_scrap_cls_eval_with_tta_and_a_larger_test_size_re_exports_the_cached_onnx(smoke, tmp_path, one_thread, capsys):
    """--tta hflip reaches scrap_cls's eval; a later eval at another eval.image_size must not feed the ONNX graph
    cached at the first size (fixed spatial axes): the cache is exported again at the new size."""
    from scrapvision.export import read_onnx_metadata

    checkpoint = tmp_path / "smoke.pt"
    shutil.copyfile(smoke("scrap_cls")[2], checkpoint)
    args = ["eval", "--task", "scrap_cls", "--checkpoint", str(checkpoint), "--engine", "onnx"]
    assert main([*args, "--tta", "hflip"]) == 0
    assert read_onnx_metadata(checkpoint.with_suffix(".onnx"))["input_shapes"][0][1:] == [3, 32, 32]
    capsys.readouterr()
    assert main([*args, "--set", "eval.image_size=40"]) == 0
    assert read_onnx_metadata(checkpoint.with_suffix(".onnx"))["input_shapes"][0][1:] == [3, 40, 40]
    assert "accuracy" in capsys.readouterr().out
