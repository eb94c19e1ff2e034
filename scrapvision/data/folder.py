"""The generic defect layout that ``segdec``, ``clip_anomaly`` and ``severstal`` all read, and MVTec AD.

Generic layout (``root``)::

    images/<name>.<jpg|png|bmp|tif>   nested sub-folders allowed
    masks/<name>.png                  0 = background, k = defect class k (binary 0/255 also accepted);
                                      no mask file = a defect-free image (unless labels.csv says otherwise)
    labels.csv                        optional: image,label[,group][,split]
    classes.txt                       optional: class names, line 1 = the defect-free class

``labels.csv`` gives image-level labels (0 = defect-free, k > 0 = defective; an image with a label but no
mask is weakly labelled), a ``group`` kept on one side of every split (one physical part, one coil), and
a fixed ``split`` (train / val / test). MVTec AD (``train/good``, ``test/<defect>``,
``ground_truth/<defect>/<name>_mask.png``) is read into the same items.

A scan collects every problem instead of stopping at the first, so ``scrapvision data check`` can list
them; the readers the heads use raise the first one as a one-line ``DataError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from .images import IMAGE_SUFFIXES, image_size, read_image

SPLITS = ("train", "val", "test")
MASK_SUFFIX = ".png"


@dataclass(frozen=True)
class FolderItem:
    image: Path
    mask: Path | None
    name: str  # path under images/ without suffix, e.g. "line2/0001"
    label: int  # image-level class: 0 = defect-free, k > 0 = defective (class k where known)
    pixel_labelled: bool  # the mask (or its absence, for a defect-free image) may train pixels
    group: str  # kept on one side of every split; the name itself when not given
    split: str = ""  # "" or one of SPLITS


@dataclass
class FolderScan:
    items: list[FolderItem]
    class_names: tuple[str, ...]
    problems: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # (height, width) per item

    def raise_first(self) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more problems; run scrapvision data check)" \
                if len(self.problems) > 1 else ""
            raise DataError(self.problems[0] + more)


def natural_key(path: Path) -> list:
    """Sort key that orders ``img2`` before ``img10`` (and ``kos01/Part3`` as KolektorSDD's own reader does)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.as_posix())]


def is_folder_layout(root: str | Path) -> bool:
    return (Path(root) / "images").is_dir()


def is_mvtec_layout(root: str | Path) -> bool:
    root = Path(root)
    return (root / "train" / "good").is_dir() and (root / "test").is_dir()


def read_folder_mask(path: Path, num_classes: int | None = None) -> np.ndarray:
    """HxW uint8 class indices. Palette PNGs are read by index (what annotation tools store); a mask with
    only 0 and 255 is binary (255 -> 1); other values must be classes ``< num_classes`` (any when None)."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "1", "I", "I;16"):
                raise DataError(f"mask {path}: mode {img.mode} is colour; expected a single-channel PNG of "
                                "class indices")
            mask = np.asarray(img.convert("L") if img.mode == "1" else img)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError):
        raise DataError(f"mask {path}: cannot be read as an image") from None
    values = np.unique(mask)
    if values.size and set(values.tolist()) <= {0, 255}:
        return (mask == 255).astype(np.uint8)
    if num_classes is not None and values.max(initial=0) >= num_classes:
        bad = values[values >= num_classes][:5].tolist()
        raise DataError(f"mask {path}: values {bad} are not classes 0..{num_classes - 1} (or binary 0/255)")
    if values.max(initial=0) > 255:
        raise DataError(f"mask {path}: values above 255 are not class indices")
    return mask.astype(np.uint8)


def _class_names(root: Path, num_classes: int | None) -> tuple[str, ...]:
    from .class_masks import read_class_list

    if (root / "classes.txt").is_file():
        names = read_class_list(root)
        if num_classes is not None and len(names) != num_classes:
            raise DataError(f"class list {root / 'classes.txt'}: {len(names)} classes, the head expects "
                            f"{num_classes}")
        return names
    n = num_classes or 2
    return ("normal", "defect") if n == 2 else ("normal",) + tuple(f"defect {k}" for k in range(1, n))


def _read_labels_csv(path: Path, names: dict[str, int], problems: list[str]) -> dict[int, dict]:
    """Rows of labels.csv by item index; a row that names no image, or an image twice, is a problem."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"labels {path}: cannot be read as CSV ({type(exc).__name__})") from None
    missing = {"image", "label"} - set(table.columns)
    if missing:
        raise DataError(f"labels {path}: missing column(s) {', '.join(sorted(missing))}; expected "
                        "image,label[,group][,split]")
    rows: dict[int, dict] = {}
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"labels {path} row {line}"
        key = str(Path(row["image"]).with_suffix("")) if row["image"] else ""
        if key not in names:
            problems.append(f"{where}: image {row['image']!r} is not under images/")
            continue
        if names[key] in rows:
            problems.append(f"{where}: image {row['image']!r} is listed twice")
            continue
        label = row["label"].strip()
        if not label.isdigit():
            problems.append(f"{where}: label {label!r} is not a whole number >= 0")
            continue
        split = row.get("split", "").strip()
        if split not in ("", *SPLITS):
            problems.append(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
            continue
        rows[names[key]] = {"label": int(label), "group": row.get("group", "").strip(), "split": split}
    return rows


def scan_folder(root: str | Path, num_classes: int | None = None, decode: bool = False) -> FolderScan:
    """Every item of the generic layout with its problems. ``decode`` reads every image in full (data
    check); otherwise only headers, and a broken image surfaces when training reads it."""
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir():
        raise DataError(f"folder layout {root}: no images/ folder (expected images/, masks/, labels.csv)")
    names = _class_names(root, num_classes)
    files = sorted((p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: natural_key(p.relative_to(images_dir)))
    if not files:
        raise DataError(f"folder layout {root}: images/ holds no images ({', '.join(IMAGE_SUFFIXES)})")
    problems: list[str] = []
    index_of: dict[str, int] = {}
    for i, f in enumerate(files):
        key = str(f.relative_to(images_dir).with_suffix(""))
        if key in index_of:
            problems.append(f"image {f}: listed twice (also {files[index_of[key]].name}); one mask cannot "
                            "serve both")
        index_of.setdefault(key, i)
    if masks_dir.is_dir():
        for m in sorted(masks_dir.rglob(f"*{MASK_SUFFIX}")):
            if str(m.relative_to(masks_dir).with_suffix("")) not in index_of:
                problems.append(f"mask {m}: no image of that name under images/")
    labels_path = root / "labels.csv"
    rows = _read_labels_csv(labels_path, index_of, problems) if labels_path.is_file() else {}
    scan = FolderScan([], names, problems)
    limit = len(names) if (root / "classes.txt").is_file() or num_classes else None
    for key, i in index_of.items():
        scan_one(scan, files[i], masks_dir / f"{key}{MASK_SUFFIX}", key, rows.get(i), limit, decode)
    top = max((it.label for it in scan.items), default=0)
    if limit is None and top >= len(names):  # no class list: as many classes as the masks and labels use
        scan.class_names = _class_names(root, top + 1)
    return scan


def scan_one(scan: FolderScan, image: Path, mask_path: Path | None, key: str, row: dict | None,
             num_classes: int | None, decode: bool) -> None:
    """Check one image against its mask and label row; append the item or the problem to ``scan``."""
    try:
        height, width = read_image(image).shape[:2] if decode else image_size(image)
        mask = None
        if mask_path is not None and mask_path.is_file():
            mask = read_folder_mask(mask_path, num_classes)
            if mask.shape != (height, width):
                raise DataError(f"mask {mask_path}: size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                                f"{image.name} {width}x{height}")
    except DataError as exc:
        scan.problems.append(str(exc))
        return
    from_mask = int(mask.max()) if mask is not None else 0
    label = from_mask if row is None else row["label"]
    if row is not None and mask is not None and (label > 0) != (from_mask > 0):
        state = "defect pixels" if from_mask else "no defect pixel"
        scan.problems.append(f"labels.csv image {key}: label {label} but its mask {mask_path.name} has {state}")
        return
    group = (row or {}).get("group") or key
    split = (row or {}).get("split", "")
    scan.items.append(FolderItem(image, mask_path if mask is not None else None, key, label,
                                 mask is not None or label == 0, group, split))
    scan.sizes.append((height, width))


def scan_mvtec(root: str | Path, decode: bool = False) -> FolderScan:
    """MVTec AD, one category: train/good and test/<type> (class = defect type in name order after ``good``),
    masks from ground_truth/<type>/<name>_mask.png. The official split is kept in the item names
    (``train/good/000``) but not as a fixed split: its training half has no defect to learn from, so the
    supervised heads cross-validate over all images and the few-shot bank takes defect-free ones."""
    root = Path(root)
    if not is_mvtec_layout(root):
        raise DataError(f"MVTec layout {root}: expected train/good/ and test/ (give one category folder)")
    types = sorted(p.name for p in (root / "test").iterdir() if p.is_dir() and p.name != "good")
    scan = FolderScan([], ("good", *types))
    for split, folder in [("train", root / "train" / "good"), ("test", root / "test" / "good")] + \
            [("test", root / "test" / t) for t in types]:
        if not folder.is_dir():
            continue
        label = 0 if folder.name == "good" else types.index(folder.name) + 1
        for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            mask_path = root / "ground_truth" / folder.name / f"{image.stem}_mask.png"
            if label and not mask_path.is_file():
                scan.problems.append(f"MVTec image {image}: no mask {mask_path}")
                continue
            before = len(scan.items)
            scan_one(scan, image, mask_path if label else None, f"{split}/{folder.name}/{image.stem}",
                     None, 2, decode)
            if len(scan.items) > before:  # binary mask -> the defect type's class index
                item = scan.items[-1]
                scan.items[-1] = FolderItem(item.image, item.mask, item.name, label, True, item.name)
    if not scan.items and not scan.problems:
        raise DataError(f"MVTec layout {root}: no images found")
    return scan


def scan_layout(root: str | Path, num_classes: int | None = None, decode: bool = False) -> FolderScan:
    """The generic layout or MVTec, whichever ``root`` holds."""
    if is_folder_layout(root):
        return scan_folder(root, num_classes, decode)
    if is_mvtec_layout(root):
        return scan_mvtec(root, decode)
    raise DataError(f"data {root}: neither the folder layout (images/, masks/) nor MVTec AD (train/good, test/)")


def read_layout(root: str | Path, num_classes: int | None = None) -> FolderScan:
    """:func:`scan_layout` for training: the first problem is a one-line ``DataError``."""
    scan = scan_layout(root, num_classes)
    scan.raise_first()
    return scan


def split_items(items: list[FolderItem], val_fraction: float, seed: int, n_folds: int = 0, fold: int = 0
                ) -> tuple[list[FolderItem], list[FolderItem], list[FolderItem]]:
    """(train, validation, test) items: the ``split`` column when labels.csv gives one, else fold ``fold``
    of ``n_folds`` as test (none when ``n_folds`` < 2), validation always carved from the training part."""
    from .splits import ALL_TEST, carve_validation, fixed_split, fold_split

    labels, groups = [it.label for it in items], [it.group for it in items]
    if fold != ALL_TEST and any(it.split for it in items):  # ALL_TEST: every item, whatever the column says
        parts = fixed_split([it.split for it in items], labels, groups, val_fraction, seed)
    elif n_folds >= 2 or fold == ALL_TEST:
        parts = fold_split(labels, groups, n_folds, fold, val_fraction, seed)
    else:
        parts = (*carve_validation(range(len(items)), labels, groups, val_fraction, seed), [])
    return tuple([items[i] for i in part] for part in parts)  # type: ignore[return-value]
