"""Crashes mid-run, kills during a save, full disks, sockets: the spine's promises under failure."""

import errno
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import toy_task  # noqa: F401
from conftest import set_args
from scrapvision import runlog
from scrapvision import trainer as trainer_module
from scrapvision.api import build_task, train
from scrapvision.checkpoint import atomic_write, load_checkpoint
from scrapvision.cli import main
from scrapvision.errors import ScrapvisionError
from scrapvision.trainer import Trainer

TESTS = Path(__file__).resolve().parent
TOY = ["train.epochs=6", "train.log_every=1"]


def spawn(code: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not predicate():
        if time.time() > end:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


def step_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.endswith("}") and '"step"' in line)


TRAIN = """
    import sys, toy_task
    from scrapvision.api import train
    train("toy", overrides={overrides!r}, run_dir={run_dir!r}, resume={resume!r})
"""


def run_toy(overrides, run_dir=None, resume=None) -> subprocess.Popen:
    """Each run in its own single-threaded process, so float results can be compared bit for bit."""
    return spawn(TRAIN.format(overrides=overrides, run_dir=run_dir and str(run_dir), resume=resume and str(resume)))


def test_sigkill_at_a_random_step_then_resume_equals_uninterrupted(tmp_path):
    kill_after = random.Random().randint(9, 40)  # 8 steps per epoch: at least one checkpoint exists
    run, straight = tmp_path / "killed", tmp_path / "straight"
    reference = run_toy(TOY, straight)
    proc = run_toy(TOY + ["model.step_sleep=0.05"], run)
    try:
        wait_for(lambda: step_lines(run) >= kill_after or proc.poll() is not None)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill (step {kill_after})"
    killed_at = load_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= killed_at < 6
    resumed = run_toy(["model.step_sleep=0"], resume=run)
    assert resumed.wait() == 0 and reference.wait() == 0, resumed.stderr.read()[-2000:]
    a, b = load_checkpoint(run / "last.pt"), load_checkpoint(straight / "last.pt")
    assert a["epoch"] == b["epoch"] == 6
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0,
                                   msg=f"{key} differs after a kill at step {kill_after}")
    assert a["metrics"]["val_mse"] == b["metrics"]["val_mse"]
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_a_crash_right_after_a_checkpoint_keeps_that_epochs_metrics_row(tmp_path, monkeypatch):
    """The window the random kill above hits now and then: last.pt of epoch 2 is written, then the process dies.
    The resumed run starts at epoch 3, so epoch 2's row must already be in metrics.jsonl."""
    save = trainer_module.Trainer._save

    def save_then_die(self, run, epoch):
        save(self, run, epoch)
        if epoch + 1 == 2:
            raise KeyboardInterrupt("killed after the checkpoint")

    monkeypatch.setattr(trainer_module.Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train("toy", overrides=TOY, run_dir=tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    monkeypatch.setattr(trainer_module.Trainer, "_save", save)
    train("toy", overrides=TOY, resume=tmp_path / "run")
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_kill_during_checkpoint_save_never_exposes_a_half_written_file(tmp_path):
    target = tmp_path / "last.pt"
    for attempt in range(2):
        proc = spawn(f"""
            import torch
            from scrapvision.checkpoint import save_checkpoint
            i = 0
            while True:
                i += 1
                save_checkpoint({{"task": "toy", "model": {{"w": torch.full((1_000_000,), float(i))}}}}, {str(target)!r})
                print(i, flush=True)
        """)
        saves = random.Random().randint(1, 4)
        for _ in range(saves):
            proc.stdout.readline()
        time.sleep(random.Random().uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        payload = load_checkpoint(target)
        w = payload["model"]["w"]
        assert w.numel() == 1_000_000 and bool((w == w[0]).all()), f"attempt {attempt}: mixed contents"
        names = {p.name for p in tmp_path.iterdir()}
        assert names <= {"last.pt"} | {n for n in names if n.startswith(".last.pt.") and n.endswith(".tmp")}
    Trainer(build_task("toy"), resume=target)  # resuming the killed run removes its stale temporaries
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_full_disk_is_an_error_at_start(tmp_path, monkeypatch):
    usage = type("Usage", (), {"free": 10 * 2**20, "total": 2**30, "used": 2**30})
    monkeypatch.setattr(runlog.shutil, "disk_usage", lambda _: usage)
    with pytest.raises(ScrapvisionError, match="only 10 MiB free"):
        Trainer(build_task("toy"), run_dir=tmp_path / "run")


def test_training_opens_no_socket(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    result = train("toy", overrides=["train.epochs=1"], run_dir=tmp_path / "run")
    assert result.last_path.is_file()


def disk_full(*args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_a_write_leaves_the_old_file_and_names_it(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ScrapvisionError, match=f"cannot write {target}: No space left on device"):
        with atomic_write(target, "w") as handle:
            handle.write("new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_full_disk_mid_run_is_one_line_exit_2_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """The disk fills up while the checkpoint of epoch 2 is written (fsync is where ENOSPC surfaces on
    delayed-allocation file systems)."""
    saves: list[Path] = []
    real_save, real_fsync = trainer_module.save_checkpoint, os.fsync

    def save(payload, path):
        saves.append(Path(path))
        return real_save(payload, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    monkeypatch.setattr(os, "fsync", lambda fd: disk_full() if len(saves) >= 2 else real_fsync(fd))
    run = tmp_path / "run"
    assert main(["train", "--task", "toy", "--out", str(run), "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the epoch-1 progress line, then the error
    assert err[-1] == f"scrapvision: error: cannot write {run / 'last.pt'}: No space left on device", err
    assert [line.startswith("[toy] epoch=1 ") for line in err] == [True, False], err
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "step", "epo')  # a log line the full disk cut short
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the run resumes from epoch 1
    assert main(["train", "--task", "toy", "--resume", str(run)]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    rows = (run / "metrics.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3]


def test_error_in_training_and_eval_workers_is_one_line(tmp_path, capsys):
    """With train.num_workers > 0 the bad image is decoded in a worker process, whose exception PyTorch
    re-raises with the worker's whole traceback as message; the user still gets one line."""
    from scrapvision.checkpoint import model_payload, save_checkpoint
    from scrapvision.data.synthetic.steel_strip import write_kaggle_layout

    data = write_kaggle_layout(tmp_path / "data", n=6, seed=0, shape=(64, 384))
    images = sorted((data / "train_images").iterdir())
    for image in images:  # the header still reads (size checks pass); decoding fails, in the worker
        jpeg = image.read_bytes()
        image.write_bytes(jpeg[: 2 * len(jpeg) // 3])
    tiny = ["model.backbone=tiny_cnn", "model.decoder_channels=[16,16,8,8,8]", "data.image_size=[32,192]",
            "train.epochs=1", "train.batch_size=2", "train.num_workers=1"]
    task = build_task("severstal", overrides=tiny)
    checkpoint = save_checkpoint(model_payload(task, task.build_model()), tmp_path / "untrained.pt")
    sets = set_args(tiny)
    for argv in (["train", "--task", "severstal", "--out", str(tmp_path / "run")],
                 ["eval", "--task", "severstal", "--checkpoint", str(checkpoint)]):
        assert main([*argv, "--data", str(data), *sets]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith("scrapvision: error: image ") and "cannot be decoded" in err[0], err
        assert any(image.name in err[0] for image in images), err
