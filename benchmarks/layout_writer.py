"""Writes the generic folder layout (``images/`` + ``masks/`` + ``labels.csv``) for the dataset converters.

Images are copied byte for byte; a defective image's mask becomes a 0/255 PNG under the same sub-path and
stem; defect-free images get no mask, which is what the layout reads as "no defect". See
datasets/folder_layout.md for the layout itself.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image


class LayoutWriter:
    """Add items one by one, then :meth:`close` writes ``labels.csv`` (image,label,group[,split])."""

    def __init__(self, target: Path, with_split: bool) -> None:
        self.target, self.with_split = Path(target), with_split
        self.rows: list[dict[str, str]] = []

    def add(self, name: str, image: Path, mask: np.ndarray | None, group: str, split: str = "") -> None:
        """``name``: sub-path under images/ without suffix; ``mask``: HxW, > 0 is defect, None = defect-free."""
        dest = self.target / "images" / f"{name}{image.suffix}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, dest)
        defective = mask is not None and bool(mask.any())
        if defective:
            mask_path = self.target / "masks" / f"{name}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask > 0).astype(np.uint8) * 255).save(mask_path)
        row = {"image": f"{name}{image.suffix}", "label": str(int(defective)), "group": group}
        self.rows.append({**row, "split": split} if self.with_split else row)

    def close(self) -> Path:
        self.target.mkdir(parents=True, exist_ok=True)
        with open(self.target / "labels.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["image", "label", "group"] + ["split"] * self.with_split)
            writer.writeheader()
            writer.writerows(self.rows)
        return self.target


def read_mask(path: Path) -> np.ndarray:
    """A label image as HxW bool (> 0 is defect); an unreadable or colour file is a one-line DataError."""
    from scrapvision.data.images import read_gray_mask

    return read_gray_mask(path) > 0


def converter_parser(doc: str, source_help: str, split_help: str = "") -> argparse.ArgumentParser:
    """The command line every converter shares: SOURCE TARGET [--no-split]."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help=source_help)
    parser.add_argument("target", type=Path, help="new folder for images/, masks/, labels.csv")
    if split_help:
        parser.add_argument("--no-split", action="store_true", help=split_help)
    return parser


def run_converter(parser: argparse.ArgumentParser, convert: Callable[[argparse.Namespace], Path]) -> None:
    """Parse, convert, print the target; a bad source is one line and exit 1, never a traceback."""
    from scrapvision.errors import DataError

    args = parser.parse_args()
    try:
        print(f"wrote {convert(args)}")
    except DataError as exc:
        sys.exit(f"error: {exc}")
