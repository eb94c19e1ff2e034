"""Shared fixtures. Real data is found through SCRAPVISION_DATA (default ../shared/data) and skipped if absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCRAPVISION_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def fp32_unless_asked(monkeypatch):
    """``--engine auto`` may run bf16 where a CPU has it and it is faster (a timing, so it may differ from run
    to run); tests of anything else compare against fp32 torch, so they see a CPU without bf16. Tests of the
    bf16 choice set ``engines.cpu_has_bf16`` themselves."""
    from scrapvision import engines

    monkeypatch.setattr(engines, "cpu_has_bf16", lambda: False)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data sets; skips the test when it is not on this machine."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set SCRAPVISION_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU two threads spin-wait. Module
    scope, so a module-scoped training fixture that a test requests after it also runs on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def real_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data set {name} not found at {path} (set SCRAPVISION_DATA)")
    return path


class CodePayload:
    """Unpickling this runs ``Path.touch(marker)``: whether the marker file exists proves whether a loader
    ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def set_args(overrides) -> list[str]:
    """``["--set", o1, "--set", o2, ...]`` for the CLI."""
    return [arg for o in overrides for arg in ("--set", o)]


def write_photos(folder: Path, n: int = 2, seed: int = 0) -> Path:
    """``n`` small readable photos: a prediction input every head accepts (canet reads it as one sample)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"photo{i}.png")
    return folder


def one_line_error(capsys) -> str:
    """The CLI's stderr, checked to be exactly one ``scrapvision: error:`` line."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("scrapvision: error:"), err[0]
    return err[0]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """An untrained checkpoint of each head in its smoke configuration (built once per module and head)."""
    from scrapvision.api import build_task
    from scrapvision.checkpoint import model_payload, save_checkpoint
    from scrapvision.registry import TASKS

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
