"""Yard-video preparation: motion filter, still-frame picking, instance crops (OpenCV and a stand-in SAM)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch

from scrapvision.cli import main
from scrapvision.data.synthetic.scrap_grades import render_scene, write_scrap_video
from scrapvision.data.video import (
    PrepareOptions,
    SamSegmenter,
    motion_scores,
    opencv_instances,
    pick_stills,
    prepare_video,
    select_instances,
    still_mask,
)
from scrapvision.errors import CheckpointError, DataError, ScrapvisionError


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "yard.avi"
    truth = write_scrap_video(path, frames=60, fps=10, moving=(20, 40), seed=0)
    return path, truth


def test_still_mask_and_pick_by_hand():
    scores = [0, 0, 0, 0, 0.2, 0, 0, 0, 0, 0, 0, 0]
    assert still_mask(scores, 0.1, 2) == [True, True, False, False, False, False, False,
                                          True, True, True, True, True]
    assert pick_stills([True, True, False, False, False, False, False, True, True, True, True, True], 3) == [0, 7, 10]
    assert pick_stills([True] * 5, 0) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("method", ["mog2", "diff"])
def test_motion_filter_drops_every_frame_with_the_grapple(video, method):
    from scrapvision.data.video import iter_frames

    path, truth = video
    scores = motion_scores(iter_frames(path), method)
    still = still_mask(scores, 0.005, 3)
    moving = set(truth["moving_frames"])
    assert not moving & {i for i, s in enumerate(still) if s}
    assert all(still[i] for i in range(0, 15)) and all(still[i] for i in range(45, 60))
    assert max(scores[i] for i in moving) > 0.03 and max(scores[:15]) < 0.001


def test_opencv_segmentation_finds_the_piles():
    for seed in range(3):
        scene, boxes = render_scene(seed=seed)
        found = select_instances(opencv_instances(scene), scene.shape[0] * scene.shape[1], 0.01, 0.6)
        assert len(found) == len(boxes)
        for box in boxes:
            assert max(iou(box, b) for _, b in found) > 0.8


def test_prepare_cli_writes_crops_of_still_frames(video, tmp_path, capsys):
    path, truth = video
    out = tmp_path / "prep"
    assert main(["prepare", "--task", "scrap_cls", "--video", str(path), "--out", str(out), "--label", "hms"]) == 0
    report = json.loads((out / "prepare_report.json").read_text())
    kept = report["kept_frames"]
    assert kept and not set(kept) & set(truth["moving_frames"])
    assert min(kept) < 20 and max(kept) >= 40 and all(b - a >= 10 for a, b in zip(kept, kept[1:]))  # 1 per s
    assert report["frames"] == 60 and report["dropped"] >= len(truth["moving_frames"])
    crops = sorted((out / "crops" / "hms").glob("*.png"))
    assert len(crops) == len(report["crops"]) == 3 * len(kept)
    assert len(list((out / "frames").glob("*.png"))) == len(kept)
    for crop in report["crops"]:
        assert max(iou(tuple(crop["box_xywh"]), b) for b in truth["boxes"]) > 0.8
    stdout = capsys.readouterr().out
    assert f"kept {len(kept)} frames" in stdout and "crops (opencv)" in stdout


def test_prepare_bad_video_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["prepare", "--task", "scrap_cls", "--video", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "clip.mp4" in err and len(err.splitlines()) == 1
    with pytest.raises(DataError, match="not found"):
        prepare_video(tmp_path / "missing.avi", tmp_path / "o", PrepareOptions())


def test_select_instances_drops_parts_of_a_kept_pile():
    whole = np.zeros((10, 10), bool)
    whole[1:9, 1:9] = True
    part = np.zeros((10, 10), bool)
    part[2:5, 2:5] = True
    tiny = np.zeros((10, 10), bool)
    tiny[0, 0] = True
    other = np.zeros((10, 10), bool)
    other[8:10, 0:10] = True  # overlaps `whole` by 8 of its 20 pixels: a neighbour, kept
    kept = select_instances([(part, (2, 2, 3, 3)), (whole, (1, 1, 8, 8)), (tiny, (0, 0, 1, 1)),
                             (other, (0, 8, 10, 2))], 100, 0.02, 0.9)
    assert [b for _, b in kept] == [(1, 1, 8, 8), (0, 8, 10, 2)]


class _FakeSam(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(2, 2)


def _fake_segment_anything(monkeypatch):
    calls = {}

    class Generator:
        def __init__(self, model, points_per_side):
            calls["model"], calls["points"] = model, points_per_side

        def generate(self, rgb):
            mask = np.zeros(rgb.shape[:2], bool)
            mask[2:6, 3:9] = True
            return [{"segmentation": mask, "bbox": [3.0, 2.0, 6.0, 4.0], "area": 24}]

    module = types.SimpleNamespace(sam_model_registry={"vit_b": _FakeSam}, SamAutomaticMaskGenerator=Generator)
    monkeypatch.setitem(sys.modules, "segment_anything", module)
    return calls


def test_sam_segmenter_loads_local_weights_safely(monkeypatch, tmp_path):
    calls = _fake_segment_anything(monkeypatch)
    weights = _FakeSam()
    path = tmp_path / "sam_vit_b_test.pth"
    torch.save(weights.state_dict(), path)
    seg = SamSegmenter(path, points_per_side=8)
    assert torch.equal(calls["model"].proj.weight, weights.proj.weight) and calls["points"] == 8
    [(mask, box)] = seg(np.zeros((10, 12, 3), np.uint8))
    assert box == (3, 2, 6, 4) and mask.sum() == 24
    with pytest.raises(ScrapvisionError, match="--sam-model-type"):
        SamSegmenter(tmp_path / "weights.pth")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "sam_vit_b_bad.pth")
    with pytest.raises(CheckpointError, match="does not fit vit_b"):
        SamSegmenter(tmp_path / "sam_vit_b_bad.pth")


def test_sam_without_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails
    with pytest.raises(ScrapvisionError, match=r"segment-anything package \(pip install 'scrapvision\[sam\]'\)"):
        SamSegmenter(tmp_path / "sam_vit_b.pth")
