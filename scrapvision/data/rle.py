"""Kaggle run-length encoding: "start length start length ...", 1-indexed, column-major.

Pixels are numbered top to bottom, then left to right (Fortran order), so pixel ``(row, col)`` of an
``H x W`` mask is number ``col * H + row + 1``. The vectorised codecs are what the package uses; the
``*_reference`` pair is a plain loop kept only as the oracle for tests and ``benchmarks/rle_speed.py``.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from ..errors import DataError

# tokens are split on ASCII whitespace only: any other character (a no-break space, \x1f...) makes its
# token non-numeric, so the one tokeniser both validates and parses
_TOKEN = re.compile(r"[^ \t\n\r\f\v]+")
_MAX_DIGITS = 15  # larger numbers cannot address any image and would overflow int64 arithmetic
# digits and ASCII whitespace only: such a string takes the fast path (one regex scan, NumPy's C parser)
_WELL_FORMED = re.compile(r"[0-9 \t\n\r\f\v]*")


def _transpose(array: np.ndarray) -> np.ndarray:
    """A C-contiguous transpose of a 2-D bool/uint8 array: OpenCV's blocked copy is ~10x NumPy's here,
    and this copy, not the parsing, dominated decoding 256x1600 masks."""
    return cv2.transpose(array.view(np.uint8)).view(array.dtype)


def _tokens(rle: str, image_id: str) -> np.ndarray:
    """The numbers of ``rle``. Fast path for well-formed strings (C-level checks and parsing); anything
    else takes the token-by-token path that names the offending value."""
    if _WELL_FORMED.fullmatch(rle):
        if not rle.strip():
            return np.zeros(0, dtype=np.int64)  # np.fromstring reads a blank string as [0]
        values = np.fromstring(rle, dtype=np.int64, sep=" ")  # text mode: parses in C, not deprecated
        if values.max() < 10**_MAX_DIGITS:  # larger values saturate at the int64 maximum: slow path names them
            return values
    tokens = _TOKEN.findall(rle)
    bad = next((t for t in tokens if not (t.isascii() and t.isdigit())), None)
    if bad is not None:
        raise _fail(image_id, f"non-integer value {bad[:20]!r}")
    if any(len(t) > _MAX_DIGITS for t in tokens):
        raise _fail(image_id, f"value with more than {_MAX_DIGITS} digits runs past the image")
    return np.array(tokens, dtype=np.int64)


def _fail(image_id: str, problem: str) -> DataError:
    return DataError(f"RLE of image {image_id or '<unnamed>'}: {problem}")


def rle_runs(rle: str, shape: tuple[int, int], image_id: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate ``rle`` into (0-based starts, lengths) as int64 arrays, without building a mask.

    Cheap enough to check every row of a large train.csv up front. Runs that touch (one ends where the
    next starts) are accepted; overlapping, unsorted, empty or out-of-image runs are a ``DataError``.
    """
    if not isinstance(rle, str):
        raise _fail(image_id, f"expected a string, got {type(rle).__name__}")
    values = _tokens(rle, image_id)
    if values.size % 2:
        raise _fail(image_id, f"odd number of values ({values.size}); expected start/length pairs")
    values = values.reshape(-1, 2)
    starts, lengths = values[:, 0] - 1, values[:, 1]
    _check_runs(starts, lengths, int(shape[0]) * int(shape[1]), image_id)
    return starts, lengths


def _check_runs(starts: np.ndarray, lengths: np.ndarray, n_pixels: int, image_id: str) -> None:
    def first(bad: np.ndarray) -> int:
        return int(np.flatnonzero(bad)[0])

    ends = starts + lengths
    # one pass for the common, valid case: each run starts at or after the previous end (so starts and ends
    # increase), the first start is >= 0 and the last end inside the image
    if not starts.size or (starts[0] >= 0 and ends[-1] <= n_pixels and lengths.min() >= 1
                           and bool(np.all(starts[1:] >= ends[:-1]))):
        return

    if np.any(starts < 0):
        i = first(starts < 0)
        raise _fail(image_id, f"run {i + 1} starts at {starts[i] + 1}; starts are 1-indexed (>= 1)")
    if np.any(lengths < 1):
        i = first(lengths < 1)
        raise _fail(image_id, f"run {i + 1} has length {lengths[i]}; lengths must be >= 1")
    ends = starts + lengths
    if np.any(ends > n_pixels):
        i = first(ends > n_pixels)
        raise _fail(image_id, f"run {i + 1} ({starts[i] + 1} {lengths[i]}) runs past the image's {n_pixels} pixels")
    if np.any(starts[1:] < starts[:-1]):
        i = first(starts[1:] < starts[:-1]) + 1
        raise _fail(image_id, f"runs not sorted: run {i + 1} starts at {starts[i] + 1}, before run {i}")
    if np.any(starts[1:] < ends[:-1]):
        i = first(starts[1:] < ends[:-1]) + 1
        raise _fail(image_id, f"run {i + 1} (start {starts[i] + 1}) overlaps run {i} (ends at {ends[i - 1]})")


def rle_decode(rle: str, shape: tuple[int, int], image_id: str = "") -> np.ndarray:
    """Decode to a C-contiguous boolean ``shape`` (H, W) mask; "" (or blanks) gives an empty mask."""
    height, width = int(shape[0]), int(shape[1])
    starts, lengths = rle_runs(rle, (height, width), image_id)
    # The flat mask alternates background gaps and runs: expand (value, count) pairs in one np.repeat.
    ends = starts + lengths
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[0:-1:2] = starts - np.concatenate(([0], ends[:-1]))
    counts[1::2] = lengths
    counts[-1] = height * width - (ends[-1] if ends.size else 0)
    values = np.zeros(counts.size, dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return _transpose(flat.reshape(width, height))


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (non-zero = foreground) as a Kaggle RLE string; an empty mask gives ""."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D mask, got shape {mask.shape}")
    flat = _transpose(mask.astype(bool, copy=False)).ravel()  # Fortran order, via the fast transpose
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # alternating run starts and ends (0-based)
    if edges.size == 0:
        return ""
    edges[1::2] -= edges[0::2]  # ends -> lengths
    edges[0::2] += 1  # 0-based -> 1-based starts
    return " ".join(map(str, edges.tolist()))


def rle_encode_reference(mask: np.ndarray) -> str:
    """Plain-Python pixel loop: the oracle for tests and the baseline of the speed benchmark."""
    height, width = len(mask), len(mask[0])
    runs: list[int] = []
    run_start, run_length = 0, 0
    number = 0
    for col in range(width):
        for row in range(height):
            number += 1
            if mask[row][col]:
                if run_length == 0:
                    run_start = number
                run_length += 1
            elif run_length:
                runs += [run_start, run_length]
                run_length = 0
    if run_length:
        runs += [run_start, run_length]
    return " ".join(str(v) for v in runs)


def rle_decode_reference(rle: str, shape: tuple[int, int], image_id: str = "") -> np.ndarray:
    """Plain-Python run loop with the same validation rules as :func:`rle_decode`."""
    height, width = shape
    tokens = [t for t in re.split(r"[ \t\n\r\f\v]", rle) if t]  # ASCII whitespace only, like rle_runs
    if len(tokens) % 2:
        raise _fail(image_id, f"odd number of values ({len(tokens)}); expected start/length pairs")
    flat = [False] * (height * width)
    previous_end = 0
    for i in range(0, len(tokens), 2):
        if not all(t.isascii() and t.isdigit() for t in tokens[i : i + 2]):
            raise _fail(image_id, f"non-integer value in run {i // 2 + 1}")
        start, length = int(tokens[i]), int(tokens[i + 1])
        if start < 1 or length < 1 or start - 1 < previous_end or start - 1 + length > len(flat):
            raise _fail(image_id, f"run {i // 2 + 1} ({start} {length}) is invalid")
        for number in range(start - 1, start - 1 + length):
            flat[number] = True
        previous_end = start - 1 + length
    mask = np.zeros((height, width), dtype=bool)
    for number, value in enumerate(flat):
        if value:
            mask[number % height, number // height] = True
    return mask
