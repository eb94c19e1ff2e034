"""Reader and Dataset for copper-granule image sets (the ``canet`` head).

On disk, one folder per *sample* (one stirred bag of granules)::

    <root>/<split>/<sample>/images/*.png|jpg   N photos of the stirred sample
    <root>/<split>/<sample>/masks/<stem>.png   binary copper mask per photo (> 127 = copper), the photo's
                                               size, single-channel (grey, or RGB with equal channels)
    <root>/<split>/<sample>/sample.json        {"copper_content": 0.873, ...}  (mass fraction, 0..1)

A *training* sample without ``sample.json`` or without ``copper_content`` (but with masks) is mask-only: it
feeds the area and per-patch loss terms, not the content term (masking photos is far cheaper than assaying
a bag). Validation and test samples need the content.

Splits are ``train``, ``val`` and optionally ``test``. The synthetic generator
(:mod:`scrapvision.data.synthetic.copper_granules`) writes exactly this layout. Masks are only needed for
training and for the area-proportion metrics; ``predict`` reads ``images/`` alone.

A Dataset item is a dict: ``images`` float32 [N, 3, H, W] in [0, 1], ``mask`` float32 [N, H, W] (copper
fraction of each pixel at model resolution), ``area`` float32 [N] (copper pixel share of each photo,
measured on the full-resolution mask) and ``content`` float32 []. Default collation stacks these into
``images`` [B, N, 3, H, W], ``mask`` [B, N, H, W], ``area`` [B, N], ``content`` [B]. ``assayed`` [B] is 1.0
for a sample with a content label and 0.0 for a mask-only one (whose ``content`` is a 0.0 placeholder, never
NaN, so that no NaN can reach the loss's graph).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError, first_line
from .images import IMAGE_SUFFIXES, list_images, read_gray_mask, read_image, sample_rng, subfolders

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CopperSample:
    """Paths of one sample; ``masks``/``copper_content`` are None when the folder has none."""

    folder: Path
    images: tuple[Path, ...]
    masks: tuple[Path, ...] | None
    copper_content: float | None

    @property
    def name(self) -> str:
        return self.folder.name


def read_content(folder: Path, required: bool = True) -> float | None:
    """``copper_content`` of ``folder/sample.json``: a mass fraction in [0, 1] (not a percentage). Not
    ``required``: None when the file or the key is missing (a mask-only sample); a bad value is still an error."""
    path = folder / "sample.json"
    if not path.is_file():
        if not required:
            return None
        raise DataError(f"sample {folder}: no sample.json with copper_content")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({first_line(exc)})") from None
    if not isinstance(meta, dict) or "copper_content" not in meta:
        if isinstance(meta, dict) and not required:
            return None
        raise DataError(f"{path}: no 'copper_content' key (expected {{\"copper_content\": 0.873, ...}})")
    value = meta["copper_content"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{path}: 'copper_content' must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise DataError(f"{path}: copper_content={value} is outside [0, 1] (give a mass fraction, not a percentage)")
    return float(value)


def _mask_for(image: Path, mask_dir: Path) -> Path:
    for suffix in (image.suffix, *IMAGE_SUFFIXES):
        candidate = mask_dir / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise DataError(f"image {image}: no copper mask {mask_dir / image.stem}.png")


def read_sample(folder: str | Path, need_content: bool = True, need_masks: bool = True) -> CopperSample:
    """Check one sample folder and list its files (nothing is decoded yet). Without ``need_content`` a
    sample without a content label has ``copper_content`` None."""
    folder = Path(folder)
    image_dir = folder / "images"
    images = tuple(list_images(image_dir if image_dir.is_dir() else folder, recursive=False))
    mask_dir = folder / "masks"
    masks = None
    if need_masks:
        if not mask_dir.is_dir():
            raise DataError(f"sample {folder}: no masks/ folder (binary copper masks are needed for training)")
        masks = tuple(_mask_for(p, mask_dir) for p in images)
    content = read_content(folder, required=need_content)
    return CopperSample(folder, images, masks, content)


def list_samples(split_dir: str | Path, need_content: bool = True, need_masks: bool = True) -> list[CopperSample]:
    """Every sample folder directly under ``split_dir``, sorted by name."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"folder {split_dir}: not found (expected <root>/train, <root>/val[, <root>/test])")
    folders = subfolders(split_dir)
    if not folders:
        raise DataError(f"folder {split_dir}: holds no sample folders")
    return [read_sample(f, need_content, need_masks) for f in folders]


def load_images(paths: tuple[Path, ...], size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Decode and resize photos to ``size`` x ``size`` (area interpolation): uint8 [n, size, size, 3],
    plus each photo's original (height, width)."""
    decoded = [read_image(p) for p in paths]
    resized = [cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA) for img in decoded]
    return np.stack(resized), [img.shape[:2] for img in decoded]


def read_masks(sample: CopperSample, image_shapes: list[tuple[int, int]], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Copper share of each full-resolution mask, float32 [n], and the masks area-resized to the model's
    ``size`` (copper fraction of each pixel x 255), uint8 [n, size, size]."""
    if sample.masks is None:
        raise DataError(f"sample {sample.folder}: has no masks")
    areas, small = [], []
    for path, shape in zip(sample.masks, image_shapes):
        mask = read_gray_mask(path)  # a colour mask is a DataError: which colour would be copper?
        if mask.shape != tuple(shape):
            raise DataError(f"mask {path}: size {mask.shape[1]}x{mask.shape[0]} differs from its image "
                            f"{shape[1]}x{shape[0]}")
        binary = np.where(mask > 127, 255, 0).astype(np.uint8)
        areas.append(float((binary > 0).mean()))
        small.append(cv2.resize(binary, (size, size), interpolation=cv2.INTER_AREA))
    return np.asarray(areas, np.float32), np.stack(small)


class SampleStore:
    """Samples as arrays at model resolution. ``get(i)`` -> (photos uint8 [K,S,S,3], copper masks uint8
    [K,S,S] (pixel copper fraction x 255), copper area of each full-resolution mask [K], content or None
    for a mask-only sample)."""

    def __init__(self, images: list[np.ndarray], masks: list[np.ndarray], areas: list[np.ndarray],
                 contents: list[float | None]) -> None:
        self.images, self.masks, self.areas, self.contents = images, masks, areas, contents

    def __len__(self) -> int:
        return len(self.images)

    def assayed(self) -> list[bool]:
        """Which samples have a content label (read without decoding any photo)."""
        return [c is not None for c in self.contents]

    def subset(self, indices: list[int]) -> SampleStore:
        return SampleStore(*([seq[i] for i in indices] for seq in (self.images, self.masks, self.areas, self.contents)))

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
        return self.images[index], self.masks[index], self.areas[index], self.contents[index]


class FolderStore(SampleStore):
    """Reads a split from disk lazily (each sample is decoded when asked for)."""

    def __init__(self, samples: list[CopperSample], size: int) -> None:
        self.samples, self.size = samples, size

    def __len__(self) -> int:
        return len(self.samples)

    def assayed(self) -> list[bool]:
        return [s.copper_content is not None for s in self.samples]

    def subset(self, indices: list[int]) -> SampleStore:
        return FolderStore([self.samples[i] for i in indices], self.size)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
        sample = self.samples[index]
        images, shapes = load_images(sample.images, self.size)
        areas, masks = read_masks(sample, shapes, self.size)
        return images, masks, areas, sample.copper_content


class CopperSetDataset(Dataset):
    """N photos per sample. Training draws N of the sample's photos per epoch and rotates/flips each one
    (seeded from ``sample_rng(seed, epoch, index)``); evaluation takes the first N. A sample with fewer
    than N photos repeats them cyclically, so batches keep one shape. At evaluation N = 0 takes every photo
    of each sample, as a plant would use them (samples then may differ in photo count)."""

    def __init__(self, store: SampleStore, images_per_sample: int, train: bool, seed: int = 0) -> None:
        if images_per_sample < (1 if train else 0):
            raise DataError(f"images_per_sample must be >= 1 (0: every photo, evaluation only), got {images_per_sample}")
        self.store, self.n, self.train, self.seed = store, images_per_sample, train, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.store)

    def assayed(self) -> list[bool]:
        return self.store.assayed()

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        images, masks, areas, content = self.store.get(index)
        count = len(images)
        if self.train:
            rng = sample_rng(self.seed, self.epoch, index)
            pick = rng.permutation(count)[: self.n] if count >= self.n else rng.integers(count, size=self.n)
            codes = rng.integers(8, size=self.n)
        else:
            n = self.n or count
            pick, codes = np.arange(n) % count, np.zeros(n, int)
        photos = np.stack([_rot_flip(images[j], c) for j, c in zip(pick, codes)])
        small = np.stack([_rot_flip(masks[j], c) for j, c in zip(pick, codes)])
        return {"images": torch.from_numpy(photos).permute(0, 3, 1, 2).float().div_(255),
                "mask": torch.from_numpy(small).float().div_(255),
                "area": torch.from_numpy(np.asarray(areas)[pick].astype(np.float32)),
                "content": torch.tensor(0.0 if content is None else content, dtype=torch.float32),
                "assayed": torch.tensor(float(content is not None))}


class SamplePhotosDataset(Dataset):
    """Sample folders to predict; an item holds all (or the first ``limit``) photos of one sample."""

    def __init__(self, folders: list[Path], size: int, limit: int = 0, exact: bool = False) -> None:
        self.folders, self.size, self.limit, self.exact = folders, size, limit, exact
        self.keys = [f.name for f in folders]

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> dict:
        sample = read_sample(self.folders[index], need_content=False, need_masks=False)
        paths = sample.images[: self.limit] if self.limit else sample.images
        if not paths:
            raise DataError(f"sample {sample.folder}: holds no photos")
        if self.exact and len(paths) < self.limit:
            raise DataError(f"sample {sample.folder}: the direct baseline needs {self.limit} photos, found {len(paths)}")
        images, _ = load_images(paths, self.size)
        return {"sample": sample.name, "photos": [p.name for p in paths], "true_copper_content": sample.copper_content,
                "images": torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)}


def _rot_flip(image: np.ndarray, code: int) -> np.ndarray:
    """One of the 8 symmetries of the square: a top-down photo of a pile has no preferred orientation."""
    image = np.rot90(image, int(code) % 4)
    return np.ascontiguousarray(image[:, ::-1] if code >= 4 else image)
