"""Synthetic steel-scrap scenes with impurities and their class-index masks (known ground truth).

A scene is a top view of a heap of rusty and bare steel pieces (plates, beams, rebar) with dark gaps,
plus a few impurities drawn in random depth order, so steel can cover part of an impurity: copper wire,
plastic, wood, rubber and aluminium cans. Some look like steel on purpose (copper vs. rust, aluminium vs.
bare steel, rubber vs. shadow): a colour threshold does not solve it. About ``clean_fraction`` of the
scenes have no impurity, so image-level scores are measurable.

Scene ``i`` depends only on ``(seed, i)``. :func:`write_scrap_anomaly` writes the class-mask layout that
``scrapvision.data.class_masks`` reads (``classes.txt``, ``images/``, ``masks/``, per split).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..images import sample_rng

#: class index -> name; 0 is the normal material (steel and the gaps between pieces)
SCRAP_CLASSES: tuple[str, ...] = ("steel", "copper wire", "plastic", "wood", "rubber", "aluminium can")
#: validation scenes are drawn from indices far from the training ones
VAL_OFFSET = 1_000_000


def _noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth value noise in [-1, 1]: a coarse random grid upsampled bicubically."""
    coarse = rng.uniform(-1, 1, (max(2, h // cells), max(2, w // cells))).astype(np.float32)
    return np.clip(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1)


def _paint(img: np.ndarray, mask: np.ndarray, shape: np.ndarray, colour: np.ndarray, label: int) -> None:
    """Write ``colour`` (HxWx3 or 3) where ``shape`` is set, and ``label`` into the mask."""
    sel = shape > 0
    img[sel] = colour[sel] if colour.ndim == 3 else colour
    mask[sel] = label


def _rotated_box(rng: np.random.Generator, size: int, long: tuple[float, float], short: tuple[float, float]):
    centre = rng.uniform(0, size, 2)
    dims = (rng.uniform(*long) * size, rng.uniform(*short) * size)
    return cv2.boxPoints((tuple(centre), dims, float(rng.uniform(0, 180)))).astype(np.int32), dims


def _steel_piece(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Shape and texture of one plate, beam or rebar; rust amount varies from none to full."""
    shape = np.zeros((size, size), np.uint8)
    kind = rng.choice(["plate", "beam", "rebar"], p=[0.5, 0.3, 0.2])
    if kind == "rebar":
        box, _ = _rotated_box(rng, size, (0.3, 0.8), (0.03, 0.06))
    elif kind == "beam":
        box, _ = _rotated_box(rng, size, (0.3, 0.7), (0.08, 0.16))
    else:
        box, _ = _rotated_box(rng, size, (0.15, 0.45), (0.12, 0.35))
        box = box + rng.integers(-size // 20, size // 20 + 1, box.shape).astype(np.int32)
    cv2.fillPoly(shape, [box], 1)
    bare = np.array([0.42, 0.43, 0.45]) * rng.uniform(0.7, 1.3)
    rust = np.array([0.50, 0.28, 0.16]) * rng.uniform(0.7, 1.25)
    amount = np.clip(rng.uniform(-0.3, 1.2) + 0.6 * _noise(rng, size, size, 6), 0, 1)[..., None]
    tex = bare * (1 - amount) + rust * amount
    tex = tex * (1 + 0.12 * _noise(rng, size, size, 2)[..., None] + rng.normal(0, 0.04, (size, size, 1)))
    return shape, tex


def _copper_wire(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    shape = np.zeros((size, size), np.uint8)
    start = rng.uniform(0.1, 0.9, 2) * size
    heading, points = rng.uniform(0, 2 * np.pi), [start]
    for _ in range(int(rng.integers(8, 20))):
        heading += rng.normal(0, 0.6)
        points.append(points[-1] + size * 0.05 * np.array([np.cos(heading), np.sin(heading)]))
    cv2.polylines(shape, [np.array(points, np.int32)], False, 1, thickness=int(rng.integers(2, 5)))
    colour = np.array([0.80, 0.45, 0.25]) * rng.uniform(0.8, 1.15)
    shine = 1 + 0.25 * _noise(rng, size, size, 3)[..., None]
    return shape, colour * shine


def _plastic(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    shape = np.zeros((size, size), np.uint8)
    centre, radius = rng.uniform(0.15, 0.85, 2) * size, rng.uniform(0.08, 0.16) * size
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 9))))
    radii = radius * rng.uniform(0.6, 1.4, angles.size)
    pts = centre + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], 1)
    cv2.fillPoly(shape, [pts.astype(np.int32)], 1)
    palette = np.array([[0.15, 0.35, 0.80], [0.20, 0.65, 0.25], [0.85, 0.15, 0.15], [0.92, 0.92, 0.88],
                        [0.90, 0.80, 0.15]])
    colour = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.1)
    yy, xx = np.mgrid[0:size, 0:size]
    spot = np.exp(-(((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * (radius / 3) ** 2)))
    return shape, colour * (0.85 + 0.1 * _noise(rng, size, size, 4)[..., None]) + 0.35 * spot[..., None]


def _wood(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    shape = np.zeros((size, size), np.uint8)
    box, _ = _rotated_box(rng, size, (0.2, 0.45), (0.06, 0.12))
    cv2.fillPoly(shape, [box], 1)
    edge = box[1] - box[0] if np.linalg.norm(box[1] - box[0]) > np.linalg.norm(box[2] - box[1]) else box[2] - box[1]
    angle = np.arctan2(edge[1], edge[0])
    yy, xx = np.mgrid[0:size, 0:size]
    across = -np.sin(angle) * xx + np.cos(angle) * yy
    grain = 0.5 + 0.5 * np.sin(across * rng.uniform(1.2, 2.0) + 2 * _noise(rng, size, size, 8))
    base = np.array([0.62, 0.45, 0.26]) * rng.uniform(0.75, 1.15)
    return shape, base * (0.8 + 0.25 * grain[..., None])


def _rubber(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    shape = np.zeros((size, size), np.uint8)
    centre = tuple(int(v) for v in rng.uniform(0.15, 0.85, 2) * size)
    axes = tuple(int(v) for v in rng.uniform(0.07, 0.15, 2) * size)
    angle = float(rng.uniform(0, 180))
    cv2.ellipse(shape, centre, axes, angle, 0, 360, 1, -1)
    if rng.random() < 0.5:  # a tyre or hose ring: the hole shows what lies below
        cv2.ellipse(shape, centre, (axes[0] // 2, axes[1] // 2), angle, 0, 360, 0, -1)
    colour = np.full(3, rng.uniform(0.04, 0.09))
    yy, xx = np.mgrid[0:size, 0:size]
    sheen = np.exp(-((xx - centre[0] + axes[0] / 2) ** 2 + (yy - centre[1] + axes[1] / 2) ** 2) / (2 * max(axes) ** 2))
    return shape, colour * (1 + 0.1 * _noise(rng, size, size, 2)[..., None]) + 0.12 * sheen[..., None]


def _can(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    shape = np.zeros((size, size), np.uint8)
    box, (length, width) = _rotated_box(rng, size, (0.14, 0.24), (0.08, 0.12))
    if rng.random() < 0.4:  # crushed can
        box = box + rng.integers(-3, 4, box.shape).astype(np.int32)
    cv2.fillPoly(shape, [box], 1)
    label = np.zeros((size, size), np.uint8)
    cv2.fillPoly(label, [((box - box.mean(0)) * np.array([0.55, 0.55]) + box.mean(0)).astype(np.int32)], 1)
    silver = np.array([0.80, 0.81, 0.84]) * rng.uniform(0.85, 1.1)
    band = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.6, 0.2], [0.9, 0.9, 0.9]])[rng.integers(4)]
    tex = np.where(label[..., None] > 0, band, silver) * (0.85 + 0.2 * _noise(rng, size, size, 3)[..., None])
    return shape, tex


IMPURITIES = (_copper_wire, _plastic, _wood, _rubber, _can)


def make_scene(seed: int, index: int, size: int = 128, clean_fraction: float = 0.25,
               max_impurities: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (HxWx3 uint8 RGB image, HxW uint8 class-index mask over ``SCRAP_CLASSES``)."""
    rng = sample_rng(seed, index, 0x5C4A)
    img = np.array([0.20, 0.17, 0.14]) * (1 + 0.3 * _noise(rng, size, size, 8)[..., None])
    mask = np.zeros((size, size), np.uint8)
    img = np.array(np.broadcast_to(img, (size, size, 3)), dtype=np.float64)
    layers = [(0, _steel_piece) for _ in range(int(rng.integers(14, 24)))]
    n_imp = 0 if rng.random() < clean_fraction else int(rng.integers(1, max_impurities + 1))
    layers += [(int(c) + 1, IMPURITIES[c]) for c in rng.integers(0, len(IMPURITIES), n_imp)]
    # painted bottom to top; impurities lie in the upper part of the heap, under a few steel pieces
    depth = [rng.uniform(0.5, 1.0) if label else rng.uniform(0.0, 1.0) for label, _ in layers]
    for i in np.argsort(depth, kind="stable"):
        label, draw = layers[i]
        shape, tex = draw(rng, size)
        _paint(img, mask, shape, tex, label)
    light = 1 + 0.25 * _noise(rng, size, size, 1)[..., None]
    img = img * light + rng.normal(0, 0.02, img.shape)
    img = cv2.GaussianBlur(np.clip(img, 0, 1).astype(np.float32), (3, 3), 0.6)
    return (img * 255).round().astype(np.uint8), mask


def make_scenes(seed: int, count: int, size: int = 128, clean_fraction: float = 0.25,
                offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes ``offset .. offset+count-1`` as (N,H,W,3) images and (N,H,W) masks."""
    pairs = [make_scene(seed, offset + i, size, clean_fraction) for i in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def write_scrap_anomaly(root: str | Path, n_train: int = 256, n_val: int = 64, size: int = 128,
                        seed: int = 0, clean_fraction: float = 0.25) -> Path:
    """Write ``root/classes.txt`` and ``root/{train,val}/{images,masks}/scene_NNNNN.png``."""
    from PIL import Image

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(SCRAP_CLASSES) + "\n", encoding="utf-8")
    for split, count, offset in (("train", n_train, 0), ("val", n_val, VAL_OFFSET)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = make_scene(seed, offset + i, size, clean_fraction)
            Image.fromarray(image).save(root / split / "images" / f"scene_{i:05d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"scene_{i:05d}.png")
    return root
