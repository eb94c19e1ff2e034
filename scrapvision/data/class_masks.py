"""Reader for images + PNG class-index masks + a class list (semantic segmentation layout).

Layout (``root``)::

    classes.txt              one class name per line; line 1 is class 0 (the normal material)
    images/NAME.(png|jpg..)  or train/images + val/images (then the split is given)
    masks/NAME.png           8-bit single-channel, pixel value = class index, 255 = ignore

A mask must have the image's size and only values < number of classes (or 255); anything else is a
one-line ``DataError`` naming the file, because a silently clipped label trains the wrong class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, first_line
from .images import IMAGE_SUFFIXES, read_image, sample_rng

IGNORE_INDEX = 255


@dataclass(frozen=True)
class ClassMaskItem:
    image: Path
    mask: Path
    name: str


def read_class_list(root: str | Path) -> tuple[str, ...]:
    """Class names from ``root/classes.txt`` (blank lines and ``#`` comments skipped); needs >= 2."""
    path = Path(root) / "classes.txt"
    if not path.is_file():
        raise DataError(f"class list {path}: not found (one class name per line, normal class first)")
    lines = [(i, ln.strip()) for i, ln in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]
    lines = [(i, n) for i, n in lines if n and not n.startswith("#")]
    names = [n for _, n in lines]
    if len(names) < 2:
        raise DataError(f"class list {path}: needs at least 2 classes (normal + one impurity), found {len(names)}")
    first_line: dict[str, int] = {}
    for line, name in lines:
        if name in first_line:
            raise DataError(f"class list {path} line {line}: duplicate class name {name!r} (first on line "
                            f"{first_line[name]}); mask values would be ambiguous")
        first_line[name] = line
    if len(names) > IGNORE_INDEX:
        raise DataError(f"class list {path}: at most {IGNORE_INDEX} classes fit an 8-bit mask")
    return tuple(names)


def read_class_mask(path: str | Path, num_classes: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """HxW uint8 class-index mask; values must be < ``num_classes`` or 255 (ignore).

    Palette PNGs are read by palette index (what annotation tools store), never converted to grey.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"mask {path}: mode {img.mode} is colour; expected a single-channel PNG of class indices")
            mask = np.asarray(img)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"mask {path}: not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"mask {path}: cannot be read ({first_line(exc)})") from None
    if shape is not None and mask.shape != tuple(shape):
        raise DataError(f"mask {path}: size {mask.shape[1]}x{mask.shape[0]} differs from its image {shape[1]}x{shape[0]}")
    bad = np.setdiff1d(np.unique(mask), [*range(num_classes), IGNORE_INDEX])
    if bad.size:
        raise DataError(f"mask {path}: values {bad[:5].tolist()} are not class indices 0..{num_classes - 1} or 255")
    return mask.astype(np.uint8)


def _split_items(folder: Path) -> list[ClassMaskItem]:
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir():
        raise DataError(f"class-mask data {folder}: no images/ folder")
    items = []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        mask = masks_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DataError(f"image {image}: no mask {mask}")
        items.append(ClassMaskItem(image, mask, image.stem))
    if not items:
        raise DataError(f"class-mask data {folder}: images/ holds no images")
    return items


def list_class_mask_items(root: str | Path, val_fraction: float = 0.2,
                          seed: int = 0) -> tuple[list[ClassMaskItem], list[ClassMaskItem]]:
    """(train, val) items: from ``train/`` and ``val/`` if present, else a seeded split of ``images/``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"class-mask data {root}: folder not found")
    if (root / "train").is_dir():
        val = _split_items(root / "val") if (root / "val").is_dir() else []
        return _split_items(root / "train"), val
    items = _split_items(root)
    order = sample_rng(seed, len(items)).permutation(len(items))
    n_val = int(round(len(items) * val_fraction))
    val_ids = set(order[:n_val].tolist())
    return ([it for i, it in enumerate(items) if i not in val_ids], [it for i, it in enumerate(items) if i in val_ids])


def read_item(item: ClassMaskItem, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(HxWx3 uint8 image, HxW uint8 mask) of one item, checked against each other."""
    image = read_image(item.image)
    return image, read_class_mask(item.mask, num_classes, image.shape[:2])
