"""Ground ceramic / magnetic tiles: grey, textured, of mixed sizes, with five subtle defect types.

A stand-in for the kind of set segdec was not tuned for (issue 25's held-out set: about 1300 grey images of
230-630 px, five defect types, 29 % defective). Unlike the KolektorSDD-like parts (``surface_defects``), whose
defects are high-contrast lines on parts of one size, these tiles vary in size, aspect and exposure, carry
grinding marks, shading and blotches on every image, and their defects are small or faint:

* ``blowhole``: one to three small dark pits;
* ``crack``: a thin dark wandering line;
* ``break``: a dark chip cut into an edge;
* ``fray``: a thin ragged band along an edge;
* ``uneven``: a patch whose grinding marks run across the rest (texture, not brightness).

Every tile is fixed by ``(seed, index)`` alone. Defects are drawn from the same mask that is saved, so the
ground truth is exact. :func:`write_ground_tiles` writes the generic folder layout (``images/`` +
``masks/`` + ``labels.csv``, datasets/folder_layout.md) that segdec, clip_anomaly and severstal read.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from ..images import sample_rng

DEFECT_TYPES = ("blowhole", "crack", "break", "fray", "uneven")


def _surface(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float, float]:
    """Exposure, shading, low-frequency blotches, directional grinding marks and sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.25, 0.9)
    wobble = rng.normal(0, 1.5, (h, w)).cumsum(1) * 0.02
    grind = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq + wobble)
    shade = (xx / w - 0.5) * rng.uniform(-40, 40) + (yy / h - 0.5) * rng.uniform(-40, 40)
    blot = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), rng.uniform(8, 20))
    blot *= rng.uniform(3, 10) / (blot.std() + 1e-6)
    img = rng.uniform(50, 170) + shade + blot + grind * rng.uniform(3, 9) + rng.normal(0, rng.uniform(3, 7), (h, w))
    return img.astype(np.float32), angle, freq


def _edge_chip(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A triangle cut into one of the four edges."""
    side, length, depth = int(rng.integers(4)), int(rng.integers(20, 60)), int(rng.integers(6, 20))
    along = int(rng.integers(length, (w if side < 2 else h) - length))
    tip = along + int(rng.integers(-5, 6))
    if side == 0:
        poly = [(along - length // 2, 0), (along + length // 2, 0), (tip, depth)]
    elif side == 1:
        poly = [(along - length // 2, h - 1), (along + length // 2, h - 1), (tip, h - 1 - depth)]
    elif side == 2:
        poly = [(0, along - length // 2), (0, along + length // 2), (depth, tip)]
    else:
        poly = [(w - 1, along - length // 2), (w - 1, along + length // 2), (w - 1 - depth, tip)]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.array(poly, np.int32)], 1)
    return mask


def _defect(rng: np.random.Generator, img: np.ndarray, kind: str, angle: float, freq: float) -> np.ndarray:
    """Draw one defect of ``kind`` into ``img`` (in place); returns its mask (HxW uint8)."""
    h, w = img.shape
    mask = np.zeros((h, w), np.uint8)
    contrast = rng.uniform(15, 35)
    if kind == "blowhole":
        for _ in range(int(rng.integers(1, 4))):
            r = int(rng.integers(3, 8))
            centre = (int(rng.integers(10, w - 10)), int(rng.integers(10, h - 10)))
            cv2.ellipse(mask, centre, (r, int(r * rng.uniform(0.7, 1.3))), rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind == "crack":
        points, heading = [np.array([rng.integers(0, w), rng.integers(0, h)], float)], rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(4, 10))):
            heading += rng.normal(0, 0.4)
            points.append(points[-1] + 12 * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(mask, [np.array(points, np.int32)], False, 1, int(rng.integers(1, 3)))
    elif kind == "break":
        mask, contrast = _edge_chip(rng, h, w), rng.uniform(40, 70)
    elif kind == "fray":
        start = int(rng.integers(0, w - 40))
        for x in range(start, min(w, start + int(rng.integers(30, 80)))):
            cv2.line(mask, (x, 0), (x, int(rng.integers(1, 6))), 1, 1)
        if rng.random() < 0.5:
            mask = np.ascontiguousarray(mask[::-1])
    else:  # uneven
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(20, 60)), int(rng.integers(15, 40)))
        cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        across = angle + np.pi / 2
        marks = np.sin((xx * np.cos(across) + yy * np.sin(across)) * freq * 1.5) * rng.uniform(6, 12)
        img += cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 3) * marks
        return mask
    img -= cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0) * contrast
    return mask


def make_tile(seed: int, index: int, defect_rate: float = 0.29, min_side: int = 110,
              max_side: int = 420) -> tuple[np.ndarray, np.ndarray, str]:
    """(image HxW uint8, mask HxW bool, defect type or "") of tile ``index``; the type cycles with the index."""
    rng = sample_rng(seed, index)
    h, w = (int(rng.integers(min_side, max_side)) for _ in range(2))
    img, angle, freq = _surface(rng, h, w)
    kind = DEFECT_TYPES[index % len(DEFECT_TYPES)] if rng.random() < defect_rate else ""
    mask = _defect(rng, img, kind, angle, freq) if kind else np.zeros((h, w), np.uint8)
    image = np.clip(cv2.GaussianBlur(img, (0, 0), 0.7), 0, 255).astype(np.uint8)
    return image, mask > 0, kind


def write_ground_tiles(root: str | Path, count: int = 600, seed: int = 0, defect_rate: float = 0.29) -> Path:
    """Write ``count`` tiles in the generic folder layout; ``labels.csv`` also names each defect type."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(count):
        image, mask, kind = make_tile(seed, index, defect_rate)
        name = f"tile{index:04d}"
        cv2.imwrite(str(root / "images" / f"{name}.png"), image)
        if kind:
            cv2.imwrite(str(root / "masks" / f"{name}.png"), mask.astype(np.uint8) * 255)
        rows.append({"image": f"{name}.png", "label": int(bool(kind)), "group": name, "type": kind or "good"})
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "group", "type"])
        writer.writeheader()
        writer.writerows(rows)
    return root
