"""KolektorSDD reader: ``kosNN/PartK.jpg`` + ``kosNN/PartK_label.bmp|png``, and its 3-fold split by item.

The official release stores masks as BMP; some copies re-save them as PNG. Masks are 8-bit grayscale or
palette images (palette index 0/1, once 2), so the defect mask is ``convert("L") > 0``, never ``== 255``.
Every mask is checked against its image when the folder is listed (:func:`list_kolektor`), the one
place both the ``segdec`` and ``clip_anomaly`` heads read KolektorSDD through: a mask of another size or
in colour is a ``DataError``, since resizing or greying it silently would train on a misplaced label.

Two items of the official zip are byte-identical copies of others (``kos01`` = ``kos26``,
``kos27`` = ``kos34``). A split that separates such a pair tests on training images, so
:func:`kolektor_folds` always keeps each pair in the same fold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .images import image_size, read_gray_mask
from .splits import group_folds

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MASK_SUFFIXES = (".bmp", ".png")
#: items whose images are byte-identical copies of another item: copy -> original
DUPLICATE_ITEMS = {"kos26": "kos01", "kos34": "kos27"}
_PART = re.compile(r"^Part\d+$")


@dataclass(frozen=True)
class KolektorItem:
    image: Path
    mask: Path | None
    item: str  # the folder, e.g. "kos01": one physical commutator
    part: str  # e.g. "Part3"
    defective: bool


def read_kolektor_mask(path: str | Path, image: str | Path | None = None) -> np.ndarray:
    """Boolean HxW defect mask from a KolektorSDD label (BMP/PNG, mode L or P; any non-zero is defect).

    A colour mask is a ``DataError`` (grey stored as RGB with equal channels is fine). With ``image``,
    the mask must have that image's size, read from the image's header only (no second decode).
    """
    mask = read_gray_mask(path) > 0
    if image is not None:
        height, width = image_size(image)
        if mask.shape != (height, width):
            raise DataError(f"KolektorSDD mask {path}: size {mask.shape[1]}x{mask.shape[0]} differs from "
                            f"its image {Path(image).name} {width}x{height}")
    return mask


def _find_mask(image: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        candidate = image.with_name(f"{image.stem}_label{suffix}")
        if candidate.is_file():
            return candidate
    return None


def list_kolektor(root: str | Path, require_masks: bool = True) -> list[KolektorItem]:
    """All ``kos*/Part*`` images under ``root`` in a stable order, with their masks and defect flag.

    ``defective`` is read from the mask pixels (the only label the dataset has). A missing mask is a
    ``DataError`` unless ``require_masks`` is False, in which case the item has ``mask=None`` and is
    treated as defect-free (useful only for unlabeled folders).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"KolektorSDD folder {root}: not found")
    items: list[KolektorItem] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("kos")):
        images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and _PART.match(p.stem)]
        for image in sorted(images, key=lambda p: int(p.stem[4:])):
            mask = _find_mask(image)
            if mask is None and require_masks:
                raise DataError(f"KolektorSDD image {image}: no mask {image.stem}_label.bmp or .png beside it")
            defective = bool(read_kolektor_mask(mask, image).any()) if mask is not None else False
            items.append(KolektorItem(image, mask, folder.name, image.stem, defective))
    if not items:
        raise DataError(f"KolektorSDD folder {root}: no kosNN/PartK images found")
    return items


def item_group(item: str) -> str:
    """The physical commutator an item folder shows: a duplicated item is its original."""
    return DUPLICATE_ITEMS.get(item, item)


def kolektor_folds(items: list[KolektorItem], n_folds: int = 3, seed: int = 0) -> list[int]:
    """Fold id (0..n_folds-1) for every item: a cross-validation split by ``kosNN`` item (duplicate items
    join their original), stratified by defect (:func:`group_folds`)."""
    return group_folds([item_group(i.item) for i in items], [i.defective for i in items], n_folds, seed)
