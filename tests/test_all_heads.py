"""Promises every registered head keeps, checked the same way for each (a new head is covered for free):
bad input is a one-line error with exit code 2 (or a documented skip), checkpoints of another task or
architecture are refused, ONNX export matches PyTorch, and nothing opens a network connection."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from scrapvision import TASKS
from scrapvision.api import build_task, evaluate
from scrapvision.checkpoint import load_checkpoint, model_payload, save_checkpoint
from scrapvision.cli import main
from scrapvision.export import OnnxEngine, export_onnx
from scrapvision.heads import load_all

load_all()
HEADS = [name for name in TASKS.names() if name != "toy"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """An untrained checkpoint of each head in its smoke configuration (built once per head)."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            task = build_task(name, overrides=TASKS.get(name).smoke_overrides)
            torch.manual_seed(0)
            model = task.build_model().eval()
            path = tmp_path_factory.mktemp(name) / "smoke.pt"
            save_checkpoint(model_payload(task, model), path)
            cache[name] = (task, model, path)
        return cache[name]

    return get


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("scrapvision: error:"), err[0]
    return err[0]


@pytest.mark.parametrize("name", HEADS)
def test_head_declares_a_smoke_config_and_example_input(name, smoke):
    cls = TASKS.get(name)
    assert cls.smoke_overrides, f"{name}: smoke_overrides are what keeps these tests fast"
    task, model, _ = smoke(name)
    example = task.example_input(2)
    with torch.no_grad():
        out = model(*example) if isinstance(example, tuple) else model(example)
    assert out is not None


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

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": "scrapvision-checkpoint/1", "task": name, "model": Payload()}, tmp_path / "evil.pt")
    assert main(["eval", "--task", name, "--checkpoint", str(tmp_path / "evil.pt")]) == 2
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


def write_bad_images(folder: Path) -> dict[str, bytes]:
    import io

    from PIL import Image

    good = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(good, format="JPEG")
    files = {
        "zero.jpg": b"",
        "truncated.jpg": good.getvalue()[: len(good.getvalue()) // 2],
        "text.png": b"this is not an image\n",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, data in files.items():
        (folder / file_name).write_bytes(data)
    return files


@pytest.mark.parametrize("name", HEADS)
def test_predict_on_unreadable_images_fails_cleanly_or_reports_skips(name, smoke, tmp_path, capsys):
    _, _, path = smoke(name)
    bad = write_bad_images(tmp_path / "bad")
    code = main(["predict", "--task", name, "--checkpoint", str(path), "--input", str(tmp_path / "bad"),
                 "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    if code == 2:
        line = captured.err.strip().splitlines()
        assert len(line) == 1 and line[0].startswith("scrapvision: error:"), captured.err
    else:
        assert code == 0, captured.err
        report = captured.out + captured.err
        assert all(file_name in report for file_name in bad), "a skip policy must name what it skipped"
    assert not list((tmp_path / "out").rglob("*.tmp")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("name", HEADS)
def test_smoke_training_and_eval_open_no_socket(name, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name}: network access attempted {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    overrides = [*TASKS.get(name).smoke_overrides, "train.epochs=1"]
    assert main(["train", "--task", name, "--out", str(tmp_path / "run"), *sum((["--set", o] for o in overrides), [])]) == 0
    assert main(["eval", "--task", name, "--checkpoint", str(tmp_path / "run" / "last.pt")]) == 0
    assert main(["export", "--task", name, "--checkpoint", str(tmp_path / "run" / "last.pt"),
                 "--out", str(tmp_path / "m.onnx")]) == 0


@pytest.mark.parametrize("name", HEADS)
def test_onnx_engine_evaluates_like_pytorch(name, smoke):
    task, model, _ = smoke(name)
    import tempfile

    engine = OnnxEngine(export_onnx(task, model, Path(tempfile.mkdtemp()) / "m.onnx"))
    a, b = evaluate(task, model), evaluate(task, engine)
    assert a.keys() == b.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-3, nan_ok=True), key
