"""ONNX export, the ONNX Runtime engine, and streamed / resumed / sharded prediction (severstal head)."""

import csv
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from scrapvision.api import evaluate, load_engine, load_trained, train
from scrapvision.cli import main
from scrapvision.data.synthetic.steel_strip import write_kaggle_layout
from scrapvision.engines import OnnxEngine
from scrapvision.export import export_onnx, read_onnx_metadata
from scrapvision.heads.severstal import SeverstalTask

TINY = [
    "model.backbone=tiny_cnn", "model.decoder_channels=[32,16,16,8,8]", "data.image_size=[32,192]",
    "data.synthetic_shape=[64,384]", "data.synthetic_train=16", "data.synthetic_val=8", "train.epochs=1",
    "train.batch_size=4",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return train("severstal", overrides=TINY, run_dir=tmp_path_factory.mktemp("exp") / "run").best_path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_kaggle_layout(tmp_path_factory.mktemp("imgs"), n=7, seed=3, shape=(64, 384)) / "train_images"


def rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_onnx_matches_torch_with_dynamic_batch(ckpt, tmp_path):
    task, model = load_trained("severstal", ckpt)
    path = export_onnx(task, model, tmp_path / "m.onnx")
    assert read_onnx_metadata(path)["task"] == "severstal"
    engine = OnnxEngine(path)
    x = task.example_input(3)  # exported with batch 2
    with torch.no_grad():
        for a, b in zip(model(x), engine(x)):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


def test_eval_and_predict_agree_between_engines(ckpt, images, tmp_path, capsys):
    torch_task, model = load_engine("severstal", ckpt, data=images.parent)
    onnx_task, engine = load_engine("severstal", ckpt, data=images.parent, engine="onnx")
    assert isinstance(engine, OnnxEngine) and ckpt.with_suffix(".onnx").is_file()
    a, b = evaluate(torch_task, model), evaluate(onnx_task, engine)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-6), key
    for engine_name in ("torch", "onnx"):
        assert main(["predict", "--task", "severstal", "--checkpoint", str(ckpt), "--engine", engine_name,
                     "--input", str(images), "--out", str(tmp_path / engine_name), "--overlays", "0"]) == 0
    assert rows(tmp_path / "torch" / "submission.csv") == rows(tmp_path / "onnx" / "submission.csv")
    onnx_file = tmp_path / "exported.onnx"
    assert main(["export", "--task", "severstal", "--checkpoint", str(ckpt), "--out", str(onnx_file)]) == 0
    assert main(["predict", "--task", "severstal", "--checkpoint", str(onnx_file), "--input", str(images),
                 "--out", str(tmp_path / "file"), "--overlays", "0"]) == 0
    assert rows(tmp_path / "file" / "submission.csv") == rows(tmp_path / "torch" / "submission.csv")
    assert main(["predict", "--task", "canet", "--checkpoint", str(onnx_file), "--input", str(images),
                 "--out", str(tmp_path / "x")]) == 2
    assert "exported for task 'severstal'" in capsys.readouterr().err


def test_interrupted_prediction_resumes_without_redoing_rows(ckpt, images, tmp_path, monkeypatch):
    args = ["predict", "--task", "severstal", "--checkpoint", str(ckpt), "--input", str(images),
            "--overlays", "0", "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    expected = rows(tmp_path / "full" / "submission.csv")
    seen: list[str] = []
    original = SeverstalTask.predict_batch

    def crash_on_third_batch(self, model, batch, out, a):
        if len(seen) >= 4:
            raise KeyboardInterrupt
        seen.extend(batch["file"])
        return original(self, model, batch, out, a)

    monkeypatch.setattr(SeverstalTask, "predict_batch", crash_on_third_batch)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    part = tmp_path / "cut" / ".parts" / "part0.csv"
    assert len(rows(part)) == 4 * 4
    with open(part, "a") as handle:
        handle.write("syn3_00005.jpg,1,12 3")  # a torn line, as after a power cut mid-write
    done_before = list(seen)
    seen.clear()
    monkeypatch.setattr(SeverstalTask, "predict_batch", lambda self, m, b, o, a: (seen.extend(b["file"]), original(self, m, b, o, a))[1])
    assert main([*args, "--out", str(tmp_path / "cut")]) == 0
    assert sorted(seen) == sorted(set(p.name for p in images.iterdir()) - set(done_before))
    assert rows(tmp_path / "cut" / "submission.csv") == expected


SHARD = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from scrapvision.cli import main
    sys.exit(main(["predict", "--task", "severstal", "--checkpoint", {ckpt!r}, "--input", {images!r},
                   "--out", {out!r}, "--overlays", "0", "--batch-size", "2", "--precision", "fp32"]))
    """
)


def test_torchrun_two_ranks_shard_and_merge(ckpt, images, tmp_path):
    assert main(["predict", "--task", "severstal", "--checkpoint", str(ckpt), "--input", str(images),
                 "--out", str(tmp_path / "one"), "--overlays", "0", "--precision", "fp32"]) == 0
    script = tmp_path / "shard.py"
    script.write_text(SHARD.format(ckpt=str(ckpt), images=str(images), out=str(tmp_path / "two")))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29700 + os.getpid() % 1000), str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = sorted((tmp_path / "two" / ".parts").glob("part*.csv"))
    assert [p.name for p in parts] == ["part0.csv", "part1.csv"]
    assert {len(rows(p)) for p in parts} == {4 * 4, 3 * 4}
    assert rows(tmp_path / "two" / "submission.csv") == rows(tmp_path / "one" / "submission.csv")
