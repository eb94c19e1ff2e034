"""Unlabeled images for self-supervised pretraining: one or more folders read recursively, and a dataset
that cuts two independently augmented views (random resized crops) from each image.

Images are decoded once and kept in memory with their shorter side at ``keep_size`` (never enlarged), so
a 12-megapixel photo costs a few hundred kilobytes and an epoch never re-decodes JPEGs; the crops are
cut from that copy. Unreadable files follow scrap_cls's policy (``skip`` with a count, or ``fail``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from .classification import load_images, to_tensor
from .images import list_images, sample_rng, seed_transforms


def split_roots(root: str) -> list[Path]:
    """``"DIR1,DIR2"`` -> the folders (``--data`` takes several, comma-separated)."""
    folders = [Path(part.strip()) for part in root.split(",") if part.strip()]
    if not folders:
        raise DataError(f"data.root {root!r}: names no folder")
    return folders


def load_unlabeled(root: str, policy: str, keep_size: int, what: str = "pretrain") -> list[np.ndarray]:
    """Every readable image under the folders of ``root``; a folder without one is a DataError."""
    images: list[np.ndarray] = []
    skipped: list[str] = []
    for folder in split_roots(root):
        files = list_images(folder)
        found, _, bad = load_images(files, policy, keep_size)
        if not found:
            raise DataError(f"folder {folder}: none of its {len(files)} image file(s) is readable "
                            f"(first: {bad[0]})")
        images += found
        skipped += bad
    if skipped:
        print(f"{what}: skipped {len(skipped)} unreadable image(s) (data.unreadable=skip):", file=sys.stderr)
        for message in skipped:
            print(f"  {message}", file=sys.stderr)
    return images


def view_transform(crop_size: int, min_scale: float, color_strength: float = 1.0) -> A.Compose:
    """SimCLR's augmentations: random resized crop, flip, colour jitter, grey, blur. ``color_strength`` scales
    the jitter and the grey probability (1 = the strength used so far; 0 = no colour change), since the views
    teach invariance to whatever differs between them, and colour is the signal where copper meets brass."""
    s, c = crop_size, color_strength
    colour = [A.ColorJitter(brightness=0.4 * c, contrast=0.4 * c, saturation=0.4 * c, hue=0.1 * c, p=0.8),
              A.ToGray(p=0.2 * c)] if c > 0 else []
    return A.Compose([
        A.RandomResizedCrop((s, s), scale=(min_scale, 1.0), ratio=(0.75, 1.333)),
        A.HorizontalFlip(),
        *colour,
        A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.1, 2.0), p=0.5),
        A.Normalize(),
    ])


class TwoViews(Dataset):
    """Two augmented views of each image, seeded by (seed, epoch, index, view): the same batch after a
    resume, under DDP and with workers. ``fixed`` keeps epoch 0 (a comparable validation loss)."""

    def __init__(self, images: Sequence[np.ndarray], crop_size: int, min_scale: float, seed: int = 0,
                 fixed: bool = False, color_strength: float = 1.0) -> None:
        self.images = list(images)
        self.transform = view_transform(crop_size, min_scale, color_strength)
        self.seed, self.epoch, self.fixed = seed, 0, fixed

    def set_epoch(self, epoch: int) -> None:
        if not self.fixed:
            self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def view(self, index: int, which: int):
        seed_transforms(self.transform, sample_rng(self.seed, self.epoch, index, which))
        return to_tensor(self.transform(image=self.images[index])["image"])

    def __getitem__(self, index: int) -> dict:
        return {"view1": self.view(index, 1), "view2": self.view(index, 2)}


class MaskedViews(TwoViews):
    """One augmented view of each image and a grid of masked units (SimMIM's input): ``mask`` is a
    ``g x g`` bool grid (g = crop_size / mask_unit) with round(ratio * g * g) units set, seeded like the views."""

    def __init__(self, images: Sequence[np.ndarray], crop_size: int, min_scale: float, mask_unit: int,
                 mask_ratio: float, seed: int = 0, fixed: bool = False, color_strength: float = 1.0) -> None:
        super().__init__(images, crop_size, min_scale, seed, fixed, color_strength)
        self.grid = crop_size // mask_unit
        self.masked = max(1, round(mask_ratio * self.grid ** 2))

    def __getitem__(self, index: int) -> dict:
        rng = sample_rng(self.seed, self.epoch, index, 3)
        mask = np.zeros(self.grid ** 2, dtype=bool)
        mask[rng.permutation(self.grid ** 2)[: self.masked]] = True
        return {"view1": self.view(index, 1), "mask": torch.from_numpy(mask.reshape(self.grid, self.grid))}
