"""A run a person can look at, for every registered head: curves.png after training, the head's own
``eval --report`` pictures, one self-contained report.html whose every inlined image decodes, and the
``runs`` table. Plus the optional loggers (tensorboard, mlflow) and rank-0-only logging."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from conftest import one_line_error
from scrapvision import TASKS
from scrapvision.api import build_task, train
from scrapvision.cli import main
from scrapvision.heads import load_all

load_all()
HEADS = [name for name in TASKS.names() if name != "toy"]


def decodes(data: bytes) -> tuple[int, int]:
    """The size of a PNG that decodes completely (a truncated or corrupt file raises)."""
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()
    return image.size


class Images(HTMLParser):
    """Every <img src> of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """A 2-epoch smoke run of each head (built once per head), its ``eval --report`` inside the run folder."""
    root = tmp_path_factory.mktemp("runs")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            run = root / name
            overrides = [*TASKS.get(name).smoke_overrides, "train.epochs=2"]
            train(name, overrides=overrides, run_dir=run, command=f"scrapvision train --task {name} (test)")
            assert main(["eval", "--task", name, "--checkpoint", str(run / "best.pt"), "--report", str(run / "eval")]) == 0
            done[name] = run
        return done[name]

    return get


@pytest.mark.parametrize("name", HEADS)
def test_every_file_of_a_run_is_written_and_decodes(name, runs, capsys):
    run = runs(name)
    width, height = decodes((run / "curves.png").read_bytes())
    assert width > 300 and height > 200
    assert json.loads((run / "run.json").read_text())["task"] == name
    manifest = json.loads((run / "eval" / "eval_report.json").read_text())
    pictures = [f for f in manifest["files"] if f.endswith(".png")]
    assert any(f.startswith("worst") for f in pictures), manifest["files"]
    for picture in pictures:
        decodes((run / "eval" / picture).read_bytes())

    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    parser = Images()
    parser.feed(page)
    assert len(parser.sources) == 1 + len(pictures)  # the curves and every eval picture, nothing else
    for source in parser.sources:
        assert source.startswith("data:image/png;base64,")
        decodes(base64.b64decode(source.split(",", 1)[1], validate=True))
    assert f"scrapvision train --task {name} (test)" in page and "<h2>Config</h2>" in page


def test_runs_lists_every_run_newest_first(runs, capsys):
    first = runs("segdec")
    runs("severstal")
    capsys.readouterr()
    assert main(["runs", str(first.parent)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["date", "task", "epochs", "best"]
    tasks = [line.split()[2] for line in lines[1:]]
    assert tasks.index("severstal") < tasks.index("segdec")  # trained later, listed first
    assert all(line.split()[3] == "2/2" for line in lines[1:])
    assert "synthetic" in lines[1]


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in one_line_error(capsys)
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "folder not found" in one_line_error(capsys)
    assert main(["runs", str(tmp_path / "absent")]) == 2
    assert "folder not found" in one_line_error(capsys)


def test_report_of_a_run_older_than_curves_and_run_json(runs, tmp_path):
    old = tmp_path / "segdec" / "20250101-000000"
    shutil.copytree(runs("segdec"), old, ignore=shutil.ignore_patterns("curves.png", "run.json", "eval", "report.html"))
    assert main(["report", str(old)]) == 0
    parser = Images()
    parser.feed((old / "report.html").read_text(encoding="utf-8"))
    assert len(parser.sources) == 1 and (old / "curves.png").is_file()  # the curves, drawn now from metrics.csv
    assert "not recorded" in (old / "report.html").read_text(encoding="utf-8")


def test_report_opens_in_a_headless_browser(runs, tmp_path):
    """The page renders with no server: every image is loaded and has its natural size."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    run = runs("segdec")
    assert main(["report", str(run), "--out", str(tmp_path / "page.html")]) == 0
    with playwright.sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chrome.new_page()
        page.goto((tmp_path / "page.html").as_uri())
        widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
        title = page.title()
        chrome.close()
    assert len(widths) >= 2 and all(w > 100 for w in widths), widths
    assert title.startswith("segdec")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside mlflow's SQLAlchemy store
@pytest.mark.parametrize("logger", ["tensorboard", "mlflow"])
def test_optional_logger_writes_its_files(logger, tmp_path, one_thread):
    pytest.importorskip({"tensorboard": "tensorboard", "mlflow": "mlflow"}[logger],
                        reason=f"train.logger={logger} needs the optional {logger} package")
    import toy_task  # noqa: F401  (registers the "toy" task)

    run = tmp_path / "run"
    train("toy", overrides=["train.epochs=2", f"train.logger={logger}"], run_dir=run)
    if logger == "tensorboard":
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
    else:
        import mlflow

        from scrapvision.loggers import tracking_uri

        client = mlflow.MlflowClient(tracking_uri=tracking_uri(run))
        (found,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
        assert [m.step for m in client.get_metric_history(found.info.run_id, "train_loss")] == [1, 2]
        assert found.data.params["train.logger"] == "mlflow"


def test_only_rank_0_logs(tmp_path, monkeypatch):
    """Under torchrun every rank builds a Trainer; only rank 0 may open a logger (nor write a run folder)."""
    pytest.importorskip("tensorboard", reason="needs the optional tensorboard package")
    import toy_task  # noqa: F401
    from scrapvision import trainer as trainer_module
    from scrapvision.distributed import DistInfo
    from scrapvision.loggers import Logger, TensorBoardLogger

    task = build_task("toy", overrides=["train.logger=tensorboard"])
    monkeypatch.setattr(trainer_module, "broadcast_object", lambda obj, info: obj)
    for rank, expected in ((0, TensorBoardLogger), (1, Logger)):
        monkeypatch.setattr(trainer_module, "init_distributed", lambda device, r=rank: DistInfo(r, 2, 0))
        assert type(trainer_module.Trainer(task, run_dir=tmp_path / f"rank{rank}").logger) is expected


def test_missing_logger_library_is_one_line_error(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert main(["train", "--task", "segdec", "--set", "train.logger=mlflow", "--out", str(tmp_path / "r")]) == 2
    assert "pip install 'scrapvision[mlflow]'" in one_line_error(capsys)
