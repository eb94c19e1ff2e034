"""Shared prediction plumbing: an image-file dataset, the input list, and overlays with a legend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, first_line
from .images import IMAGE_SUFFIXES, list_images, read_image, resolve_inside


def input_keys(inputs: str | Path, files: Sequence[Path]) -> list[str]:
    """Stable, unique names of the inputs: paths relative to the input folder (or file names)."""
    inputs = Path(inputs)
    if inputs.is_dir():
        return [p.relative_to(inputs).as_posix() for p in files]
    if len(files) == 1 and inputs.suffix.lower() in IMAGE_SUFFIXES:
        return [inputs.name]
    base = inputs.parent.resolve()
    return [p.relative_to(base).as_posix() if p.is_relative_to(base) else str(p) for p in files]


def input_files(inputs: str | Path, allow_outside: bool = False) -> list[Path]:
    """An image file, a folder of images (recursive), a ``.txt`` list (one path per line, no header) or a
    ``.csv`` list (a header row; column ``image``, else the first).

    A list's entries are relative to its folder and may not leave it (``..``, absolute paths, symlinks)
    unless ``allow_outside`` (``predict --allow-outside-root``).
    """
    inputs = Path(inputs)
    if inputs.is_dir():
        return list_images(inputs)
    if inputs.suffix.lower() in IMAGE_SUFFIXES:
        if not inputs.is_file():
            raise DataError(f"image {inputs}: not found")
        return [inputs]
    if inputs.suffix.lower() in (".csv", ".txt"):
        return listed_paths(inputs, allow_outside)
    raise DataError(f"input {inputs}: expected an image, a folder of images or a CSV/TXT list")


def _listed_names(listing: Path, column: str) -> tuple[list[tuple[int, str]], str]:
    """(line number, entry) pairs of a list and what the entries are called in errors."""
    if listing.suffix.lower() == ".txt":  # no header: every non-blank line that is not a # comment
        try:
            lines = listing.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{listing}: not a readable text list ({first_line(exc)})") from None
        return [(i, line.strip()) for i, line in enumerate(lines, 1) if line.strip() and not line.startswith("#")], "lines"
    import pandas as pd

    try:
        frame = pd.read_csv(listing, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{listing}: not a readable CSV list ({first_line(exc)})") from None
    column = column if column in frame.columns else frame.columns[0]
    return [(row, name) for row, name in enumerate(frame[column], start=2) if name], f"column {column!r}"


def listed_paths(listing: Path, allow_outside: bool = False, column: str = "image") -> list[Path]:
    """The paths a ``.txt`` or ``.csv`` list names (a CSV's ``column``, else its first), each confined to
    the list's folder unless allowed."""
    entries, what = _listed_names(listing, column)
    if not entries:
        raise DataError(f"{listing}: lists no {column}s in its {what}")
    files = []
    for row, name in entries:
        try:
            files.append(resolve_inside(listing.parent, name, allow_outside, where=f"{listing} row {row}"))
        except DataError as exc:
            raise DataError(f"{exc} (predict --allow-outside-root permits it)") from None
    return files


class ImageFiles(Dataset):
    """Resized, ImageNet-normalised images for inference, with each file's key, index and original size."""

    def __init__(self, files: Sequence[Path], image_size: tuple[int, int], mode: str = "RGB",
                 keys: Sequence[str] | None = None) -> None:
        self.files = list(files)
        self.keys = list(keys) if keys is not None else [p.name for p in self.files]
        self.mode = mode
        self.transform = A.Compose([A.Resize(*image_size, area_for_downscale="image"), A.Normalize()])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        image = read_image(self.files[index], self.mode)
        if image.ndim == 2:
            image = image[..., None]
        out = self.transform(image=image)["image"]
        return {"image": torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))), "file": self.keys[index],
                "path": str(self.files[index]), "index": index, "height": image.shape[0], "width": image.shape[1]}

    @classmethod
    def from_inputs(cls, inputs: str | Path, image_size: tuple[int, int], mode: str = "RGB",
                    allow_outside: bool = False) -> ImageFiles:
        files = input_files(inputs, allow_outside)
        return cls(files, image_size, mode, input_keys(inputs, files))


def overlay_masks(image: np.ndarray, masks: np.ndarray, colors: np.ndarray, names: Sequence[str],
                  alpha: float = 0.45) -> np.ndarray:
    """Blend each class mask in its colour, outline it, and draw a legend box (RGB in, RGB out)."""
    canvas = image.copy() if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    for mask, color in zip(masks, colors):
        if not mask.any():
            continue
        m = mask.astype(bool)
        canvas[m] = (canvas[m] * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in color), 1)
    scale = max(0.35, canvas.shape[0] / 700)
    row = int(22 * scale / 0.5)
    for i, (name, color) in enumerate(zip(names, colors)):
        present = masks[i].any()
        y = 6 + row * (i + 1)
        cv2.rectangle(canvas, (6, y - row + 6), (6 + row - 6, y), tuple(int(c) for c in color), -1)
        cv2.putText(canvas, f"{name}{'' if present else ' (none)'}", (12 + row, y - 2),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise DataError(f"overlay {path}: could not be written")
