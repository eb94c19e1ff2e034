"""``predict --engine onnx`` writes the rows ``--engine torch`` writes, for every registered head (a new
head is covered for free), on a folder and on a CSV list; canet on samples whose photo count differs from
the N it was exported with, which an export with a fixed photo axis could not run."""

from __future__ import annotations

import argparse
import csv
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import one_line_error, write_photos
from scrapvision import TASKS
from scrapvision.cli import main
from scrapvision.engines import OnnxEngine
from scrapvision.export import export_onnx
from scrapvision.heads import load_all
from scrapvision.heads.canet import CanetTask

load_all()
HEADS = [name for name in TASKS.names() if name != "toy"]
#: absolute tolerance on every number of a prediction row (CSVs carry up to 6 decimals) and on canet's
#: raw outputs; measured differences between the engines are ~1e-7
TOLERANCE = 1e-4
SAMPLE_PHOTOS = {"a": 3, "b": 5}  # canet's smoke config trains and exports at N = 2
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two sub-folders of photos: eight images for the image heads, two samples (3 and 5 photos) for canet."""
    root = tmp_path_factory.mktemp("photos")
    for seed, (sample, n) in enumerate(SAMPLE_PHOTOS.items()):
        write_photos(root / sample, n, seed)
    return root


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_list(task, root: Path) -> Path:
    """A CSV list of what the head predicts on: sample folders for canet, image files for the others."""
    if task.predict_key == "sample":
        column, entries = "sample", sorted(SAMPLE_PHOTOS)
    else:
        column, entries = "image", sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    listing = root / f"list_{task.name}.csv"
    listing.write_text("\n".join([column, *entries]) + "\n")
    return listing


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_rows_close(got: list[dict[str, str]], expected: list[dict[str, str]]) -> None:
    """Same rows and columns; text equal once numbers are masked, numbers within TOLERANCE."""
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected):
        assert g.keys() == e.keys()
        for key in e:
            assert NUMBER.sub("#", g[key]) == NUMBER.sub("#", e[key]), (key, g[key], e[key])
            numbers = [float(x) for x in NUMBER.findall(g[key])]
            assert numbers == pytest.approx([float(x) for x in NUMBER.findall(e[key])], abs=TOLERANCE), (key, e)


def without_overlays(name: str) -> list[str]:
    """Overlay pictures take most of a small predict run and are not what these tests compare."""
    parser = argparse.ArgumentParser()
    TASKS.get(name).add_predict_args(parser)
    options = {option for action in parser._actions for option in action.option_strings}
    return ["--overlays", "0"] if "--overlays" in options else ["--no-overlays"] if "--no-overlays" in options else []


def predict(name: str, checkpoint: Path, source: Path, out: Path, engine: str = "torch") -> int:
    return main(["predict", "--task", name, "--checkpoint", str(checkpoint), "--engine", engine,
                 "--input", str(source), "--out", str(out), *without_overlays(name)])


@pytest.mark.parametrize("listed", [False, True], ids=["folder", "csv_list"])
@pytest.mark.parametrize("name", HEADS)
def test_onnx_engine_predicts_like_torch(name, listed, smoke, photos, tmp_path, one_thread):
    task, _, checkpoint = smoke(name)
    source = write_list(task, photos) if listed else photos
    for engine in ("torch", "onnx"):
        assert predict(name, checkpoint, source, tmp_path / engine, engine) == 0, engine
    expected = read_rows(tmp_path / "torch" / "predictions.csv")
    assert_rows_close(read_rows(tmp_path / "onnx" / "predictions.csv"), expected)
    if name == "canet":  # every photo of each sample went in, not the training N
        assert task.cfg.data.images_per_sample not in SAMPLE_PHOTOS.values()
        assert {r["sample"]: int(r["photos"]) for r in expected} == SAMPLE_PHOTOS


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_canet_graph_pools_any_photo_count_like_torch(exporter, smoke, tmp_path, one_thread):
    """The mean over photos is traced on the input's shape, not on the N of the export."""
    task, model, _ = smoke("canet")
    engine = OnnxEngine(export_onnx(task, model, tmp_path / "canet.onnx", exporter=exporter), threads=1)
    assert engine.session.get_inputs()[0].shape[:2] == ["batch", "photos"]
    size = task.cfg.model.img_size
    generator = torch.Generator().manual_seed(0)
    for batch, n in ((1, 2), (2, 4), (1, 7)):
        images = torch.rand(batch, n, 3, size, size, generator=generator)
        with torch.no_grad():
            expected, got = model(images), engine(images)
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=TOLERANCE, rtol=0, msg=f"N={n} {key}")


def test_graph_with_a_fixed_photo_count_fails_in_one_line_and_a_cached_one_is_renewed(
        smoke, photos, tmp_path, monkeypatch, capsys, one_thread):
    """A file exported before the photo axis was dynamic (simulated) cannot take 3 photos: one line, exit 2.
    The same file cached next to a checkpoint is exported again instead."""
    _, _, smoke_checkpoint = smoke("canet")
    checkpoint = tmp_path / "canet.pt"
    shutil.copy(smoke_checkpoint, checkpoint)
    with monkeypatch.context() as patch:
        patch.setattr(CanetTask, "export_dynamic_axes", lambda self: {0: "batch"})
        assert main(["export", "--task", "canet", "--checkpoint", str(checkpoint),
                     "--out", str(checkpoint.with_suffix(".onnx"))]) == 0
    capsys.readouterr()
    assert predict("canet", checkpoint.with_suffix(".onnx"), photos, tmp_path / "old", engine="auto") == 2
    line = one_line_error(capsys)
    assert "canet.onnx: cannot run on input0 [1, 3, 3," in line and "re-export" in line, line
    assert predict("canet", checkpoint, photos, tmp_path / "cached", engine="onnx") == 0
    assert {r["sample"]: int(r["photos"]) for r in read_rows(tmp_path / "cached" / "predictions.csv")} == SAMPLE_PHOTOS


@pytest.mark.parametrize("name", HEADS)
def test_auto_engine_picks_an_exported_engine_on_cpu_when_it_agrees_with_torch(name, smoke, tmp_path, one_thread, capsys):
    from scrapvision.api import load_engine
    from scrapvision.engines import OpenVinoEngine

    _, _, checkpoint = smoke(name)
    local = tmp_path / checkpoint.name  # the cached CKPT.onnx goes next to this copy
    shutil.copy(checkpoint, local)
    _, engine = load_engine(name, local, engine="auto")
    assert isinstance(engine, (OnnxEngine, OpenVinoEngine)), capsys.readouterr().err
    assert local.with_suffix(".onnx").is_file() and "engine auto" not in capsys.readouterr().err


def test_auto_engine_falls_back_to_torch_in_one_line(smoke, tmp_path, one_thread, capsys, monkeypatch):
    import importlib.util

    from scrapvision import api, engines

    _, _, checkpoint = smoke("segdec")
    local = tmp_path / checkpoint.name
    shutil.copy(checkpoint, local)
    monkeypatch.setattr(engines, "PARITY_ATOL", -1.0)  # no engine can agree that closely
    _, engine = api.load_engine("segdec", local, engine="auto")
    err = capsys.readouterr().err.strip()
    assert isinstance(engine, torch.nn.Module) and not hasattr(engine, "path"), err
    assert "\n" not in err and "ONNX Runtime differs from torch" in err and err.endswith("using torch"), err
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n in ("onnxruntime", "openvino") else find_spec(n, *a))
    _, engine = api.load_engine("segdec", local, engine="auto")
    assert not hasattr(engine, "path") and "neither onnxruntime nor openvino is installed" in capsys.readouterr().err


def test_auto_engine_runs_a_few_shot_clip_anomaly_on_torch_and_says_why(smoke, tmp_path, one_thread, capsys):
    """The few-shot memory bank is filled on the torch model after loading, outside any exported graph."""
    from scrapvision.api import evaluate, load_engine

    _, _, checkpoint = smoke("clip_anomaly")
    local = tmp_path / checkpoint.name
    shutil.copy(checkpoint, local)
    task, engine = load_engine("clip_anomaly", local, ["model.mode=few_shot", "few_shot.k=2"], engine="auto")
    err = capsys.readouterr().err.strip()
    assert not isinstance(engine, OnnxEngine) and "\n" not in err and "few_shot" in err, err
    assert "pixel_ap" in " ".join(evaluate(task, engine))
