"""The logistic-regression probe: its fit (models/linear_probe.py) and scrap_cls's model.probe_fit=logreg, which
fits it before the Trainer's epochs and leaves a model with nothing to train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from scrapvision.api import build_task
from scrapvision.errors import ConfigError, DataError
from scrapvision.heads.scrap_cls import ScrapClsTask
from scrapvision.models.linear_probe import fit_logistic_probe
from scrapvision.registry import TASKS
from scrapvision.trainer import Trainer


def blobs(classes: list[int], per_class: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two informative dimensions among 20 noisy ones, off-centre: the regulariser matters."""
    rng = np.random.default_rng(seed)
    y = np.repeat(classes, per_class)
    x = rng.normal(0, 1, (len(y), 20))
    x[:, :2] += rng.normal(0, 1.2, (max(classes) + 1, 2))[y]
    return x + 3.0, y


def probe_logits(probe, x: np.ndarray) -> np.ndarray:
    return ((x - probe.mean) / np.sqrt(probe.var + 1e-5)) @ probe.weight.T + probe.bias


def test_the_probe_is_scikit_learns_fit_at_the_c_its_folds_chose():
    x, y = blobs([0, 1, 2])
    probe = fit_logistic_probe(x, y, 3, cs=(0.001, 0.1, 10.0), folds=3)
    best = max(probe.cv_accuracy.values())
    assert probe.c == min(c for c, score in probe.cv_accuracy.items() if score == best)
    assert set(probe.cv_accuracy) == {0.001, 0.1, 10.0}
    assert len(set(probe.cv_accuracy.values())) > 1, "the folds could not tell the strengths apart: a weak test"
    z = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    reference = LogisticRegression(C=probe.c, max_iter=5000).fit(z, y)
    logits = probe_logits(probe, x)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), reference.predict_proba(z), atol=1e-6)


def test_two_classes_and_a_class_without_photos():
    x, y = blobs([1, 3])  # classes 0 and 2 have no photo
    probe = fit_logistic_probe(x, y, 4, folds=3)
    z = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    reference = LogisticRegression(C=probe.c, max_iter=5000).fit(z, y)
    logits = probe_logits(probe, x)
    assert set(logits.argmax(1)) <= {1, 3}
    np.testing.assert_array_equal(logits.argmax(1), reference.predict(z))
    two = np.exp(logits[:, [1, 3]])
    np.testing.assert_allclose(two[:, 1] / two.sum(1), reference.predict_proba(z)[:, 1], atol=1e-6)
    np.testing.assert_allclose(np.exp(logits[:, [0, 2]]).max(), 0.0, atol=1e-9)


def test_one_class_or_one_photo_a_class_is_a_data_error():
    x, y = blobs([2])
    with pytest.raises(DataError, match="at least 2 classes"):
        fit_logistic_probe(x, y, 3)
    with pytest.raises(DataError, match="at least 2 photos"):
        fit_logistic_probe(x[:2], np.array([0, 1]), 3)


SMOKE = [*TASKS.get("scrap_cls").smoke_overrides, "model.variant=probe", "model.probe_fit=logreg",
         "data.augment=none", "model.image_stats=true", "model.dropout=0.5", "data.synthetic_train_per_class=8"]


def test_logreg_probe_is_fitted_before_the_epochs_which_leave_it_alone(tmp_path):
    task = build_task("scrap_cls", overrides=[*SMOKE, "train.epochs=2"])
    Trainer(task, run_dir=tmp_path / "run").fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    prefit = [r for r in records if r["kind"] == "prefit"]
    assert len(prefit) == 1 and prefit[0]["probe_c"] > 0
    # the same fit, made here from the training photos' features, is what the checkpoint holds
    fresh = build_task("scrap_cls", overrides=[*SMOKE, "train.epochs=2"])
    model = fresh.build_model().eval()
    model.load_state_dict({k: v for k, v in state.items() if k.startswith("backbone.")}, strict=False)
    train, _ = fresh.build_datasets()
    features = torch.cat([model.probe_features(train[i]["image"][None]) for i in range(len(train))]).numpy()
    labels = np.array([int(train[i]["label"]) for i in range(len(train))])
    probe = fit_logistic_probe(features, labels, model.head.out_features, seed=task.cfg.train.seed)
    assert probe.c == prefit[0]["probe_c"]
    torch.testing.assert_close(state["head.weight"], torch.as_tensor(probe.weight, dtype=torch.float32))
    torch.testing.assert_close(state["head.bias"], torch.as_tensor(probe.bias, dtype=torch.float32))
    torch.testing.assert_close(state["standardize.running_mean"], torch.as_tensor(probe.mean, dtype=torch.float32))
    assert int(state["standardize.num_batches_tracked"]) == 0, "the epochs moved the standardiser's statistics"
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2 and epochs[0]["train_loss"] == pytest.approx(epochs[1]["train_loss"])  # no dropout either


def test_resume_keeps_the_fitted_probe_and_does_not_fit_again(tmp_path, monkeypatch):
    Trainer(build_task("scrap_cls", overrides=[*SMOKE, "train.epochs=1"]), run_dir=tmp_path / "run").fit()
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]

    def refit(*args, **kwargs):
        raise AssertionError("a resumed run fitted its probe again")

    monkeypatch.setattr(ScrapClsTask, "prefit", refit)
    task = build_task("scrap_cls", overrides=[*SMOKE, "train.epochs=2"])
    Trainer(task, resume=tmp_path / "run" / "last.pt").fit()
    second = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert second["epoch"] == 2
    for key in ("head.weight", "head.bias", "standardize.running_var"):
        torch.testing.assert_close(second["model"][key], first[key], rtol=0, atol=0)


@pytest.mark.parametrize("overrides, named", [
    (["model.probe_fit=logreg"], "needs model.variant=probe"),
    (["model.variant=probe", "model.probe_fit=logreg", "data.augment=light"], "needs data.augment=none"),
])
def test_logreg_probe_config_errors_name_the_key(overrides, named):
    with pytest.raises(ConfigError, match=named) as info:
        build_task("scrap_cls", overrides=overrides)
    assert "'model.probe_fit'" in str(info.value)
