"""Deterministic synthetic scrap: grade images for classification and a yard video for ``prepare``.

Each grade has its own shapes (thick beams, shredder fragments, curly turnings, flat plates, rebar,
bales, cans, cast-iron briquettes), drawn with OpenCV on a noisy container floor with random colour and
lighting, so the class is in the shapes and textures, as in real photos. The video shows scrap piles
on a smooth concrete floor; a yellow grapple on a cable crosses the scene during known frames.
Everything is a pure function of ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ...checkpoint import atomic_write
from ...errors import DataError

GRADES = ("heavy_melting", "shredded", "turnings", "plate", "rebar", "bales", "tin_cans", "cast_iron")
PILE_GRADES = ("heavy_melting", "shredded", "rebar", "tin_cans", "cast_iron")  # textured when piled
RUST = np.array([[150, 80, 40], [120, 60, 35], [170, 100, 55], [95, 55, 40]], dtype=np.float32)
STEEL = np.array([[150, 155, 160], [120, 125, 135], [180, 182, 185], [95, 100, 110]], dtype=np.float32)


def _color(rng: np.random.Generator, palette: np.ndarray, spread: float = 18.0) -> tuple[float, ...]:
    c = palette[rng.integers(len(palette))] + rng.normal(0, spread) + rng.normal(0, spread / 4, 3)
    return tuple(float(v) for v in np.clip(c, 0, 255))


def _pt(rng: np.random.Generator, s: int) -> tuple[int, int]:
    return int(rng.integers(0, s)), int(rng.integers(0, s))


def _heavy_melting(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    for _ in range(rng.integers(6, 12)):
        t = max(1, int(s * rng.uniform(0.04, 0.08)))
        cv2.line(img, _pt(rng, s), _pt(rng, s), _color(rng, RUST), t + 2, cv2.LINE_AA)
        cv2.line(img, _pt(rng, s), _pt(rng, s), _color(rng, RUST * 0.7), t, cv2.LINE_AA)


def _shredded(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    for _ in range(rng.integers(60, 110)):
        cx, cy = _pt(rng, s)
        r = s * rng.uniform(0.03, 0.06)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 7)))
        radii = r * rng.uniform(0.5, 1.2, len(angles))
        poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(img, [poly], _color(rng, STEEL, 25), cv2.LINE_AA)


def _turnings(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    for _ in range(rng.integers(25, 45)):
        axes = (int(s * rng.uniform(0.03, 0.12)), int(s * rng.uniform(0.02, 0.08)))
        start = float(rng.uniform(0, 360))
        cv2.ellipse(img, _pt(rng, s), axes, float(rng.uniform(0, 180)), start, start + rng.uniform(180, 600),
                    _color(rng, STEEL[[0, 2]], 12), 1, cv2.LINE_AA)


def _plate(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    for _ in range(rng.integers(3, 6)):
        cx, cy = _pt(rng, s)
        r = s * rng.uniform(0.2, 0.35)
        angles = np.sort(rng.uniform(0, 2 * np.pi, 4))
        poly = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).astype(np.int32)
        palette = RUST if rng.random() < 0.5 else STEEL
        cv2.fillPoly(img, [poly], _color(rng, palette, 10), cv2.LINE_AA)
        cv2.polylines(img, [poly], True, _color(rng, palette * 0.6, 5), 2, cv2.LINE_AA)


def _rebar(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    base = rng.uniform(0, np.pi)
    for _ in range(rng.integers(15, 30)):
        a = base + rng.normal(0, 0.15)
        cx, cy = _pt(rng, s)
        d = s * rng.uniform(0.4, 0.8)
        p1 = (int(cx - d * np.cos(a)), int(cy - d * np.sin(a)))
        p2 = (int(cx + d * np.cos(a)), int(cy + d * np.sin(a)))
        cv2.line(img, p1, p2, _color(rng, RUST * 0.8, 12), int(rng.integers(2, 4)), cv2.LINE_AA)


def _bales(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    for _ in range(rng.integers(1, 3)):
        x0, y0 = int(s * rng.uniform(0, 0.4)), int(s * rng.uniform(0, 0.4))
        w, h = int(s * rng.uniform(0.45, 0.6)), int(s * rng.uniform(0.45, 0.6))
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), _color(rng, STEEL * 0.8), -1)
        for _ in range(int(w * h / 12)):
            px, py = x0 + int(rng.integers(0, w)), y0 + int(rng.integers(0, h))
            dx, dy = rng.integers(-4, 5, 2)
            palette = STEEL if rng.random() < 0.6 else RUST
            cv2.line(img, (px, py), (int(px + dx), int(py + dy)), _color(rng, palette, 30), 1)
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), (40, 40, 45), 2)


def _tin_cans(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    bright = np.array([[200, 40, 40], [40, 90, 200], [230, 200, 60], [200, 200, 205]], dtype=np.float32)
    for _ in range(rng.integers(20, 40)):
        axes = (int(s * rng.uniform(0.03, 0.06)), int(s * rng.uniform(0.05, 0.09)))
        center = _pt(rng, s)
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(img, center, axes, angle, 0, 360, _color(rng, bright, 25), -1, cv2.LINE_AA)
        cv2.ellipse(img, center, (axes[0], axes[0]), angle, 0, 360, _color(rng, STEEL[[2]], 8), 1, cv2.LINE_AA)


def _cast_iron(img: np.ndarray, rng: np.random.Generator, s: int) -> None:
    dark = np.array([[60, 60, 65], [75, 70, 68], [50, 52, 58]], dtype=np.float32)
    for _ in range(rng.integers(150, 260)):
        cv2.circle(img, _pt(rng, s), int(rng.integers(2, max(3, s // 24))), _color(rng, dark, 10), -1,
                   cv2.LINE_AA)


DRAW: dict[str, Callable[[np.ndarray, np.random.Generator, int], None]] = {
    "heavy_melting": _heavy_melting, "shredded": _shredded, "turnings": _turnings, "plate": _plate,
    "rebar": _rebar, "bales": _bales, "tin_cans": _tin_cans, "cast_iron": _cast_iron,
}


def _floor(rng: np.random.Generator, shape: tuple[int, int], texture: float) -> np.ndarray:
    h, w = shape
    base = np.array([90, 85, 80], dtype=np.float32) + rng.normal(0, 15) + rng.normal(0, 4, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 + 0.25 * rng.uniform(-1, 1) * (xx / w - 0.5) + 0.25 * rng.uniform(-1, 1) * (yy / h - 0.5)
    img = base[None, None, :] * light[..., None]
    return img + rng.normal(0, texture, (h, w, 3)).astype(np.float32)


def render_grade(grade: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image of ``grade`` (a name in GRADES)."""
    img = _floor(rng, (size, size), texture=8.0)
    DRAW[grade](img, rng, size)
    img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 4, img.shape)  # exposure and sensor noise
    return np.clip(img, 0, 255).astype(np.uint8)


def grade_names(classes: int) -> list[str]:
    if not 2 <= classes <= len(GRADES):
        raise DataError(f"synthetic scrap has 2..{len(GRADES)} grades, not {classes}")
    return list(GRADES[:classes])


def generate_images(per_class: int, size: int = 96, seed: int = 0,
                    classes: int = 6) -> tuple[list[np.ndarray], list[int], list[str]]:
    """``per_class`` images of each of the first ``classes`` grades: (images, labels, class names)."""
    names = grade_names(classes)
    images, labels = [], []
    for c, name in enumerate(names):
        for i in range(per_class):
            images.append(render_grade(name, size, np.random.default_rng([seed, c, i])))
            labels.append(c)
    return images, labels, names


def write_scrap_grades(out_dir: str | Path, per_class: int = 8, size: int = 96, seed: int = 0,
                       classes: int = 6) -> Path:
    """Write an ImageFolder (``out/<grade>/<grade>_NNN.png``) plus ``labels.csv`` (image,class)."""
    out = Path(out_dir)
    images, labels, names = generate_images(per_class, size, seed, classes)
    rows = []
    for i, (image, label) in enumerate(zip(images, labels)):
        rel = Path(names[label]) / f"{names[label]}_{i:04d}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / rel), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows.append(f"{rel.as_posix()},{names[label]}\n")
    with atomic_write(out / "labels.csv", "w") as handle:
        handle.write("image,class\n")
        handle.writelines(rows)
    return out


# ---------------------------------------------------------------------------- yard video
def render_scene(shape: tuple[int, int] = (120, 160), piles: int = 3,
                 seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Scrap piles on smooth concrete: (RGB image, one (x, y, w, h) box per pile, left to right)."""
    rng = np.random.default_rng([seed, 99])
    h, w = shape
    scene = _floor(rng, shape, texture=1.5) + 60  # light, nearly texture-free concrete
    boxes = []
    cell = w // piles
    for k in range(piles):
        grade = PILE_GRADES[int(rng.integers(len(PILE_GRADES)))]
        texture = _floor(rng, shape, texture=8.0)
        DRAW[grade](texture, rng, max(h, w))
        cx, cy = int(cell * (k + 0.5)), int(h * rng.uniform(0.4, 0.6))
        ax, ay = int(cell * rng.uniform(0.3, 0.4)), int(h * rng.uniform(0.2, 0.3))
        mask = np.zeros(shape, np.uint8)
        cv2.ellipse(mask, (cx, cy), (ax, ay), float(rng.uniform(-20, 20)), 0, 360, 1, -1)
        scene[mask > 0] = texture[mask > 0] * 0.8
        x, y, bw, bh = cv2.boundingRect(mask)
        boxes.append((x, y, bw, bh))
    return np.clip(scene, 0, 255).astype(np.uint8), boxes


def _draw_grapple(frame: np.ndarray, x: int) -> None:
    """A yellow two-jaw grapple hanging from a cable, centred at column ``x``."""
    h = frame.shape[0]
    cv2.line(frame, (x, 0), (x, int(h * 0.35)), (30, 30, 30), 2)
    top, bottom, half = int(h * 0.35), int(h * 0.7), int(h * 0.18)
    body = np.array([[x - half, top], [x + half, top], [x + half // 3, bottom], [x - half // 3, bottom]], np.int32)
    cv2.fillPoly(frame, [body], (220, 180, 20))
    cv2.polylines(frame, [body], True, (60, 50, 10), 2)


def render_video_frames(frames: int = 60, shape: tuple[int, int] = (120, 160), moving: tuple[int, int] = (20, 40),
                        seed: int = 0) -> tuple[list[np.ndarray], list[tuple[int, int, int, int]], list[bool]]:
    """RGB frames of a static scene that a grapple crosses during frames ``moving[0] .. moving[1]-1``
    (entering at the left edge, leaving at the right).

    Returns (frames, pile boxes, per-frame "grapple in view" truth).
    """
    scene, boxes = render_scene(shape, seed=seed)
    rng = np.random.default_rng([seed, 7])
    start, stop = moving
    width = shape[1]
    out, truth = [], []
    for t in range(frames):
        frame = scene.astype(np.float32).copy()
        visible = False
        if start <= t < stop:
            x = int(-0.2 * width + 1.4 * width * (t - start) / max(1, stop - start - 1))
            _draw_grapple(frame, x)
            visible = bool((frame != scene).any())  # near the edges it may still be out of view
        frame += rng.normal(0, 1.5, frame.shape)  # sensor noise: a static scene is never bit-identical
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
        truth.append(visible)
    return out, boxes, truth


def write_scrap_video(path: str | Path, frames: int = 60, fps: float = 10.0, shape: tuple[int, int] = (120, 160),
                      moving: tuple[int, int] = (20, 40), seed: int = 0) -> dict:
    """Write the synthetic yard video as MJPG AVI; return its ground truth (frames with the grapple in
    view, pile boxes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb, boxes, truth = render_video_frames(frames, shape, moving, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise DataError(f"video {path}: OpenCV cannot write MJPG AVI here")
    try:
        for frame in rgb:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return {"path": str(path), "frames": frames, "fps": fps, "boxes": boxes,
            "moving_frames": [t for t, v in enumerate(truth) if v]}
