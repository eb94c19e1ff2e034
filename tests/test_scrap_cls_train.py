"""scrap_cls end to end: a short fit on synthetic grades, checkpoint reload, eval report, predict, KD teacher."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from sklearn.metrics import f1_score

from scrapvision.api import build_task, evaluate, load_trained, train
from scrapvision.checkpoint import load_checkpoint
from scrapvision.cli import main
from scrapvision.data.synthetic.scrap_grades import grade_names, write_scrap_grades
from scrapvision.errors import CheckpointError

FAST = ["model.backbone=test_efficientnet", "model.fuse_channels=16", "model.sef_groups=4", "data.image_size=40",
        "data.synthetic_classes=3", "data.synthetic_train_per_class=24", "data.synthetic_val_per_class=8",
        "data.augment=light", "train.batch_size=12", "train.device=cpu", "optim.lr=0.005"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("scrap_cls_run")
    result = train("scrap_cls", overrides=[*FAST, "train.epochs=6"], run_dir=run)
    return result


def test_fit_learns_the_synthetic_grades(trained):
    rows = [json.loads(line) for line in (trained.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert trained.best_metric >= 0.6, f"3 synthetic grades: accuracy {trained.best_metric} is near chance (0.33)"
    task, model = load_trained("scrap_cls", trained.last_path)  # the last epoch's logged F1 is sklearn's
    val = task.build_datasets()[1]
    with torch.no_grad():
        predicted = [int(model(val[i]["image"][None]).argmax(1)) for i in range(len(val))]
    truth = [int(val[i]["label"]) for i in range(len(val))]
    assert epochs[-1]["val_macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))


def test_checkpoint_keeps_class_names_and_reload_is_exact(trained):
    payload = load_checkpoint(trained.best_path, task="scrap_cls")
    assert payload["extras"]["class_names"] == grade_names(3)
    task, model = load_trained("scrap_cls", trained.best_path)
    _, again = load_trained("scrap_cls", trained.best_path)
    x = task.example_input(4)
    assert torch.equal(model(x), again(x))
    metrics = evaluate(task, model)
    assert metrics["accuracy"] == pytest.approx(trained.best_metric)
    fresh = build_task("scrap_cls", overrides=FAST)
    assert not torch.equal(fresh.build_model().eval()(x), model(x))


def test_eval_cli_writes_the_report(trained, tmp_path, capsys):
    report = tmp_path / "report"
    code = main(["eval", "--task", "scrap_cls", "--checkpoint", str(trained.best_path),
                 "--set", f"eval.report_dir={report}"])
    assert code == 0
    assert "macro_f1" in capsys.readouterr().out
    rows = list(csv.DictReader((report / "per_class.csv").open()))
    assert [r["class"] for r in rows] == grade_names(3)
    assert sum(int(r["support"]) for r in rows) == 24
    assert (report / "confusion_matrix.png").stat().st_size > 1000


def test_predict_writes_names_and_probabilities(trained, tmp_path, capsys):
    images = write_scrap_grades(tmp_path / "new", per_class=4, size=46, seed=9, classes=3)
    (images / "labels.csv").unlink()
    out = tmp_path / "pred"
    code = main(["predict", "--task", "scrap_cls", "--checkpoint", str(trained.best_path), "--input", str(images),
                 "--out", str(out), "--top-k", "2"])
    assert code == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 12
    assert set(rows[0]) == {"file", "class", "probability", "class_2", "probability_2", "error"}
    assert all(r["class"] in grade_names(3) and r["class"] != r["class_2"] and not r["error"] for r in rows)
    assert all(1.0 >= float(r["probability"]) >= float(r["probability_2"]) >= 0.0 for r in rows)
    correct = sum(r["file"].startswith(r["class"] + "/") for r in rows)
    assert correct >= 6, f"predict got {correct}/12 right on new synthetic images"
    assert f"{rows[0]['file']}: {rows[0]['class']} (" in capsys.readouterr().out


def test_predict_unreadable_policy(trained, tmp_path, capsys):
    folder = write_scrap_grades(tmp_path / "mixed", per_class=1, size=46, seed=4, classes=2)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code = main(["predict", "--task", "scrap_cls", "--checkpoint", str(trained.best_path), "--input", str(folder),
                 "--out", str(tmp_path / "p"), "--unreadable", "fail"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "broken.jpg" in err and len(err.splitlines()) == 1
    code = main(["predict", "--task", "scrap_cls", "--checkpoint", str(trained.best_path), "--input", str(folder),
                 "--out", str(tmp_path / "q")])
    rows = {r["file"]: r for r in csv.DictReader((tmp_path / "q" / "predictions.csv").open())}
    assert code == 0 and len(rows) == 3
    assert rows["broken.jpg"]["class"] == "" and "broken.jpg" in rows["broken.jpg"]["error"]
    assert sum(bool(r["class"]) for r in rows.values()) == 2
    assert "broken.jpg" in capsys.readouterr().err


def test_teacher_distillation_runs_and_checks_classes(trained, tmp_path):
    student = train("scrap_cls", overrides=[*FAST, "train.epochs=1", "train.log_every=1", "model.variant=baseline",
                                            f"loss.teacher={trained.best_path}"], run_dir=tmp_path / "student")
    steps = [json.loads(line) for line in (student.run_dir / "metrics.jsonl").read_text().splitlines()][:-1]
    assert steps and all(s["kind"] == "step" and s["kd"] > 0 for s in steps)  # baseline has no self-KD branch
    task = build_task("scrap_cls", overrides=[*FAST, "data.synthetic_classes=4", f"loss.teacher={trained.best_path}"])
    task.build_datasets()
    with pytest.raises(CheckpointError, match="other classes"):
        task.compute_loss(task.build_model(), {"image": torch.randn(2, 3, 40, 40), "label": torch.tensor([0, 1])}, 0.0)
