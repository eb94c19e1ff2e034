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


def load_gray(source: Source, height: int, width: int) -> np.ndarray:
    img = _pixels(source, lambda p: read_image(p, mode="L"))
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def load_mask(source: Source | None, height: int, width: int) -> np.ndarray:
    if source is None:
        return np.zeros((height, width), bool)
    mask = _pixels(source, read_kolektor_mask)
    return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0


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
    ``flip`` on, each sample is flipped left-right / up-down by ``sample_rng(seed, epoch, index)``.
    """

    def __init__(self, samples: list[Sample], height: int, width: int, stride: int = 8, dilate: int = 1,
                 weighted: bool = False, weight_p: float = 2.0, weight_max: float = 1.0, flip: bool = False,
                 seed: int = 0) -> None:
        self.samples = samples
        self.height, self.width, self.stride = height, width, stride
        self.dilate, self.weighted, self.weight_p, self.weight_max = dilate, weighted, weight_p, weight_max
        self.flip, self.seed, self.epoch = flip, seed, 0
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
            img = load_gray(s.image, self.height, self.width)
            mask = load_mask(s.mask if s.labelled else None, self.height, self.width)
            target, weight = pixel_targets(mask, self.stride, self.dilate, self.weighted, self.weight_p,
                                           self.weight_max)
            self._cache[index] = (img, target, weight)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        img, target, weight = self._load(index)
        if self.flip:
            rng = sample_rng(self.seed, self.epoch, index)
            for axis in (0, 1):
                if rng.random() < 0.5:
                    img, target, weight = (np.flip(a, axis) for a in (img, target, weight))
        s = self.samples[index]
        as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
        return {
            "image": as_t(img) / 255.0,
            "target": as_t(target),
            "weight": as_t(weight),
            "gamma": torch.tensor(float(s.labelled)),
            "label": torch.tensor(float(s.defective)),
            "index": torch.tensor(index),
        }


class GrayFiles(Dataset):
    """Image files for prediction: gray, resized, in [0, 1], with their key (``image_key``) and index."""

    def __init__(self, files: list[Path], keys: list[str], height: int, width: int) -> None:
        self.files, self.keys, self.height, self.width = files, keys, height, width

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        img = load_gray(self.files[index], self.height, self.width)
        return {"image": torch.from_numpy(img.astype(np.float32) / 255.0)[None], "image_key": self.keys[index],
                "index": index}
