"""Tiles of ``clip_anomaly``: training crops and tiled inference stitched back at the working resolution.

The ViT's input size is fixed by its position grid, so an image larger than it (``data.resolution`` above
``model.image_size``, e.g. a 1600-pixel strip or KolektorSDD at 0.4x) is seen as overlapping tiles: the
model runs on every tile, each tile's class probabilities go back to their place, and overlapping pixels
take the mean (probabilities, not logits, as the flip TTA does). Training draws one crop of the tile size
per sample; a crop of an image with an anomaly holds an anomalous pixel, so balanced sampling still shows
the model defects half the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ...data.class_masks import IGNORE_INDEX


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Offsets of the tiles along one axis: stride ``tile * (1 - overlap)``, the last tile flush with the edge."""
    if size <= tile:
        return [0]
    stride = max(1, int(round(tile * (1.0 - overlap))))
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def tile_boxes(height: int, width: int, tile: Sequence[int], overlap: float) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the tiles that cover a ``height`` x ``width`` image, row by row."""
    th, tw = int(tile[0]), int(tile[1])
    if height < th or width < tw:
        raise ValueError(f"image {height}x{width} is smaller than the tile {th}x{tw}")
    return [(y, x) for y in tile_starts(height, th, overlap) for x in tile_starts(width, tw, overlap)]


def crop_tiles(x: torch.Tensor, tile: Sequence[int], overlap: float) -> torch.Tensor:
    """(B * n, ..., th, tw) tiles of ``x`` (B, ..., H, W), image-major (the n tiles of image 0 first)."""
    th, tw = int(tile[0]), int(tile[1])
    boxes = tile_boxes(x.shape[-2], x.shape[-1], tile, overlap)
    return torch.stack([x[..., y: y + th, x0: x0 + tw] for y, x0 in boxes], 1).flatten(0, 1)


def tiled_probabilities(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                        tile: Sequence[int], overlap: float = 0.25, batch_size: int = 16) -> torch.Tensor:
    """(B, K, H, W) probabilities of ``images`` (B, C, H, W) from ``predict`` on (n, C, th, tw) tiles."""
    th, tw = int(tile[0]), int(tile[1])
    b, _, h, w = images.shape
    if (h, w) == (th, tw):
        return predict(images)
    boxes = tile_boxes(h, w, tile, overlap)
    crops = crop_tiles(images, tile, overlap)
    outs = torch.cat([predict(crops[i: i + batch_size]) for i in range(0, len(crops), batch_size)])
    outs = outs.unflatten(0, (b, len(boxes)))
    total = outs.new_zeros(b, outs.shape[2], h, w)
    count = outs.new_zeros(1, 1, h, w)
    for j, (y, x) in enumerate(boxes):
        total[:, :, y: y + th, x: x + tw] += outs[:, j]
        count[:, :, y: y + th, x: x + tw] += 1
    return total / count


def random_crop(image: np.ndarray, mask: np.ndarray, tile: Sequence[int], rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A ``tile``-sized crop; when ``mask`` has an anomalous pixel (non-zero, not ignored) the crop holds one,
    at a uniformly random place inside it. Otherwise the crop is centred on a random pixel and shifted inside
    the image, so border pixels are seen a third as often as the most-seen ones; uniform offsets would show a
    border pixel only at offset 0 (1/32 as often for a 32-pixel tile), and the false alarms of KolektorSDD
    maps sat at the image borders."""
    th, tw = int(tile[0]), int(tile[1])
    h, w = mask.shape
    ys, xs = np.nonzero((mask != 0) & (mask != IGNORE_INDEX))
    if len(ys):
        k = int(rng.integers(len(ys)))
        y_lo, y_hi = max(0, ys[k] - th + 1), min(h - th, ys[k])
        x_lo, x_hi = max(0, xs[k] - tw + 1), min(w - tw, xs[k])
    else:  # a random pixel is the crop's centre, the crop then shifted inside the image
        y_lo, y_hi, x_lo, x_hi = -(th // 2), h - 1 - th // 2, -(tw // 2), w - 1 - tw // 2
    y = min(max(int(rng.integers(y_lo, y_hi + 1)), 0), h - th)
    x = min(max(int(rng.integers(x_lo, x_hi + 1)), 0), w - tw)
    return image[y: y + th, x: x + tw], mask[y: y + th, x: x + tw]
