"""Severstal steel-defect data in the Kaggle layout: ``train.csv`` + ``train_images/``.

Both CSV formats are read (chosen by header): the current long format ``ImageId,ClassId,EncodedPixels``
(defect rows only) and the original ``ImageId_ClassId,EncodedPixels`` (four rows per image, empty RLE =
no defect). An image with no row for a class has no such defect, so only images whose labels are known
to be complete may be scored: a coverage list (``images_covered.csv``, one ``ImageId`` per line) restricts
the records to those images. Images with only image-level classes (``ImageId,ClassId``, 0 = defect-free; no
masks) can join training through :func:`load_image_labelled`: they teach the classifier branch, not the masks.
Every problem is a one-line ``DataError`` naming the file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..checkpoint import atomic_write
from ..errors import DataError, first_line, one_line
from ..heads.severstal_parts.config import NUM_CLASSES
from .images import image_size, list_images, read_image, sample_rng, seed_transforms
from .rle import rle_decode, rle_encode, rle_runs

SEVERSTAL_SHAPE = (256, 1600)  # (H, W) of every Kaggle image
COVERAGE_FILE = "images_covered.csv"
NEW_COLUMNS = ("ImageId", "ClassId", "EncodedPixels")
OLD_COLUMNS = ("ImageId_ClassId", "EncodedPixels")


@dataclass(frozen=True, eq=False)
class SeverstalRecord:
    """One image and its four RLE strings ("" = class absent). ``image`` (in memory) wins over ``path``.
    ``classes`` set: an image with image-level labels only (its masks are unknown, the RLE strings empty)."""

    image_id: str
    rles: tuple[str, ...]
    shape: tuple[int, int] = SEVERSTAL_SHAPE
    path: Path | None = None
    image: np.ndarray | None = None
    classes: tuple[bool, ...] | None = None

    @property
    def pixel_labelled(self) -> bool:
        return self.classes is None

    @property
    def labels(self) -> tuple[bool, ...]:
        """Which classes are present: for class-balanced sampling and image-level heads."""
        return self.classes if self.classes is not None else tuple(bool(r) for r in self.rles)

    def masks(self) -> np.ndarray:
        """Boolean [4, H, W] masks decoded from the RLE strings."""
        return build_masks(self.rles, self.shape, self.image_id)

    def load_image(self) -> np.ndarray:
        """HxWx3 uint8 RGB, checked against the RLE shape so a resized file cannot misplace masks."""
        if self.image is not None:
            image = self.image if self.image.ndim == 3 else np.repeat(self.image[..., None], 3, axis=2)
        elif self.path is not None:
            image = read_image(self.path)
        else:
            raise DataError(f"record {self.image_id}: has neither an image file nor pixels")
        if image.shape[:2] != tuple(self.shape):
            raise DataError(f"image {self.path or self.image_id}: size {image.shape[1]}x{image.shape[0]} "
                            f"differs from the mask size {self.shape[1]}x{self.shape[0]}")
        return image


def build_masks(rles: Sequence[str], shape: tuple[int, int] = SEVERSTAL_SHAPE, image_id: str = "") -> np.ndarray:
    """Stack per-class RLE strings into a boolean [C, H, W] array (channel c = class c + 1)."""
    masks = np.zeros((len(rles), *shape), dtype=bool)
    for c, rle in enumerate(rles):
        if rle:
            masks[c] = rle_decode(rle, shape, f"{image_id} class {c + 1}")
    return masks


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({first_line(exc)})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.fillna("")


def _split_rows(frame: pd.DataFrame, path: Path) -> list[tuple[int, str, str, str]]:
    """(line, image_id, class_text, rle) for either CSV format, auto-detected by header."""
    columns = set(frame.columns)
    lines = range(2, len(frame) + 2)  # line 1 is the header; blank lines are kept, so numbers match
    if set(NEW_COLUMNS) <= columns:
        return list(zip(lines, frame["ImageId"], frame["ClassId"], frame["EncodedPixels"]))
    if set(OLD_COLUMNS) <= columns:
        rows = []
        for line, key, rle in zip(lines, frame["ImageId_ClassId"], frame["EncodedPixels"]):
            image_id, sep, class_text = key.strip().rpartition("_")
            if key.strip() and not sep:
                raise DataError(f"{path} line {line}: ImageId_ClassId {key!r} has no '_<class>' suffix")
            rows.append((line, image_id, class_text, rle))
        return rows
    raise DataError(f"{path}: columns {','.join(map(one_line, frame.columns))} are neither {','.join(NEW_COLUMNS)} "
                    f"nor {','.join(OLD_COLUMNS)}")


def read_train_csv(path: str | Path, shape: tuple[int, int] = SEVERSTAL_SHAPE) -> dict[str, list[str]]:
    """Image id -> four RLE strings for every image named in the CSV; every RLE is validated."""
    path = Path(path)
    labels: dict[str, list[str]] = {}
    seen: dict[tuple[str, int], int] = {}
    for line, image_id, class_text, rle in _split_rows(_read_csv(path), path):
        image_id, class_text, rle = image_id.strip(), class_text.strip(), rle.strip()
        if not (image_id or class_text or rle):
            continue  # blank line
        if not image_id:
            raise DataError(f"{path} line {line}: empty ImageId")
        if class_text not in {str(c) for c in range(1, NUM_CLASSES + 1)}:
            raise DataError(f"{path} line {line}: unknown ClassId {class_text!r} (expected 1..{NUM_CLASSES})")
        class_id = int(class_text)
        if (image_id, class_id) in seen:
            raise DataError(f"{path} line {line}: image {image_id} class {class_id} repeats line "
                            f"{seen[image_id, class_id]}")
        seen[image_id, class_id] = line
        try:
            rle_runs(rle, shape, f"{image_id} class {class_id}")
        except DataError as exc:
            raise DataError(f"{path} line {line}: {exc}") from None
        labels.setdefault(image_id, [""] * NUM_CLASSES)[class_id - 1] = rle
    return labels


def write_train_csv(path: str | Path, labels: Mapping[str, Sequence[str]]) -> Path:
    """Write the current Kaggle format (defect rows only, sorted), atomically."""
    with atomic_write(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(NEW_COLUMNS)
        for image_id in sorted(labels):
            for c, rle in enumerate(labels[image_id]):
                if rle:
                    writer.writerow((image_id, c + 1, rle))
    return Path(path)


def read_coverage(path: str | Path) -> set[str]:
    """Image ids whose labels are complete (a CSV with an ``ImageId`` column)."""
    path = Path(path)
    frame = _read_csv(path)
    if "ImageId" not in frame.columns:
        raise DataError(f"{path}: has no ImageId column (found {','.join(map(one_line, frame.columns))})")
    return {i.strip() for i in frame["ImageId"] if i.strip()}


def load_records(
    root: str | Path,
    coverage: str | Path | None = None,
    shape: tuple[int, int] | None = None,
    csv_name: str = "train.csv",
    images_dir: str = "train_images",
    image_labelled: Collection[str] = (),
) -> list[SeverstalRecord]:
    """Records of the image files under ``root/images_dir`` whose labels are complete, sorted by id.

    ``image_labelled`` names images that have image-level labels only (:func:`load_image_labelled`): they
    are left out, and one that the coverage list or ``train.csv`` gives masks is a ``DataError`` (two labels
    that could disagree).

    ``coverage`` defaults to ``root/images_covered.csv`` when it exists (the shared sample); without
    one every image file is taken as fully labelled (the Kaggle train set: no row = no defect).
    ``shape`` defaults to the size of the first image (1600x256 for Kaggle, smaller for synthetic).
    CSV rows of images without a file are validated but unused.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"severstal data folder {root}: not found")
    files = {p.name: p for p in list_images(root / images_dir, recursive=False)}
    coverage_path = Path(coverage) if coverage else root / COVERAGE_FILE
    if coverage or coverage_path.is_file():
        covered = read_coverage(coverage_path)
        _no_masks_for(image_labelled, covered, coverage_path)
        files = {name: p for name, p in files.items() if name in covered}
        if not files:
            raise DataError(f"{root / images_dir}: no image file is listed in {coverage_path}")
    files = {name: p for name, p in files.items() if name not in set(image_labelled)}
    if not files:
        raise DataError(f"{root / images_dir}: no fully-labelled image (every one has image-level labels only)")
    shape = tuple(shape) if shape else image_size(next(iter(files.values())))
    labels = read_train_csv(root / csv_name, shape)
    _no_masks_for(image_labelled, {k for k, rles in labels.items() if any(rles)}, root / csv_name)
    empty = [""] * NUM_CLASSES
    return [SeverstalRecord(name, tuple(labels.get(name, empty)), shape, path=p) for name, p in sorted(files.items())]


def read_image_labels(path: str | Path) -> dict[str, tuple[bool, ...]]:
    """Image id -> which of the four classes it holds, from a long ``ImageId,ClassId`` CSV (one row per class
    present; ClassId 0 = defect-free). Class lists are taken as complete: an unlisted class is absent."""
    path = Path(path)
    frame = _read_csv(path)
    if not {"ImageId", "ClassId"} <= set(frame.columns):
        raise DataError(f"{path}: needs columns ImageId,ClassId (found {','.join(map(one_line, frame.columns))})")
    labels: dict[str, list[bool]] = {}
    for line, image_id, class_text in zip(range(2, len(frame) + 2), frame["ImageId"], frame["ClassId"]):
        image_id, class_text = image_id.strip(), class_text.strip()
        if not (image_id or class_text):
            continue
        if not image_id:
            raise DataError(f"{path} line {line}: empty ImageId")
        if class_text not in {str(c) for c in range(NUM_CLASSES + 1)}:
            raise DataError(f"{path} line {line}: ClassId {class_text!r} is not 0 (defect-free) or 1..{NUM_CLASSES}")
        flags = labels.setdefault(image_id, [False] * NUM_CLASSES)
        if class_text != "0":
            flags[int(class_text) - 1] = True
    if not labels:
        raise DataError(f"{path}: lists no image")
    return {k: tuple(v) for k, v in labels.items()}


def load_image_labelled(root: str | Path, labels_csv: str | Path, shape: tuple[int, int] | None = None,
                        images_dir: str = "train_images") -> list[SeverstalRecord]:
    """Records of the images listed in ``labels_csv`` (relative to ``root`` unless absolute), sorted by id;
    pass their ids to :func:`load_records` as ``image_labelled`` so they are not also read as fully labelled."""
    root = Path(root)
    path = Path(labels_csv) if Path(labels_csv).is_absolute() else root / labels_csv
    labels = read_image_labels(path)
    files = {p.name: p for p in list_images(root / images_dir, recursive=False)}
    missing = sorted(set(labels) - set(files))
    if missing:
        raise DataError(f"{path}: image {missing[0]} has no file in {root / images_dir} ({len(missing)} missing)")
    shape = tuple(shape) if shape else image_size(files[next(iter(labels))])
    empty = ("",) * NUM_CLASSES
    return [SeverstalRecord(name, empty, shape, path=files[name], classes=labels[name]) for name in sorted(labels)]


def _no_masks_for(image_labelled: Collection[str], with_masks: set[str], source: Path) -> None:
    both = sorted(set(image_labelled) & with_masks)
    if both:
        raise DataError(f"{source}: image {both[0]} has complete masks here but is listed with image-level labels "
                        f"only (data.image_labels); keep it in one of the two ({len(both)} such image(s))")


def split_records(records: Sequence[SeverstalRecord], val_fraction: float, seed: int = 0
                  ) -> tuple[list[SeverstalRecord], list[SeverstalRecord]]:
    """Deterministic (train, val) split by image; at least one image on each side when possible."""
    order = np.random.default_rng(seed).permutation(len(records))
    n_val = min(max(1, round(len(records) * val_fraction)), len(records) - 1) if len(records) > 1 else 0
    return [records[i] for i in sorted(order[n_val:])], [records[i] for i in sorted(order[:n_val])]


class SeverstalDataset(Dataset):
    """Image + 4-channel mask per record, resized and flipped with albumentations.

    Each sample's augmentation comes from ``sample_rng(seed, epoch, index)``, never global state, so a
    resumed or DDP run sees the same flips. Images are normalised with ImageNet mean/std.
    """

    def __init__(self, records: Sequence[SeverstalRecord], image_size: tuple[int, int] | None = None,
                 augment: bool = False, seed: int = 0) -> None:
        self.records = list(records)
        self.image_size = tuple(image_size) if image_size else None
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        steps: list[A.BasicTransform] = []
        if self.image_size:
            steps.append(A.Resize(*self.image_size, area_for_downscale="image"))
        if augment:
            steps += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
        steps.append(A.Normalize())
        self.transform = A.Compose(steps)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        record = self.records[index]
        image = record.load_image()
        masks = record.masks().transpose(1, 2, 0).astype(np.uint8)
        seed_transforms(self.transform, sample_rng(self.seed, self.epoch, index))
        out = self.transform(image=image, mask=masks)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
            "mask": torch.from_numpy(np.ascontiguousarray(out["mask"].transpose(2, 0, 1), dtype=np.float32)),
            "present": torch.tensor(record.labels, dtype=torch.float32),  # image-level target of the classifier
            "pixel_labelled": torch.tensor(float(record.pixel_labelled)),  # 0: the mask is unknown, not empty
            "image_id": record.image_id,
        }


def folder_records(items, num_classes: int = 4) -> list[SeverstalRecord]:
    """Records from the generic folder layout: each class-index mask becomes the four RLE strings the
    rest of the head works with (exact codec, so nothing is lost). An image with a defect label but no
    mask cannot train a segmenter: a ``DataError`` naming it."""
    from .folder import read_folder_mask

    records = []
    for item in items:
        if not item.pixel_labelled:
            raise DataError(f"image {item.image}: label {item.label} but no mask; severstal needs pixel masks")
        height, width = image_size(item.image)
        mask = read_folder_mask(item.mask, num_classes + 1) if item.mask else np.zeros((height, width), np.uint8)
        rles = tuple(rle_encode(mask == k) for k in range(1, num_classes + 1))
        records.append(SeverstalRecord(item.name, rles, (height, width), item.image))
    return records
