"""Files a user did not write: a prediction list may not reach outside its folder unless allowed, and a
weights file that carries pickled code is refused before the code runs (backbone and CLIP weights)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CodePayload
from scrapvision.api import build_task, get_task_class
from scrapvision.backbones import create_backbone
from scrapvision.backbones.clip import CLIP_CONFIGS, build_clip
from scrapvision.checkpoint import model_payload, save_checkpoint
from scrapvision.cli import main
from scrapvision.errors import CheckpointError

TASK = "severstal"  # the list reader is shared by every head that predicts on image files


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    task = build_task(TASK, overrides=get_task_class(TASK).smoke_overrides)
    torch.manual_seed(0)
    return save_checkpoint(model_payload(task, task.build_model()), tmp_path_factory.mktemp("ckpt") / "smoke.pt")


def photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(path)
    return path


def predict_list(checkpoint: Path, listing: Path, out: Path, *extra: str) -> int:
    return main(["predict", "--task", TASK, "--checkpoint", str(checkpoint), "--input", str(listing),
                 "--out", str(out), "--overlays", "0", *extra])


def predicted_files(out: Path) -> set[str]:
    with open(out / "predictions.csv", newline="") as handle:
        return {row["file"] for row in csv.DictReader(handle)}


def test_list_inside_its_folder_predicts(checkpoint, tmp_path):
    photo(tmp_path / "lists" / "imgs" / "a.png")
    listing = tmp_path / "lists" / "list.csv"
    listing.write_text("image\nimgs/a.png\n")
    assert predict_list(checkpoint, listing, tmp_path / "out") == 0
    assert predicted_files(tmp_path / "out") == {"imgs/a.png"}


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_list_naming_a_file_outside_its_folder_is_refused_unless_allowed(escape, checkpoint, tmp_path, capsys):
    outside = photo(tmp_path / "outside.png")
    folder = tmp_path / "lists"
    photo(folder / "a.png")
    entry = {"dotdot": "../outside.png", "absolute": str(outside), "symlink": "link.png"}[escape]
    if escape == "symlink":
        (folder / "link.png").symlink_to(outside)
    listing = folder / "list.csv"
    listing.write_text(f"image\na.png\n{entry}\n")
    assert predict_list(checkpoint, listing, tmp_path / "refused") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scrapvision: error:"), err
    assert f"list.csv row 3 {entry!r}" in err[0] and "outside" in err[0] and "--allow-outside-root" in err[0]
    assert not (tmp_path / "refused" / "predictions.csv").exists()
    assert predict_list(checkpoint, listing, tmp_path / "allowed", "--allow-outside-root") == 0
    assert len(predicted_files(tmp_path / "allowed")) == 2


def test_txt_list_has_no_header_and_keeps_its_first_line(checkpoint, tmp_path, capsys):
    for name in ("a.png", "b.png"):
        photo(tmp_path / "lists" / name)
    listing = tmp_path / "lists" / "list.txt"
    listing.write_text("a.png\n# a comment\n\nb.png\n../outside.png\n")
    assert predict_list(checkpoint, listing, tmp_path / "refused") == 2  # line 5, counted with the blank ones
    assert "list.txt row 5 '../outside.png'" in capsys.readouterr().err
    listing.write_text("a.png\n# a comment\n\nb.png\n")
    assert predict_list(checkpoint, listing, tmp_path / "out") == 0
    assert predicted_files(tmp_path / "out") == {"a.png", "b.png"}


@pytest.mark.parametrize(("content", "message"), [(b"", "not a readable CSV list"),
                                                  (b"image\n\n", "lists no images")])
def test_empty_list_is_one_line_error(content, message, checkpoint, tmp_path, capsys):
    (tmp_path / "list.csv").write_bytes(content)
    assert predict_list(checkpoint, tmp_path / "list.csv", tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "list.csv" in err[0] and message in err[0], err


def test_code_in_a_backbone_weights_file_is_not_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"conv.weight": CodePayload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: cannot be loaded: it contains pickled Python objects"):
        create_backbone("tiny_cnn", weights=tmp_path / "evil.pt")
    assert not marker.exists()


def test_code_in_a_clip_weights_file_is_not_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"positional_embedding": CodePayload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: cannot be loaded: it contains pickled Python objects"):
        build_clip("scrap-vit-tiny", weights=tmp_path / "evil.pt", image_size=32)
    assert not marker.exists()
    folder = tmp_path / "clip_folder"  # an open_clip model folder holding the same file
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CLIP_CONFIGS["scrap-vit-tiny"]}))
    (tmp_path / "evil.pt").rename(folder / "open_clip_pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        build_clip("scrap-vit-tiny", weights=folder)
    assert not marker.exists()


def test_importing_the_package_keeps_albumentations_off_the_network():
    """albumentations 2.x checks PyPI for updates on import unless NO_ALBUMENTATIONS_UPDATE is set."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    code = "import scrapvision, albumentations, os; print(os.environ.get('NO_ALBUMENTATIONS_UPDATE'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
