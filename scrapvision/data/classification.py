"""Image-classification data: ImageFolder and CSV (``image,class``) readers, splits, the unreadable-image
policy, and a dataset with per-sample seeded augmentation.

Unreadable images (truncated JPEGs, empty or non-image files) are handled by a stated policy: ``skip``
leaves them out and reports how many and which, ``fail`` stops with one line naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, first_line, one_line
from .images import list_images, read_image, resolve_inside, sample_rng, seed_transforms, subfolders

LOAD_RATIO = 8 / 7  # images are kept with their shorter side at image_size * 8/7 (the usual 224/256 margin)


@dataclass(frozen=True)
class Record:
    path: Path
    label: str


def read_image_folder(root: str | Path) -> list[Record]:
    """``root/<class>/**/*.jpg``: the class is the first-level folder name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder {root}: not found")
    classes = subfolders(root)
    if not classes:
        raise DataError(f"dataset folder {root}: no class sub-folders (expected root/<class>/<image>)")
    records = [Record(path, folder.name) for folder in classes for path in _images_or_none(folder)]
    if not records:
        raise DataError(f"dataset folder {root}: its class folders hold no images")
    return records


def _images_or_none(folder: Path) -> list[Path]:
    try:
        return list_images(folder)
    except DataError:
        return []


#: class names that are a spreadsheet's or pandas' way of writing "no value", never a real grade
MISSING_CLASS_NAMES = frozenset({"", "nan", "-nan", "none", "null", "na", "n/a", "#n/a", "<na>"})


def read_class_csv(csv_path: str | Path, root: str | Path | None = None) -> list[Record]:
    """CSV with columns ``image`` (relative to ``root``, default the CSV's folder) and ``class``.

    Each image may appear once: a repeated row would weigh it twice and could land in both train and
    val, and two classes for one image leave its label undefined, so both are a ``DataError`` naming the
    rows. Blank and NaN-like class names (``nan``, ``None``, ``null``, any case) are refused, not learnt.
    """
    import pandas as pd

    csv_path = Path(csv_path)
    root = Path(root) if root is not None else csv_path.parent
    if not csv_path.is_file():
        raise DataError(f"label file {csv_path}: not found")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"label file {csv_path}: not a readable CSV ({first_line(exc)})") from None
    missing = {"image", "class"} - set(frame.columns)
    if missing:
        raise DataError(f"label file {csv_path}: missing column(s) {', '.join(sorted(missing))} "
                        f"(has {', '.join(map(one_line, frame.columns))})")
    records: list[Record] = []
    seen: dict[Path, tuple[int, str]] = {}  # image -> (first row, its class)
    for row, (image, label) in enumerate(zip(frame["image"], frame["class"]), start=2):
        where = f"{csv_path} row {row}"
        label = label.strip()
        if not image.strip():
            raise DataError(f"{where}: empty image")
        if label.lower() in MISSING_CLASS_NAMES:
            raise DataError(f"{where}: image {image!r} has no class (class is {label!r})")
        path = resolve_inside(root, image, where=where)
        if not path.is_file():
            raise DataError(f"{where}: image {image!r} not found under {root}")
        if path in seen:
            raise _repeat_error(csv_path, *seen[path], row, image, label)
        seen[path] = (row, label)
        records.append(Record(path, label))
    if not records:
        raise DataError(f"label file {csv_path}: no rows")
    return records


def _repeat_error(csv_path: Path, first: int, old: str, row: int, image: str, new: str) -> DataError:
    where = f"{csv_path} rows {first} and {row}"
    if old == new:
        return DataError(f"{where}: image {image!r} is listed twice (class {new!r}); keep one row")
    return DataError(f"{where}: image {image!r} has two classes, {old!r} and {new!r}")


def find_records(root: str | Path, layout: str = "auto", csv_name: str = "labels.csv") -> list[Record]:
    """``auto``: the CSV ``root/<csv_name>`` when it exists, else an ImageFolder at ``root``."""
    root = Path(root)
    if layout == "csv" or (layout == "auto" and (root / csv_name).is_file()):
        return read_class_csv(root / csv_name, root)
    return read_image_folder(root)


def split_indices(labels: Sequence[str], val_fraction: float = 0.2, seed: int = 0, folds: int = 0,
                  fold: int = 0) -> tuple[list[int], list[int]]:
    """Stratified (train, val) indices: a fixed ``val_fraction`` split, or fold ``fold`` of ``folds``.
    ``val_fraction`` 0 (and no folds) trains on every image: the final model of a recipe that scores its last
    epoch needs no validation split, and small classes keep all their photos."""
    from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

    if folds <= 1 and val_fraction == 0:
        return list(range(len(labels))), []
    y = np.asarray(labels)
    counts = {c: int((y == c).sum()) for c in np.unique(y)}
    rare = [c for c, n in counts.items() if n < 2]
    if rare:
        raise DataError(f"class {rare[0]!r} has only one image; a stratified split needs at least 2 per class")
    if folds > 1:
        if not 0 <= fold < folds:
            raise DataError(f"data.fold={fold} is outside 0..{folds - 1}")
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        train, val = list(splitter.split(np.zeros(len(y)), y))[fold]
    else:
        n_val = max(len(counts), int(round(val_fraction * len(y))))
        if n_val >= len(y) - len(counts) + 1:
            raise DataError(f"{len(y)} images in {len(counts)} classes are too few for val_fraction={val_fraction}")
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
        train, val = next(splitter.split(np.zeros(len(y)), y))
    return sorted(train.tolist()), sorted(val.tolist())


def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink (never enlarge) so the shorter side is ``size``: the in-memory copy stays small."""
    h, w = image.shape[:2]
    scale = size / min(h, w)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def load_images(paths: Sequence[Path], policy: str, size: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Decode every file fully (so a truncated JPEG is caught now, not mid-epoch) and keep a resized copy.

    Returns (images, indices of the kept paths, one message per skipped file). ``policy='fail'`` raises
    the DataError of the first unreadable file instead.
    """
    if policy not in ("skip", "fail"):
        raise DataError(f"unreadable-image policy {policy!r}: expected 'skip' or 'fail'")
    images, kept, skipped = [], [], []
    for i, path in enumerate(paths):
        try:
            images.append(resize_shorter(read_image(path), size))
            kept.append(i)
        except DataError as exc:
            if policy == "fail":
                raise DataError(f"{exc} (data.unreadable=fail; use skip to leave such files out)") from None
            skipped.append(str(exc))
    return images, kept, skipped


def build_transform(image_size: int, augment: str = "strong") -> A.Compose:
    """``none``: resize + centre crop; ``light``: mild crop + flip; ``strong``: crops, flips, rotation,
    colour and blur, because 333 photos without pretrained weights overfit fast."""
    s = image_size
    if augment == "none":
        ops = [A.SmallestMaxSize(max_size=s), A.CenterCrop(s, s)]
    elif augment == "light":
        ops = [A.RandomResizedCrop((s, s), scale=(0.6, 1.0)), A.HorizontalFlip()]
    elif augment == "strong":
        ops = [
            A.RandomResizedCrop((s, s), scale=(0.25, 1.0), ratio=(0.75, 1.333)),
            A.HorizontalFlip(),
            A.Affine(rotate=(-15, 15), p=0.5),
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8),
            A.ToGray(p=0.05),
            A.GaussianBlur(blur_limit=(3, 5), p=0.1),
            A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.2),
                            hole_width_range=(0.05, 0.2), p=0.3),
        ]
    else:
        raise DataError(f"augment {augment!r}: expected none, light or strong")
    return A.Compose([*ops, A.Normalize()])


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class PredictImages(Dataset):
    """Files to classify, decoded lazily; an unreadable one yields an ``error`` (policy ``skip``) or
    raises its one-line DataError (``fail``)."""

    def __init__(self, files: Sequence[Path], keys: Sequence[str], image_size: int, policy: str = "skip") -> None:
        self.files, self.keys, self.policy = list(files), list(keys), policy
        self.size = image_size
        self.transform = build_transform(image_size, "none")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        try:
            image = resize_shorter(read_image(self.files[index]), round(self.size * LOAD_RATIO))
        except DataError as exc:
            if self.policy == "fail":
                raise
            blank = torch.zeros(3, self.size, self.size)
            return {"image": blank, "file": self.keys[index], "error": str(exc)}
        return {"image": to_tensor(self.transform(image=image)["image"]), "file": self.keys[index], "error": ""}


def predict_images(inputs: Path, args, image_size: int, default_policy: str) -> PredictImages:
    """``predict --input`` (folder, file or list) as :class:`PredictImages`; ``--unreadable`` overrides the
    config's policy. Shared by every head that predicts one row per image file."""
    from .inference import input_files, input_keys

    files = input_files(inputs, getattr(args, "allow_outside_root", False))
    policy = getattr(args, "unreadable", None) or default_policy
    return PredictImages(files, input_keys(inputs, files), image_size, policy)


class ClassificationDataset(Dataset):
    """In-memory RGB images + integer labels; augmentation seeded by (seed, epoch, index)."""

    def __init__(self, images: Sequence[np.ndarray], labels: Sequence[int], image_size: int,
                 augment: str = "none", seed: int = 0) -> None:
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels = list(images), [int(v) for v in labels]
        self.transform = build_transform(image_size, augment)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        seed_transforms(self.transform, sample_rng(self.seed, self.epoch, index))
        image = self.transform(image=self.images[index])["image"]
        return {"image": to_tensor(image), "label": self.labels[index]}
