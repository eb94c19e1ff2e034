"""Image I/O that turns every unreadable file into a one-line ``DataError`` naming the file."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError, first_line

if TYPE_CHECKING:
    from albumentations.core.composition import BaseCompose

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
#: PIL modes of 16-bit grey images (PNG/TIFF); "I" is what older Pillow returns for 16-bit PNG
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


@contextmanager
def _decoded(path: Path, what: str = "image") -> Iterator[Image.Image]:
    """Open and fully decode ``path`` (a truncated JPEG is an error, not a grey bottom half); every way a
    file can be unreadable becomes one ``DataError`` line naming it. Format is sniffed from content."""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{what} {path}: file is empty (0 bytes)")
        img = Image.open(path)
        try:
            img.load()
        except BaseException:
            img.close()
            raise
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{what} {path}: not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{what} {path}: not an image file (unrecognised content)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{what} {path}: cannot be decoded ({first_line(exc)})") from None
    with img:
        yield img


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit grey scaled to 8 bits over the full 0..65535 range; PIL's own conversion would clip every
    value above 255 to white."""
    if img.mode not in SIXTEEN_BIT_MODES:
        return img
    values = np.clip(np.asarray(img).astype(np.float64), 0, 65535)
    return Image.fromarray(np.round(values / 257).astype(np.uint8), mode="L")


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Decode fully and convert to ``mode``: HxWx3 uint8 for ``RGB``, HxW uint8 for ``L``.

    Channel policy (conversion, never refusal, so one reader serves colour cameras and grey line scans):
    colour is kept as RGB; grey (L, palette) is repeated to three equal channels; an alpha channel
    (RGBA, LA) is dropped, not composited; 16-bit grey (I;16, I) is scaled to 8 bits by 255/65535.
    ``mode="L"`` turns colour into luminance. Masks follow a stricter rule: :func:`read_gray_mask`.
    """
    path = Path(path)
    with _decoded(path) as img:
        return np.asarray(_to_8bit(img).convert(mode))


def _is_colour(img: Image.Image) -> bool:
    """Three or more colour bands (RGB, RGBA, CMYK, YCbCr ...); grey, palette and 16-bit are not."""
    return img.mode not in ("P", "PA") and len([b for b in img.getbands() if b not in ("A", "X")]) >= 3


def read_gray_mask(path: str | Path) -> np.ndarray:
    """HxW uint8 label mask. Grey, palette (via its palette's grey level) and 16-bit masks are accepted;
    16-bit values are clipped at 255, not scaled, so a label 1 stays non-zero. An RGB mask is accepted
    only when its channels are equal (a grey mask re-saved as RGB): a colour mask has no single meaning
    as a label, so it is a ``DataError`` naming the file."""
    path = Path(path)
    with _decoded(path, "mask") as img:
        if not _is_colour(img):
            return np.asarray(img.convert("L"))
        rgb = np.asarray(img.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise DataError(f"mask {path}: mode {img.mode} has colour pixels; expected a single-channel "
                            "(grey or palette) mask")
        return np.ascontiguousarray(rgb[..., 0])


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header alone, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError, SyntaxError):
        read_image(path)  # raises the one-line DataError that names the problem
        raise


def subfolders(folder: str | Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted by name (hidden ones such as ``.ipynb_checkpoints`` skipped)."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


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
    if "\x00" in relative:  # no file system takes it; os.path would raise a bare ValueError
        raise DataError(f"{where or 'path'} {relative!r}: contains a NUL byte, not a file name")
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if not allow_outside and os.path.commonpath([root, candidate]) != str(root):
        raise DataError(f"{where or 'path'} {relative!r}: points outside the dataset root {root}")
    return candidate


def sample_rng(*keys: int) -> np.random.Generator:
    """A generator fixed by integers such as (seed, epoch, index): the same sample gets the same
    augmentation in one process, under DDP and after a resume."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def seed_transforms(compose: BaseCompose, rng: np.random.Generator) -> None:
    """Seed an albumentations pipeline so that each transform draws on its own.

    ``Compose.set_random_seed`` hands the SAME seed to every transform inside it, so every transform with
    the same ``p`` fires together: flips, blur and cut-out all happen or none does. Here the pipeline and
    each transform in it (nested ones too, parents before children) get their own seed from ``rng``.
    """
    from albumentations.core.composition import BaseCompose

    nodes, stack = [], [compose]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, BaseCompose):
            stack.extend(reversed(node.transforms))
    for node, seed in zip(nodes, rng.integers(0, 2**31, size=len(nodes))):
        node.set_random_seed(int(seed))


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
