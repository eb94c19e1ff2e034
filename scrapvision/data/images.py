"""Image I/O that turns every unreadable file into a one-line ``DataError`` naming the file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Decode fully (a truncated JPEG is an error, not a grey bottom half) and convert to ``mode``.

    Returns HxWxC uint8 for ``RGB``, HxW uint8 for ``L``. Format is sniffed from content, not the name.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"image {path}: file is empty (0 bytes)")
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert(mode))
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image {path}: not found") from None
    except UnidentifiedImageError:
        raise DataError(f"image {path}: not an image file (unrecognised content)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"image {path}: cannot be decoded ({reason})") from None


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` in a stable order; an empty or missing folder is a DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"folder {folder}: not found")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"folder {folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def resolve_inside(root: str | Path, relative: str, allow_outside: bool = False, where: str = "") -> Path:
    """Join a path read from a CSV or config to ``root``; refuse one that escapes it (``..``, absolute)."""
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if not allow_outside and os.path.commonpath([root, candidate]) != str(root):
        raise DataError(f"{where or 'path'} {relative!r}: points outside the dataset root {root}")
    return candidate


def sample_rng(*keys: int) -> np.random.Generator:
    """A generator fixed by integers such as (seed, epoch, index): the same sample gets the same
    augmentation in one process, under DDP and after a resume."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def check_all_readable(paths: Iterable[Path], policy: str = "fail") -> tuple[list[Path], list[str]]:
    """Apply the unreadable-image policy: ``fail`` raises on the first bad file, ``skip`` returns
    (good paths, messages of skipped files)."""
    good, skipped = [], []
    for p in paths:
        try:
            read_image(p)
            good.append(p)
        except DataError as exc:
            if policy == "fail":
                raise
            skipped.append(str(exc))
    return good, skipped
