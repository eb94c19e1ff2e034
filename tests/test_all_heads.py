"""Promises every registered head keeps, checked the same way for each (a new head is covered for free):
bad input is a one-line error with exit code 2 (or a documented skip), also from DataLoader workers;
checkpoints of another task or architecture and weights files carrying code are refused; ONNX export
matches PyTorch; a run stopped mid-way resumes bit for bit; and nothing opens a network connection."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import CodePayload, one_line_error, set_args, write_photos
from scrapvision import TASKS
from scrapvision.api import evaluate, train
from scrapvision.checkpoint import load_checkpoint, save_checkpoint
from scrapvision.cli import main
from scrapvision.engines import OnnxEngine
from scrapvision.export import export_onnx
from scrapvision.heads import load_all
from scrapvision.trainer import TrainingDiverged

load_all()
HEADS = [name for name in TASKS.names() if name != "toy"]


def output_tensors(out) -> list[torch.Tensor]:
    """Every tensor of a model output (a tensor, or tuples / lists / dicts of them)."""
    if isinstance(out, torch.Tensor):
        return [out]
    items = out.values() if isinstance(out, dict) else out
    return [t for item in items for t in output_tensors(item)]


@pytest.mark.parametrize("name", HEADS)
def test_head_declares_a_smoke_config_and_example_input(name, smoke):
    cls = TASKS.get(name)
    assert cls.smoke_overrides, f"{name}: smoke_overrides are what keeps these tests fast"
    task, model, _ = smoke(name)
    example = task.example_input(2)
    with torch.no_grad():
        out = model(*example) if isinstance(example, tuple) else model(example)
    tensors = output_tensors(out)
    assert tensors and all(t.shape[0] == 2 and torch.isfinite(t).all() for t in tensors), name


@pytest.mark.parametrize("name", HEADS)
def test_onnx_export_matches_pytorch(name, smoke, tmp_path):
    task, model, _ = smoke(name)
    engine = OnnxEngine(export_onnx(task, model, tmp_path / f"{name}.onnx"))
    example = task.example_input(3)
    inputs = example if isinstance(example, tuple) else (example,)
    with torch.no_grad():
        expected, got = model(*inputs), engine(*inputs)
    if isinstance(expected, torch.Tensor):
        expected, got = (expected,), (got,)
    elif isinstance(expected, dict):
        assert expected.keys() == got.keys()
        expected, got = tuple(expected.values()), tuple(got.values())
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize(
    ("setting", "message"),
    [("model.no_such_key=1", "unknown config key 'model.no_such_key'"),
     ("train.epochs=many", "config key 'train.epochs': expected an integer"),
     ("optim.lr=[1, 2]", "config key 'optim.lr': expected a number")],
)
def test_bad_config_is_one_line_exit_2(name, setting, message, capsys):
    assert main(["train", "--task", name, "--set", setting]) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize("name", HEADS)
def test_missing_or_broken_config_file(name, tmp_path, capsys):
    assert main(["train", "--task", name, "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: not found" in one_line_error(capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["train", "--task", name, "--config", str(bad)]) == 2
    assert "bad.yaml" in one_line_error(capsys)


@pytest.mark.parametrize("name", HEADS)
def test_checkpoint_of_another_task_is_refused(name, smoke, capsys):
    other = next(h for h in HEADS if h != name)
    _, _, path = smoke(other)
    assert main(["eval", "--task", name, "--checkpoint", str(path)]) == 2
    assert f"trained for task '{other}', not '{name}'" in one_line_error(capsys)


@pytest.mark.parametrize("name", HEADS)
def test_checkpoint_of_another_architecture_is_refused(name, smoke, tmp_path, capsys):
    _, _, path = smoke(name)
    payload = load_checkpoint(path)
    key = next(k for k, v in payload["model"].items() if v.ndim >= 2)
    payload["model"][key] = torch.zeros(*[s + 1 for s in payload["model"][key].shape])
    payload.pop("format")
    save_checkpoint(payload, tmp_path / "other_arch.pt")
    assert main(["eval", "--task", name, "--checkpoint", str(tmp_path / "other_arch.pt")]) == 2
    assert "does not fit the model" in one_line_error(capsys)


@pytest.mark.parametrize("name", HEADS)
def test_pickled_code_in_a_checkpoint_is_not_run(name, tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"format": "scrapvision-checkpoint/1", "task": name, "model": CodePayload(marker)}, tmp_path / "evil.pt")
    assert main(["eval", "--task", name, "--checkpoint", str(tmp_path / "evil.pt")]) == 2
    assert "pickled Python objects" in one_line_error(capsys)
    assert not marker.exists()


def test_a_look_at_the_config_maps_the_checkpoint_and_still_refuses_pickled_code(smoke, tmp_path, capsys):
    """``eval --data`` first reads the checkpoint's data.root with its tensors memory-mapped (not read): the same
    payload as a full load, and a pickled object is refused on that path too, before any code runs."""
    _, _, path = smoke("segdec")
    full, mapped = load_checkpoint(path), load_checkpoint(path, mmap=True)
    assert mapped["config"] == full["config"] and mapped["model"].keys() == full["model"].keys()
    assert all(torch.equal(mapped["model"][k], v) for k, v in full["model"].items())
    marker = tmp_path / "ran"
    torch.save({"format": "scrapvision-checkpoint/1", "task": "segdec", "model": CodePayload(marker)}, tmp_path / "evil.pt")
    assert main(["eval", "--task", "segdec", "--checkpoint", str(tmp_path / "evil.pt"), "--data", str(tmp_path)]) == 2
    assert "pickled Python objects" in one_line_error(capsys)
    assert not marker.exists()


@pytest.mark.parametrize("name", HEADS)
def test_missing_and_empty_data_folders(name, smoke, tmp_path, capsys):
    _, _, path = smoke(name)
    assert main(["eval", "--task", name, "--checkpoint", str(path), "--data", str(tmp_path / "absent")]) == 2
    assert "absent" in one_line_error(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--task", name, "--checkpoint", str(path), "--data", str(tmp_path / "empty")]) == 2
    assert "empty" in one_line_error(capsys)


#: heads whose documented policy is to skip an unreadable image and name it (``data.unreadable=skip``);
#: every other head stops at the first one with a one-line error naming it
SKIPS_UNREADABLE = {"scrap_cls", "pretrain"}


def bad_image_bytes() -> dict[str, bytes]:
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(good, format="JPEG")
    return {
        "zero.jpg": b"",
        "truncated.jpg": good.getvalue()[: len(good.getvalue()) // 2],
        "text.png": b"this is not an image\n",
    }


def predict_one_bad_file(name: str, checkpoint: Path, folder: Path, file_name: str, workers: int = 0) -> int:
    """Predict on a folder that holds only ``file_name`` (so a fail-fast head cannot stop at another one)."""
    folder.mkdir(parents=True)
    (folder / file_name).write_bytes(bad_image_bytes()[file_name])
    return main(["predict", "--task", name, "--checkpoint", str(checkpoint), "--input", str(folder),
                 "--out", str(folder.parent / "out"), "--workers", str(workers)])


def assert_policy_kept(name: str, file_name: str, code: int, capsys) -> None:
    captured = capsys.readouterr()
    if name in SKIPS_UNREADABLE:
        assert code == 0, captured.err
        skipped = [line for line in captured.err.splitlines() if file_name in line]
        assert len(skipped) == 1 and "skipped" in skipped[0], captured.err
    else:
        assert code == 2, captured.err
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("scrapvision: error:"), captured.err
        assert file_name in lines[0], lines[0]


@pytest.mark.parametrize("file_name", sorted(bad_image_bytes()))
@pytest.mark.parametrize("name", HEADS)
def test_predict_on_each_unreadable_image_keeps_the_head_policy(name, file_name, smoke, tmp_path, capsys):
    _, _, path = smoke(name)
    code = predict_one_bad_file(name, path, tmp_path / "bad", file_name)
    assert_policy_kept(name, file_name, code, capsys)
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("name", HEADS)
def test_error_in_a_dataloader_worker_is_one_line(name, smoke, tmp_path, capsys):
    """PyTorch re-raises a worker's exception with the worker's whole traceback as its message."""
    _, _, path = smoke(name)
    code = predict_one_bad_file(name, path, tmp_path / "bad", "text.png", workers=1)
    assert_policy_kept(name, "text.png", code, capsys)


@pytest.mark.parametrize("name", HEADS)
def test_smoke_training_eval_export_and_predict_open_no_socket(name, tmp_path, monkeypatch, one_thread):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name}: network access attempted {args}")

    for owner, attribute in ((socket.socket, "connect"), (socket.socket, "connect_ex"),
                             (socket, "create_connection"), (socket, "getaddrinfo")):
        monkeypatch.setattr(owner, attribute, refuse)
    overrides = [*TASKS.get(name).smoke_overrides, "train.epochs=1"]
    last = tmp_path / "run" / "last.pt"
    assert main(["train", "--task", name, "--out", str(tmp_path / "run"), *set_args(overrides)]) == 0
    assert main(["eval", "--task", name, "--checkpoint", str(last)]) == 0
    assert main(["export", "--task", name, "--checkpoint", str(last), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["predict", "--task", name, "--checkpoint", str(last), "--input", str(write_photos(tmp_path / "in")),
                 "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "predictions.csv").is_file()


@pytest.mark.parametrize("name", HEADS)
def test_pickled_code_in_a_weights_file_is_not_run(name, tmp_path, capsys):
    marker = tmp_path / "ran"
    torch.save({"conv.weight": CodePayload(marker)}, tmp_path / "evil.pt")
    overrides = [*TASKS.get(name).smoke_overrides, f"model.weights={tmp_path / 'evil.pt'}"]
    assert main(["train", "--task", name, "--out", str(tmp_path / "run"), *set_args(overrides)]) == 2
    line = one_line_error(capsys)
    assert "evil.pt" in line and "pickled Python objects" in line, line
    assert not marker.exists()


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("name", HEADS)
def test_divergence_stop_then_resume_equals_uninterrupted_training(name, workers, tmp_path, monkeypatch, one_thread):
    """Stopped mid-run (the loss turns NaN in epoch 2 of 3) and resumed from the last good checkpoint, a
    head ends bit for bit where the uninterrupted run ends: nothing that steers training lives outside
    the checkpoint and the per-epoch seeds (model, optimizer, schedule, extras, sample order, augmentation)."""
    cls = TASKS.get(name)
    overrides = [*cls.smoke_overrides, "train.epochs=3", f"train.num_workers={workers}"]
    straight = train(name, overrides=overrides, run_dir=tmp_path / "straight")
    healthy = cls.compute_loss

    def nan_after_first_step_of_epoch_2(self, model, batch, progress):
        loss, logs = healthy(self, model, batch, progress)
        return (loss * float("nan") if progress > 1 / 3 else loss), logs

    monkeypatch.setattr(cls, "compute_loss", nan_after_first_step_of_epoch_2)
    with pytest.raises(TrainingDiverged, match="loss became nan.*last good checkpoint"):
        train(name, overrides=overrides, run_dir=tmp_path / "cut")
    monkeypatch.setattr(cls, "compute_loss", healthy)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] in (1, 2)
    resumed = train(name, resume=tmp_path / "cut")
    a, b = load_checkpoint(straight.last_path), load_checkpoint(resumed.last_path)
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=0, atol=0, equal_nan=True, msg=key)
    assert a["best"] == b["best"] and a["extras"] == b["extras"]
    rows = (tmp_path / "cut" / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("name", HEADS)
def test_onnx_engine_evaluates_like_pytorch(name, smoke):
    task, model, _ = smoke(name)
    import tempfile

    engine = OnnxEngine(export_onnx(task, model, Path(tempfile.mkdtemp()) / "m.onnx"))
    a, b = evaluate(task, model), evaluate(task, engine)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-3, nan_ok=True), key
