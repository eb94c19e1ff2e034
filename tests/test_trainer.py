import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import toy_task  # noqa: F401  (registers the "toy" task)
from scrapvision.api import build_task, train
from scrapvision.checkpoint import load_checkpoint, save_checkpoint
from scrapvision.errors import CheckpointError, ScrapvisionError
from scrapvision.trainer import Trainer, TrainingDiverged

REPO = Path(__file__).resolve().parents[1]


def weights(path):
    return load_checkpoint(path)["model"]


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=0, atol=atol, msg=key)


def test_fit_writes_run_folder_and_learns(tmp_path):
    # 12 epochs: at this lr the toy halves its error by epoch ~7 (6 epochs stopped at 0.51x)
    result = train("toy", overrides=["train.epochs=12"], run_dir=tmp_path / "run")
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "metrics.csv", "best.pt", "last.pt"} <= files
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 13))
    assert float(rows[-1]["val_mse"]) < 0.5 * float(rows[0]["val_mse"])
    lines = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "step" for r in lines)
    ckpt = load_checkpoint(result.best_path, task="toy")
    assert ckpt["config"]["train"]["epochs"] == 12
    assert ckpt["best"] == pytest.approx(min(float(r["val_mse"]) for r in rows))
    assert not list(result.run_dir.glob("*.tmp"))


def test_param_groups_of_a_task_keep_their_lr_ratio_through_warmup_and_cosine(tmp_path, monkeypatch):
    def head_ten_times_faster(self, model):
        head = list(model.net[-1].parameters())
        rest = [p for p in model.parameters() if all(p is not h for h in head)]
        return [{"params": rest}, {"params": head, "lr": 10 * self.cfg.optim.lr}]

    monkeypatch.setattr(toy_task.ToyTask, "param_groups", head_ten_times_faster)
    result = train("toy", overrides=["train.epochs=3", "optim.warmup_epochs=1"], run_dir=tmp_path / "run")
    groups = load_checkpoint(result.last_path)["optimizer"]["param_groups"]
    assert len(groups) == 2 and 0 < groups[0]["lr"] < 1e-2  # the schedule ran
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])


def test_param_groups_that_leave_out_a_trainable_parameter_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(toy_task.ToyTask, "param_groups", lambda self, model: [{"params": model.net[0].parameters()}])
    with pytest.raises(ScrapvisionError, match="leaves out trainable parameters"):
        train("toy", overrides=["train.epochs=1"], run_dir=tmp_path / "run")


class BackboneAndHead(torch.nn.Module):
    """The toy regression with its first layer named ``backbone``, as the heads name their pretrained part."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU())
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.backbone(x)).squeeze(-1)


def test_backbone_lr_scale_moves_the_backbone_slower_and_zero_freezes_it(tmp_path, monkeypatch):
    initial = {}

    def build_model(self):
        torch.manual_seed(123)
        model = BackboneAndHead()
        initial.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(toy_task.ToyTask, "build_model", build_model)
    result = train("toy", overrides=["train.epochs=2", "optim.backbone_lr_scale=0.1"], run_dir=tmp_path / "slow")
    groups = load_checkpoint(result.last_path)["optimizer"]["param_groups"]
    assert [len(g["params"]) for g in groups] == [2, 2]  # head weight + bias, then the backbone's
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"]) and groups[0]["lr"] > 0

    result = train("toy", overrides=["train.epochs=2", "optim.backbone_lr_scale=0"], run_dir=tmp_path / "frozen")
    trained = weights(result.last_path)
    for key in ("backbone.0.weight", "backbone.0.bias"):
        torch.testing.assert_close(trained[key], initial[key], rtol=0, atol=0)
    assert not torch.equal(trained["head.weight"], initial["head.weight"])  # the head still learned


def test_backbone_lr_scale_on_a_model_without_a_backbone_names_the_key(tmp_path):
    with pytest.raises(ScrapvisionError, match="optim.backbone_lr_scale"):
        train("toy", overrides=["train.epochs=1", "optim.backbone_lr_scale=0.5"], run_dir=tmp_path / "run")
    with pytest.raises(ScrapvisionError, match="optim.backbone_lr_scale.*negative"):
        train("toy", overrides=["train.epochs=1", "optim.backbone_lr_scale=-1"], run_dir=tmp_path / "neg")


def test_training_into_a_folder_that_holds_a_run_is_refused(tmp_path, capsys):
    from scrapvision.cli import main

    first = train("toy", overrides=["train.epochs=1"], run_dir=tmp_path / "run")
    before = {p.name: p.read_bytes() for p in first.run_dir.iterdir()}
    capsys.readouterr()  # the first run's epoch log
    assert main(["train", "--task", "toy", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0], err
    assert {p.name: p.read_bytes() for p in first.run_dir.iterdir()} == before  # nothing touched


def test_resume_continues_exactly(tmp_path):
    full = train("toy", overrides=["train.epochs=4"], run_dir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):  # interrupted in the middle of epoch 3 (8 steps per epoch)
        train("toy", overrides=["train.epochs=4", "model.interrupt_at_step=20"], run_dir=tmp_path / "part")
    assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 2
    resumed = train("toy", overrides=["model.interrupt_at_step=0"], resume=tmp_path / "part")
    assert resumed.run_dir == tmp_path / "part"
    assert load_checkpoint(resumed.last_path)["epoch"] == 4
    assert_same_weights(weights(full.last_path), weights(resumed.last_path))
    rows = list(csv.DictReader(open(resumed.run_dir / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 2.*last good checkpoint"):
        train("toy", overrides=["model.nan_at_step=10"], run_dir=tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1


def test_unwritable_output_is_an_error_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScrapvisionError, match="not writable"):
        Trainer(build_task("toy"), run_dir=blocker / "run")


def test_checkpoint_of_another_task_and_pickled_code_are_refused(tmp_path):
    save_checkpoint({"task": "other", "model": {}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="trained for task 'other', not 'toy'"):
        load_checkpoint(tmp_path / "c.pt", task="toy")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format": "scrapvision-checkpoint/1", "task": "toy", "model": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    import toy_task
    from scrapvision.api import train
    train("toy", overrides=["train.epochs=2", "optim.grad_clip=0.5"], run_dir={out!r})
    """
)


def test_torchrun_two_processes_train_the_same_model_as_one(tmp_path):
    script = tmp_path / "run.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name, procs in (("one", 1), ("two", 2)):
        script.write_text(DDP_SCRIPT.format(tests=str(REPO / "tests"), out=str(tmp_path / name)))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
               "--master_port", str(29500 + procs + os.getpid() % 1000), str(script)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = load_checkpoint(tmp_path / "one" / "last.pt"), load_checkpoint(tmp_path / "two" / "last.pt")
    assert one["step"] == two["step"] == 2 * (64 // 8)
    assert_same_weights(one["model"], two["model"], atol=1e-5)
    assert one["metrics"]["val_mse"] == pytest.approx(two["metrics"]["val_mse"], rel=1e-4)


def test_every_number_a_head_logs_is_averaged_per_epoch_into_metrics_csv(tmp_path, monkeypatch):
    """A head's loss terms (segdec's loss_seg / loss_dec) reach metrics.csv as train_<name> epoch means."""
    original = toy_task.ToyTask.compute_loss

    def with_terms(self, model, batch, progress):
        loss, logs = original(self, model, batch, progress)
        return loss, {**logs, "term": float(loss.detach()) * 2 + progress, "note": "text", "flag": True}

    monkeypatch.setattr(toy_task.ToyTask, "compute_loss", with_terms)
    result = train("toy", overrides=["train.epochs=2", "train.log_every=1"], run_dir=tmp_path / "run")
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    steps = [r for r in map(json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    for row in rows:
        terms = [s["term"] for s in steps if s["epoch"] == int(row["epoch"])]
        assert terms and float(row["train_term"]) == pytest.approx(sum(terms) / len(terms))
    assert "train_note" not in rows[0] and "train_flag" not in rows[0]


def test_warnings_of_a_head_go_to_stderr_and_metrics_jsonl_once_each(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(toy_task.ToyTask, "epoch_end",
                        lambda self, record: [f"odd epoch {record['epoch']}"] if record["epoch"] % 2 else [],
                        raising=False)
    result = train("toy", overrides=["train.epochs=3"], run_dir=tmp_path / "run")
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["message"]) for r in records if r["kind"] == "warning"] == [(1, "odd epoch 1"), (3, "odd epoch 3")]
    assert capsys.readouterr().err.count("[toy] warning: odd epoch") == 2
    assert "message" not in open(result.run_dir / "metrics.csv").readline()


def test_ema_decay_saves_the_moving_average_of_every_step_and_trains_the_same_weights(tmp_path, monkeypatch):
    plain = train("toy", overrides=["train.epochs=2"], run_dir=tmp_path / "plain")
    seen = []  # the trained weights at the start of every step: those after the step before
    compute_loss = toy_task.ToyTask.compute_loss

    def recording(self, model, batch, progress):
        seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return compute_loss(self, model, batch, progress)

    monkeypatch.setattr(toy_task.ToyTask, "compute_loss", recording)
    result = train("toy", overrides=["train.epochs=2", "train.ema_decay=0.9"], run_dir=tmp_path / "ema")
    saved = load_checkpoint(result.last_path)
    # the average does not change training: the trained weights are the plain run's
    assert_same_weights(saved["train_model"], weights(plain.last_path), atol=1e-6)
    after_each_step = seen[1:] + [saved["train_model"]]
    assert saved["ema_updates"] == len(after_each_step) == 16
    expected = {k: v.clone() for k, v in after_each_step[0].items()}
    for n, current in enumerate(after_each_step[1:], start=1):
        decay = min(0.9, (1 + n) / (10 + n))
        for key in expected:
            expected[key] += (1 - decay) * (current[key] - expected[key])
    assert_same_weights(saved["model"], expected, atol=1e-5)
    assert not torch.allclose(saved["model"]["net.0.weight"], saved["train_model"]["net.0.weight"])
    # validation scored the averaged weights: re-scoring the saved model gives the logged val_mse
    task = build_task("toy", overrides=["train.epochs=2"])
    model = task.build_model()
    model.load_state_dict(saved["model"])
    val = task.build_datasets()[1]
    x, y = val.tensors
    with torch.no_grad():
        mse = torch.nn.functional.mse_loss(model(x), y).item()
    rows = list(csv.DictReader(open(result.run_dir / "metrics.csv")))
    assert float(rows[-1]["val_mse"]) == pytest.approx(mse, rel=1e-4)


def test_resume_with_ema_continues_exactly(tmp_path):
    overrides = ["train.epochs=4", "train.ema_decay=0.95"]
    full = train("toy", overrides=overrides, run_dir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train("toy", overrides=[*overrides, "model.interrupt_at_step=20"], run_dir=tmp_path / "part")
    resumed = train("toy", overrides=["model.interrupt_at_step=0"], resume=tmp_path / "part")
    a, b = load_checkpoint(full.last_path), load_checkpoint(resumed.last_path)
    assert a["ema_updates"] == b["ema_updates"] == 32
    assert_same_weights(a["model"], b["model"])
    assert_same_weights(a["train_model"], b["train_model"])


def test_ema_decay_outside_zero_to_one_names_the_key(tmp_path):
    with pytest.raises(ScrapvisionError, match=r"train.ema_decay.*outside \[0, 1\)"):
        train("toy", overrides=["train.epochs=1", "train.ema_decay=1"], run_dir=tmp_path / "run")
