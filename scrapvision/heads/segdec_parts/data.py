"""Samples, pixel targets (dilation + distance-transform weights) and the dataset of the ``segdec`` head.

Targets live at the network's output stride (8). The pipeline, per image, at the working resolution:
resize (area) -> mask ``> 0`` -> dilate with a ``dilate`` x ``dilate`` square -> distance-transform weights
(Bozic et al.: inside the dilated defect ``max_weight * (d / d_max) ** p``, 1 elsewhere, so uncertain
border pixels count little) -> average-pool both to the stride, which gives soft targets in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...data.images import read_image, sample_rng
from ...data.kolektor import read_kolektor_mask
from ...data.sampling import balanced_order  # noqa: F401  (tests/test_segdec.py still imports it from here)

#: where pixels come from: a file, an array in memory (synthetic data) or a loader called when needed
Source = Path | np.ndarray | Callable[[], np.ndarray]


@dataclass(frozen=True)
class Sample:
    name: str  # e.g. "kos01/Part3"
    image: Source  # HxW uint8 gray
    mask: Source | None  # HxW, > 0 is defect
    defective: bool
    labelled: bool  # gamma: the pixel label may be used (always true for defect-free images)
    group: str = ""  # the physical item, for splits


def _pixels(source: Source, reader: Callable[[Path], np.ndarray]) -> np.ndarray:
    if isinstance(source, np.ndarray):
        return source
    return source() if callable(source) else reader(Path(source))


def fit(array: np.ndarray, height: int, width: int, resize: str = "stretch", fill: float = 0.0) -> np.ndarray:
    """``array`` at height x width (area interpolation). ``stretch`` scales each axis on its own; ``letterbox``
    keeps the aspect ratio and pads the rest with ``fill``, so a set of mixed sizes and orientations keeps its
    defects' shapes (a crack stays a crack whether its image was tall or wide); ``pad`` keeps the native scale
    (shrinking only an image larger than the canvas) and pads, so a pin-hole stays as many pixels as the camera
    saw it."""
    if resize == "stretch":
        return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA)
    scale = min(height / array.shape[0], width / array.shape[1], 1.0 if resize == "pad" else np.inf)
    h, w = max(1, min(height, round(array.shape[0] * scale))), max(1, min(width, round(array.shape[1] * scale)))
    small = cv2.resize(array, (w, h), interpolation=cv2.INTER_AREA)
    top, left = (height - h) // 2, (width - w) // 2
    return cv2.copyMakeBorder(small, top, height - h - top, left, width - w - left, cv2.BORDER_CONSTANT, value=fill)


def load_gray(source: Source, height: int, width: int, resize: str = "stretch") -> np.ndarray:
    img = _pixels(source, lambda p: read_image(p, mode="L"))
    return fit(img, height, width, resize, fill=float(np.median(img)))  # padding in the part's own grey


def load_mask(source: Source | None, height: int, width: int, resize: str = "stretch") -> np.ndarray:
    if source is None:
        return np.zeros((height, width), bool)
    mask = _pixels(source, read_kolektor_mask)
    return fit(mask.astype(np.float32), height, width, resize) > 0


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey-surface jitter for an image in [0, 1]: contrast, brightness, gamma and sensor noise, as light and
    camera gain drift on a line. Geometry is untouched, so the pixel targets stay valid."""
    out = np.clip(img * rng.uniform(0.8, 1.25) + rng.uniform(-0.1, 0.1), 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    return np.clip(out + rng.normal(0.0, rng.uniform(0.0, 0.02), img.shape), 0.0, 1.0).astype(np.float32)


def pixel_targets(mask: np.ndarray, stride: int, dilate: int, weighted: bool, p: float,
                  max_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(soft target, loss weight), each HxW / stride float32, from a boolean mask at input resolution."""
    m = mask.astype(np.uint8)
    if dilate > 1 and m.any():
        m = cv2.dilate(m, np.ones((dilate, dilate), np.uint8))
    weight = np.ones(m.shape, np.float32)
    if weighted and m.any():
        dist = cv2.distanceTransform(m, cv2.DIST_L2, 5)
        weight = np.where(m > 0, max_weight * (dist / dist.max()) ** p, 1.0).astype(np.float32)
    h, w = m.shape[0] // stride, m.shape[1] // stride
    pool = lambda a: cv2.resize(a.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)  # noqa: E731
    return pool(m), pool(weight)


class SegDecDataset(Dataset):
    """Returns dicts: image (1xHxW in [0, 1]), target / weight (1 x H/s x W/s), gamma, label, index.

    Decoded, resized images are cached in memory (KolektorSDD at the CPU resolution is a few MB). With
    ``flip`` on, each sample is flipped left-right / up-down by ``sample_rng(seed, epoch, index)``, before that
    (``rotate90``, square inputs) transposed, then (``photometric``) its grey levels are jittered by the same
    generator.
    """

    def __init__(self, samples: list[Sample], height: int, width: int, stride: int = 8, dilate: int = 1,
                 weighted: bool = False, weight_p: float = 2.0, weight_max: float = 1.0, flip: bool = False,
                 seed: int = 0, resize: str = "stretch", photometric: bool = False, rotate90: bool = False,
                 crop: int = 0) -> None:
        self.samples = samples
        self.height, self.width, self.stride, self.resize = height, width, stride, resize
        self.dilate, self.weighted, self.weight_p, self.weight_max = dilate, weighted, weight_p, weight_max
        self.flip, self.photometric, self.rotate90, self.seed, self.epoch = flip, photometric, rotate90, seed, 0
        self.crop = crop  # training windows of crop x crop pixels (0 = the whole canvas)
        self._defect_cells: dict[int, np.ndarray] = {}  # (row, col) target cells holding an undilated defect pixel
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def labels(self) -> list[bool]:
        return [s.defective for s in self.samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if index not in self._cache:
            s = self.samples[index]
            img = load_gray(s.image, self.height, self.width, self.resize)
            mask = load_mask(s.mask if s.labelled else None, self.height, self.width, self.resize)
            target, weight = pixel_targets(mask, self.stride, self.dilate, self.weighted, self.weight_p,
                                           self.weight_max)
            self._cache[index] = (img, target, weight)
            if self.crop:
                self._defect_cells[index] = np.argwhere(pixel_targets(mask, self.stride, 1, False, 1.0, 1.0)[0] > 0)
        return self._cache[index]

    def target(self, index: int) -> np.ndarray:
        """The un-augmented pixel target of ``index`` at the output stride (decoded once, then cached)."""
        return self._load(index)[1]

    def _window(self, index: int, rng: np.random.Generator, shape: tuple[int, int]) -> tuple[int, int]:
        """Top-left target cell of a training crop: around a random defect cell of a defective image, so the
        crop keeps the image's label; anywhere on a clean one."""
        side, cells = self.crop // self.stride, self._defect_cells.get(index)
        rooms = (shape[0] - side, shape[1] - side)
        if cells is None or not len(cells):
            return int(rng.integers(rooms[0] + 1)), int(rng.integers(rooms[1] + 1))
        row, col = cells[rng.integers(len(cells))]
        return tuple(int(np.clip(c - rng.integers(side), 0, room)) for c, room in zip((row, col), rooms))  # type: ignore[return-value]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        img, target, weight = self._load(index)
        img = img.astype(np.float32) / 255.0
        augment = self.flip or self.photometric or self.rotate90 or self.crop
        rng = sample_rng(self.seed, self.epoch, index) if augment else None
        if self.crop:
            top, left = self._window(index, rng, target.shape)
            side, s = self.crop // self.stride, self.stride
            img = img[top * s:(top + side) * s, left * s:(left + side) * s]
            target, weight = (a[top:top + side, left:left + side] for a in (target, weight))
        if self.rotate90 and rng.random() < 0.5:  # with the two flips: all eight turns and mirrors of a square
            img, target, weight = (a.T for a in (img, target, weight))
        if self.flip:
            for axis in (0, 1):
                if rng.random() < 0.5:
                    img, target, weight = (np.flip(a, axis) for a in (img, target, weight))
        if self.photometric:
            img = photometric(img, rng)
        s = self.samples[index]
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
        return {
            "image": as_t(img),
            "target": as_t(target),
            "weight": as_t(weight),
            "gamma": torch.tensor(float(s.labelled)),
            "label": torch.tensor(float(s.defective)),
            "index": torch.tensor(index),
        }


class GrayFiles(Dataset):
    """Image files for prediction: gray, resized, in [0, 1], with their key (``image_key``) and index."""

    def __init__(self, files: list[Path], keys: list[str], height: int, width: int, resize: str = "stretch") -> None:
        self.files, self.keys, self.height, self.width, self.resize = files, keys, height, width, resize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        img = load_gray(self.files[index], self.height, self.width, self.resize)
        return {"image": torch.from_numpy(img.astype(np.float32) / 255.0)[None], "image_key": self.keys[index],
                "index": index}


#: cap of the automatic defect-pixel weight: past it, a set of pin-hole defects would be trained mostly on a
#: handful of pixels and the segmentation map would flood the clean surface around them
MAX_AUTO_POS_WEIGHT = 100.0


def auto_pos_weight(dataset: SegDecDataset) -> float:
    """Clean / defect target mass over the defective, pixel-labelled training images (1 when there is none),
    so that defect and clean pixels of a defective image weigh alike in the segmentation loss."""
    positive = total = 0.0
    for index, sample in enumerate(dataset.samples):
        if sample.defective and sample.labelled:
            target = dataset.target(index)
            positive, total = positive + float(target.sum()), total + target.size
    return float(np.clip((total - positive) / positive, 1.0, MAX_AUTO_POS_WEIGHT)) if positive else 1.0
