"""Yard video -> still frames without moving objects -> one crop per scrap instance (an ImageFolder).

1. Motion: OpenCV MOG2 background subtraction (``mog2``) or frame differencing (``diff``) scores every
   frame by its fraction of moving pixels. A frame is *still* when neither it nor any frame within
   ``settle`` frames of it moves, so a grapple entering or leaving never leaks into a kept frame.
2. Of each run of still frames one frame every ``gap`` frames is kept (near-duplicates add nothing).
3. Instances: Segment Anything's automatic mask generator when the ``segment-anything`` package and a
   local checkpoint are given, else a classical OpenCV segmentation (texture + colour against the
   smooth floor, then distance-transform watershed to split touching piles).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..checkpoint import atomic_write, load_state_dict_file
from ..errors import CheckpointError, DataError, ScrapvisionError, first_line

Instance = tuple[np.ndarray, tuple[int, int, int, int]]  # (boolean mask, (x, y, w, h))
Segmenter = Callable[[np.ndarray], list[Instance]]


# ---------------------------------------------------------------------------- frames and motion
def iter_frames(path: str | Path, max_frames: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame) of a video file; an unreadable file is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"video {path}: not found")
    cap = cv2.VideoCapture(str(path))
    try:
        ok, frame = cap.read()
        if not ok:
            raise DataError(f"video {path}: OpenCV cannot decode it (not a video, or an unsupported codec)")
        index = 0
        while ok and (max_frames <= 0 or index < max_frames):
            yield index, frame
            index += 1
            ok, frame = cap.read()
    finally:
        cap.release()


def video_fps(path: str | Path) -> float:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return float(fps) if fps and np.isfinite(fps) and fps > 0 else 25.0


def motion_scores(frames: Iterator[tuple[int, np.ndarray]], method: str = "mog2",
                  diff_threshold: int = 25) -> list[float]:
    """Fraction of pixels that move in each frame (after a 3x3 opening that removes sensor noise)."""
    if method not in ("mog2", "diff"):
        raise ScrapvisionError(f"motion method {method!r}: expected 'mog2' or 'diff'")
    subtractor = cv2.createBackgroundSubtractorMOG2(history=200, varThreshold=25, detectShadows=False)
    kernel = np.ones((3, 3), np.uint8)
    scores, previous = [], None
    for index, frame in frames:
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), (5, 5), 0)
        if method == "mog2":
            moving = subtractor.apply(gray)
            if index == 0:  # the model has seen nothing yet: the first frame is its background
                moving[:] = 0
        else:
            moving = np.zeros_like(gray) if previous is None else cv2.absdiff(gray, previous)
            moving = np.where(moving > diff_threshold, 255, 0).astype(np.uint8)
            previous = gray
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, kernel)
        scores.append(float(np.count_nonzero(moving)) / moving.size)
    return scores


def still_mask(scores: list[float], threshold: float, settle: int) -> list[bool]:
    """A frame is still when no frame within ``settle`` frames of it scores above ``threshold``."""
    moving = np.asarray(scores) > threshold
    near = np.convolve(moving.astype(int), np.ones(2 * settle + 1, int), mode="same") > 0
    return (~near).tolist()


def pick_stills(still: list[bool], gap: int) -> list[int]:
    """The first frame of each still run, then one every ``gap`` frames inside the run."""
    kept, last = [], None
    for i, ok in enumerate(still):
        if not ok:
            last = None
            continue
        if last is None or i - last >= max(1, gap):
            kept.append(i)
            last = i
    return kept


# ---------------------------------------------------------------------------- instance segmentation
def _otsu_level(values: np.ndarray) -> float:
    """Otsu's threshold of a float map, in the map's own units."""
    low, high = float(values.min()), float(values.max())
    scaled = cv2.normalize(values, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    level, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return low + level / 255 * (high - low)


def opencv_instances(rgb: np.ndarray) -> list[Instance]:
    """Classical fallback: scrap is textured or differs in colour from the smooth floor; touching piles
    are split by a watershed seeded at the cores of the distance transform."""
    h, w = rgb.shape[:2]
    k = max(3, (min(h, w) // 30) | 1)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean, sq = cv2.blur(gray, (k, k)), cv2.blur(gray * gray, (k, k))
    texture = np.sqrt(np.maximum(sq - mean * mean, 0))
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (k, k), 0), cv2.COLOR_RGB2LAB).astype(np.float32)
    smooth = texture <= np.percentile(texture, 30)
    colour = np.linalg.norm(lab - np.median(lab[smooth], axis=0), axis=2)
    # Otsu alone splits a high-contrast pile in two; anything clearly off the floor's own spread is scrap
    floor_spread = float(np.percentile(colour[smooth], 90))
    colour_level = min(_otsu_level(colour), max(8.0, 4 * floor_spread))
    fg = ((texture > _otsu_level(texture)) | (colour > colour_level)).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    fg = cv2.morphologyEx(cv2.morphologyEx(fg, cv2.MORPH_CLOSE, kernel), cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    fg = cv2.drawContours(np.zeros_like(fg), contours, -1, 1, -1)  # fill holes
    distance = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
    count, components = cv2.connectedComponents(fg)
    cores = np.zeros_like(fg)
    for c in range(1, count):
        part = components == c
        cores[part & (distance >= 0.5 * distance[part].max())] = 1
    n_markers, markers = cv2.connectedComponents(cores)
    markers = markers + 1  # 1 = sure background
    markers[(fg > 0) & (cores == 0)] = 0  # unknown: the watershed decides
    markers = cv2.watershed(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), markers.astype(np.int32))
    instances = []
    for label in range(2, n_markers + 1):
        mask = (markers == label) & (fg > 0)
        if mask.any():
            instances.append((mask, tuple(int(v) for v in cv2.boundingRect(mask.astype(np.uint8)))))
    return instances


class SamSegmenter:
    """Segment Anything automatic masks, weights from a local checkpoint (loaded without pickle)."""

    def __init__(self, checkpoint: str | Path, model_type: str = "auto", device: str = "cpu",
                 points_per_side: int = 16) -> None:
        try:
            from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
        except ImportError:
            raise ScrapvisionError("--sam-checkpoint needs the segment-anything package "
                                   "(pip install 'scrapvision[sam]'), or leave it out for the OpenCV fallback") from None
        checkpoint = Path(checkpoint)
        if model_type == "auto":
            found = [t for t in ("vit_h", "vit_l", "vit_b") if t in checkpoint.name]
            if not found:
                raise ScrapvisionError(f"SAM checkpoint {checkpoint.name}: cannot tell vit_b/vit_l/vit_h from "
                                       "its name; give --sam-model-type")
            model_type = found[0]
        if model_type not in sam_model_registry:
            raise ScrapvisionError(f"SAM model type {model_type!r}: expected vit_b, vit_l or vit_h")
        state = load_state_dict_file(checkpoint)
        sam = sam_model_registry[model_type]()
        try:
            sam.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"SAM checkpoint {checkpoint}: does not fit {model_type} "
                                  f"({first_line(exc)})") from None
        self.generator = SamAutomaticMaskGenerator(sam.to(device).eval(), points_per_side=points_per_side)

    def __call__(self, rgb: np.ndarray) -> list[Instance]:
        masks = self.generator.generate(rgb)
        return [(m["segmentation"].astype(bool), tuple(int(v) for v in m["bbox"])) for m in masks]


def select_instances(instances: list[Instance], image_area: int, min_area: float,
                     max_area: float) -> list[Instance]:
    """Keep masks covering ``min_area``..``max_area`` of the frame, largest first, dropping masks that lie
    mostly (>= 80 %) inside one already kept (SAM returns parts of a pile as well as the pile)."""
    sized = [(m, b) for m, b in instances if min_area <= m.sum() / image_area <= max_area]
    sized.sort(key=lambda item: -int(item[0].sum()))
    kept: list[Instance] = []
    for mask, box in sized:
        area = mask.sum()
        if all((mask & other).sum() < 0.8 * area for other, _ in kept):
            kept.append((mask, box))
    return kept


def crop_box(rgb: np.ndarray, box: tuple[int, int, int, int], pad: float = 0.05) -> np.ndarray:
    x, y, w, h = box
    px, py = int(w * pad), int(h * pad)
    return rgb[max(0, y - py): y + h + py, max(0, x - px): x + w + px]


# ---------------------------------------------------------------------------- the pipeline
@dataclass(frozen=True)
class PrepareOptions:
    label: str = "unsorted"  # class folder the crops go to (one video usually shows one grade)
    motion: str = "mog2"
    motion_threshold: float = 0.005  # fraction of moving pixels that makes a frame "moving"
    settle: int = 3  # frames dropped on each side of a moving frame
    gap: int = 0  # frames between two kept stills; 0 = one per second of video
    min_area: float = 0.01  # instance area as a fraction of the frame
    max_area: float = 0.6
    max_frames: int = 0  # 0 = the whole video


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise DataError(f"{path}: could not be written")


def prepare_video(video: str | Path, out: str | Path, options: PrepareOptions,
                  segmenter: Segmenter | None = None, segmenter_name: str = "opencv") -> dict:
    """Run the pipeline; write ``out/frames/``, ``out/crops/<label>/`` and ``out/prepare_report.json``."""
    video, out = Path(video), Path(out)
    segment = segmenter or opencv_instances
    scores = motion_scores(iter_frames(video, options.max_frames), options.motion)
    fps = video_fps(video)
    still = still_mask(scores, options.motion_threshold, options.settle)
    kept = set(pick_stills(still, options.gap or max(1, round(fps))))
    crops, frames_written = [], []
    for index, frame in iter_frames(video, options.max_frames):
        if index not in kept:
            continue
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        name = f"{video.stem}_f{index:06d}"
        _write_png(out / "frames" / f"{name}.png", rgb)
        frames_written.append(index)
        chosen = select_instances(segment(rgb), rgb.shape[0] * rgb.shape[1], options.min_area, options.max_area)
        for k, (mask, box) in enumerate(chosen):
            path = out / "crops" / options.label / f"{name}_i{k:02d}.png"
            _write_png(path, crop_box(rgb, box))
            crops.append({"frame": index, "box_xywh": list(box), "area": round(float(mask.mean()), 4),
                          "file": str(path.relative_to(out))})
    report = {
        "video": str(video), "fps": fps, "frames": len(scores), "motion": options.motion,
        "segmenter": segmenter_name, "moving": int(sum(s > options.motion_threshold for s in scores)),
        "dropped": int(len(scores) - sum(still)), "still": int(sum(still)), "kept_frames": frames_written,
        "crops": crops, "options": options.__dict__, "motion_scores": [round(s, 5) for s in scores],
    }
    with atomic_write(out / "prepare_report.json", "w") as handle:
        json.dump(report, handle, indent=1)
    return report
