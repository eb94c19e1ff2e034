"""KolektorSDD-like synthetic parts: grayscale, tall and narrow, textured, with thin cracks or scratches.

Every part is fixed by ``(seed, item, part)`` alone, so any subset regenerates identically. The defect is
drawn with the same polyline into the image and into the mask, so the mask is exact. Defect-free parts carry
look-alike distractors (a full-width seam between bars, bright specks) so that "any dark line" is not a
shortcut. :func:`write_kolektor_layout` writes the KolektorSDD folder layout that
:func:`scrapvision.data.kolektor.list_kolektor` reads (PNG, lossless, so the masks stay exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..images import sample_rng


@dataclass(frozen=True)
class SyntheticPart:
    image: np.ndarray  # HxW uint8
    mask: np.ndarray  # HxW bool, the exact defect pixels
    item: str  # "kos01", ...
    part: str  # "Part0", ...

    @property
    def defective(self) -> bool:
        return bool(self.mask.any())


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Vertical lamella texture with a slow shading gradient and fine grain, like a commutator surface."""
    base = rng.uniform(95, 150)
    columns = cv2.GaussianBlur(rng.normal(0, 10, (1, width)).astype(np.float32), (0, 0), sigmaX=1.5)
    rows = np.linspace(-1, 1, height, dtype=np.float32)[:, None] * rng.uniform(-12, 12)
    grain = cv2.GaussianBlur(rng.normal(0, 9, (height, width)).astype(np.float32), (3, 3), 0)
    return base + columns + rows + grain


def _add_distractors(rng: np.random.Generator, img: np.ndarray) -> None:
    height, width = img.shape
    if rng.random() < 0.5:  # seam between bars: straight, full width, faint
        y = int(rng.integers(height // 8, height - height // 8))
        img[y, :] -= rng.uniform(8, 16)
    for _ in range(int(rng.integers(0, 3))):  # bright specks
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        cv2.circle(img, (x, y), int(rng.integers(1, 3)), float(img[y, x] + rng.uniform(20, 40)), -1)


def _crack(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A wandering, mostly horizontal polyline covering 30-80 % of the width (a crack across a bar)."""
    length = rng.uniform(0.3, 0.8) * width
    x0 = rng.uniform(0, width - length)
    y0 = rng.uniform(0.1, 0.9) * height
    n = 6
    xs = x0 + np.linspace(0, length, n)
    slope = np.tan(np.deg2rad(rng.uniform(-25, 25)))
    ys = y0 + (xs - x0) * slope + np.cumsum(rng.normal(0, max(1.0, height / 120), n))
    return np.stack([xs, ys], axis=1).round().astype(np.int32)


def make_part(seed: int, item: int, part: int, defective: bool, height: int = 160, width: int = 64) -> SyntheticPart:
    """One synthetic part; deterministic for its ``(seed, item, part)``."""
    rng = sample_rng(seed, item, part)
    img = _background(rng, height, width)
    _add_distractors(rng, img)
    mask = np.zeros((height, width), np.uint8)
    if defective:
        points = _crack(rng, height, width)
        thickness = int(rng.integers(1, 3)) * max(1, width // 96)
        cv2.polylines(mask, [points], isClosed=False, color=1, thickness=thickness)
        contrast = rng.uniform(25, 55) * (1 if rng.random() < 0.25 else -1)  # mostly dark cracks
        img[mask > 0] += contrast
    image = np.clip(img, 0, 255).astype(np.uint8)
    return SyntheticPart(image, mask > 0, f"kos{item + 1:02d}", f"Part{part}")


def generate_parts(n_items: int = 24, parts_per_item: int = 8, defect_rate: float = 0.3, height: int = 160,
                   width: int = 64, seed: int = 0) -> list[SyntheticPart]:
    """``n_items`` items of ``parts_per_item`` parts; each part is defective with probability ``defect_rate``."""
    parts = []
    for item in range(n_items):
        for part in range(parts_per_item):
            defective = bool(sample_rng(seed, item, part, 1).random() < defect_rate)
            parts.append(make_part(seed, item, part, defective, height, width))
    return parts


def write_kolektor_layout(root: str | Path, parts: list[SyntheticPart]) -> Path:
    """Write ``root/kosNN/PartK.png`` + ``PartK_label.png`` (0/255) for every part; returns ``root``."""
    root = Path(root)
    for p in parts:
        folder = root / p.item
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{p.part}.png"), p.image)
        cv2.imwrite(str(folder / f"{p.part}_label.png"), p.mask.astype(np.uint8) * 255)
    return root
