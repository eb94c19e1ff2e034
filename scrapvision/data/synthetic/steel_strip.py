"""Deterministic synthetic steel strip with four defect classes and exact masks (the severstal default).

Each image is a grey rolled-strip texture (vertical roll streaks, slow shading, grain, and sometimes a
black margin where the strip does not fill the frame, as in the Kaggle images). Defects by class:
1 clusters of small bright pits, 2 thin dark near-vertical cracks, 3 long bright near-horizontal
scratches (the most frequent class, as in the real data), 4 large dark irregular blotches.
A mask is exactly the set of pixels whose intensity the defect changed. Sample ``i`` of seed ``s``
depends on (s, i) only, so a larger set starts with the same images as a smaller one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ...errors import DataError
from ..images import sample_rng
from ..rle import rle_encode
from ..severstal import NUM_CLASSES, SeverstalRecord, write_train_csv

DEFAULT_SHAPE = (128, 800)  # half of Kaggle's 256x1600: same aspect, 4x cheaper
CLASS_WEIGHTS = (0.2, 0.15, 0.45, 0.2)  # how often each class is picked for a defective image


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-scale noise varying over about ``cells`` blobs (bicubic upsampling of a grid)."""
    grid = rng.standard_normal(cells).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _texture(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(float image, boolean strip area): the strip is lit steel, the rest a black margin."""
    height, width = shape
    streaks = cv2.GaussianBlur(rng.standard_normal((1, width)).astype(np.float32), (0, 0), sigmaX=1.5)
    image = (rng.uniform(80, 130) + 15 * streaks + 10 * _smooth_noise(rng, shape, (3, 12))
             + rng.normal(0, 5, shape)).astype(np.float32)
    strip = np.ones(shape, dtype=bool)
    if rng.random() < 0.25:
        margin = int(width * rng.uniform(0.1, 0.5))
        strip[:, :margin] = False
        if rng.random() < 0.5:
            strip = strip[:, ::-1].copy()
        image[~strip] = rng.uniform(2, 12) + rng.normal(0, 1.5, int((~strip).sum()))
    return image, strip


def _pits(rng: np.random.Generator, canvas: np.ndarray, s: float) -> None:
    cx, cy = rng.uniform(0.05, 0.95) * canvas.shape[1], rng.uniform(0.15, 0.85) * canvas.shape[0]
    for _ in range(rng.integers(6, 25)):
        x, y = cx + rng.normal(0, 40 * s), cy + rng.normal(0, 20 * s)
        cv2.circle(canvas, (int(x), int(y)), max(1, round(rng.uniform(1.5, 5) * s)), 1, -1)


def _crack(rng: np.random.Generator, canvas: np.ndarray, s: float) -> None:
    height, width = canvas.shape
    length = rng.uniform(0.3, 0.8) * height
    y = np.linspace(0, length, 8) + rng.uniform(0, height - length)
    x = rng.uniform(0.03, 0.97) * width + np.cumsum(rng.normal(0, 4 * s, 8))
    points = np.stack([x, y], 1).round().astype(np.int32)
    cv2.polylines(canvas, [points], False, 1, max(1, round(rng.uniform(2, 5) * s)))


def _scratch(rng: np.random.Generator, canvas: np.ndarray, s: float) -> None:
    height, width = canvas.shape
    length = rng.uniform(0.15, 0.6) * width
    x = np.linspace(0, length, 12) + rng.uniform(0, width - length)
    y = rng.uniform(0.1, 0.9) * height + np.cumsum(rng.normal(0, 2 * s, 12))
    points = np.stack([x, y], 1).round().astype(np.int32)
    cv2.polylines(canvas, [points], False, 1, max(1, round(rng.uniform(4, 12) * s)))


def _blotch(rng: np.random.Generator, canvas: np.ndarray, s: float) -> None:
    height, width = canvas.shape
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.25, 0.75) * height
    rx, ry = rng.uniform(50, 150) * s, rng.uniform(30, 90) * s
    angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(10, 18)))
    radius = rng.uniform(0.6, 1.3, angles.size)
    points = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], 1)
    cv2.fillPoly(canvas, [points.round().astype(np.int32)], 1)


# class id -> (shape painter, how many, intensity change range): bright pits/scratches, dark cracks/blotches
_DEFECTS: dict[int, tuple[Callable[..., None], tuple[int, int], tuple[float, float]]] = {
    1: (_pits, (1, 3), (45, 80)),
    2: (_crack, (1, 3), (-70, -40)),
    3: (_scratch, (1, 4), (30, 60)),
    4: (_blotch, (1, 2), (-60, -35)),
}


def synthesize_strip(rng: np.random.Generator, shape: tuple[int, int] = DEFAULT_SHAPE,
                     classes: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 HxW grey image, bool [4, H, W] masks) with defects of ``classes`` inside the strip area.

    A class can still come out empty when all its defects fell in the black margin.
    """
    image, strip = _texture(rng, shape)
    scale = shape[0] / 256
    masks = np.zeros((NUM_CLASSES, *shape), dtype=bool)
    for class_id in sorted(classes, reverse=True):  # big blotches first, small pits drawn over them
        paint, (low, high), (dark, bright) = _DEFECTS[class_id]
        canvas = np.zeros(shape, dtype=np.uint8)
        for _ in range(rng.integers(low, high)):
            paint(rng, canvas, scale)
        mask = canvas.astype(bool) & strip
        image[mask] += rng.uniform(dark, bright) + rng.normal(0, 6, int(mask.sum()))
        masks[class_id - 1] = mask
    return np.clip(image, 0, 255).round().astype(np.uint8), masks


def _sample(seed: int, index: int, shape: tuple[int, int], clean_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = sample_rng(seed, index)
    classes: tuple[int, ...] = ()
    if rng.random() >= clean_fraction:
        count = 1 if rng.random() < 0.8 else 2
        classes = tuple(int(c) for c in rng.choice(np.arange(1, 5), count, replace=False, p=CLASS_WEIGHTS))
    return synthesize_strip(rng, shape, classes)


def _image_id(seed: int, index: int, suffix: str = ".jpg") -> str:
    return f"syn{seed}_{index:05d}{suffix}"


def generate_records(n: int, seed: int = 0, shape: tuple[int, int] = DEFAULT_SHAPE,
                     clean_fraction: float = 0.3) -> list[SeverstalRecord]:
    """In-memory records (grey pixels + RLE strings), the fast path for training and tests."""
    records = []
    for i in range(n):
        image, masks = _sample(seed, i, shape, clean_fraction)
        rles = tuple(rle_encode(m) for m in masks)
        records.append(SeverstalRecord(_image_id(seed, i), rles, tuple(shape), image=image))
    return records


def write_kaggle_layout(folder: str | Path, n: int, seed: int = 0, shape: tuple[int, int] = DEFAULT_SHAPE,
                        clean_fraction: float = 0.3, image_format: str = "jpg") -> Path:
    """Write ``train_images/`` (RGB JPEG q95 or PNG) and ``train.csv`` that the Kaggle reader reads."""
    if image_format not in ("jpg", "png"):
        raise DataError(f"synthetic severstal image_format {image_format!r}: expected 'jpg' or 'png'")
    folder = Path(folder)
    (folder / "train_images").mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(n):
        image, masks = _sample(seed, i, shape, clean_fraction)
        image_id = _image_id(seed, i, "." + image_format)
        Image.fromarray(image).convert("RGB").save(folder / "train_images" / image_id, quality=95)
        labels[image_id] = [rle_encode(m) for m in masks]
    write_train_csv(folder / "train.csv", labels)
    return folder
