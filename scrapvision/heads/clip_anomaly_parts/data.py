"""Data sets of the ``clip_anomaly`` head: synthetic scrap scenes, class-mask folders, KolektorSDD.

Every sample is resized to the model's fixed input size (the ViT position grid), so metrics are
computed at that resolution. Training flips (and 90-degree turns of square inputs) are drawn from
``sample_rng(seed, epoch, index)`` only, so runs are reproducible across resume and DDP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...data.class_masks import IGNORE_INDEX, ClassMaskItem, list_class_mask_items, read_class_list, read_item
from ...data.images import read_image, sample_rng
from ...data.inference import ImageFiles
from ...data.kolektor import item_group, list_kolektor, read_kolektor_mask
from ...data.splits import ALL_TEST, fold_split
from ...data.synthetic.scrap_anomaly import SCRAP_CLASSES, VAL_OFFSET, make_scene
from ...errors import ConfigError, DataError
from .tiles import random_crop

# open_clip.constants.OPENAI_DATASET_MEAN / _STD (copied to keep this module importable without open_clip)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
KOLEKTOR_CLASSES = ("normal", "defect")

Loader = Callable[[int], tuple[np.ndarray, np.ndarray]]


def resize_pair(image: np.ndarray, mask: np.ndarray, size: Sequence[int], mask_area: float = 0.5):
    """Resize to (H, W): area-averaged image; per-class area vote for the mask (a pixel takes the class
    with the largest share; a non-zero class wins if it covers >= ``mask_area`` of the pixel)."""
    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return image, mask
    img = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    labels = [v for v in np.unique(mask) if v != 0]
    out = np.zeros((h, w), np.uint8)
    best = np.full((h, w), mask_area - 1e-6, np.float32)
    for v in labels:
        share = cv2.resize((mask == v).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        take = share > best
        out[take], best[take] = v, share[take]
    return img, out


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xHxW float, CLIP-normalised."""
    x = (image.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def dilate_anomalies(mask: np.ndarray, size: int) -> np.ndarray:
    """``mask`` with each anomaly class grown by a ``size`` x ``size`` square into normal pixels (class 0);
    ignored pixels (255) neither grow nor are overwritten. Where two classes meet, the higher index wins."""
    if size <= 1:
        return mask
    labels = np.where(mask == IGNORE_INDEX, 0, mask).astype(np.uint8)
    grown = cv2.dilate(labels, np.ones((size, size), np.uint8))
    return np.where(mask == 0, grown, mask).astype(mask.dtype)


class SegDataset(Dataset):
    """(image, class-index mask) pairs from ``loader(i)``, resized, cached, optionally augmented; with ``crop``
    (H, W) smaller than ``size``, one random crop per draw (:func:`.tiles.random_crop`); with ``dilate`` > 1,
    anomalies grown by :func:`dilate_anomalies` (training sets: evaluation scores the labels as drawn)."""

    def __init__(self, loader: Loader, length: int, size: Sequence[int], names: Sequence[str],
                 augment: bool = False, seed: int = 0, cache: bool = True,
                 flags: Sequence[bool] | None = None, crop: Sequence[int] | None = None) -> None:
        self.loader, self.length, self.size = loader, length, tuple(size)
        self.crop = tuple(crop) if crop is not None and tuple(crop) != self.size else None
        self.dilate = 1
        self.names, self.augment, self.seed, self.cache = list(names), augment, seed, cache
        self.flags = list(flags) if flags is not None else None
        self.epoch = 0
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def anomalous(self) -> list[bool]:
        """Whether each sample holds any non-normal pixel (from the reader when it knows, else the masks)."""
        if self.flags is None:
            self.flags = [bool((self.raw(i)[1] != 0).any()) for i in range(self.length)]
        return self.flags

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Resized, un-augmented (image, mask)."""
        if index not in self._cache:
            pair = resize_pair(*self.loader(index), self.size)
            if not self.cache:
                return pair
            self._cache[index] = pair
        return self._cache[index]

    def __getitem__(self, index: int) -> dict:
        image, mask = self.raw(index)
        mask = dilate_anomalies(mask, self.dilate)
        rng = sample_rng(self.seed, self.epoch, index) if self.augment or self.crop else None
        if self.augment:
            if rng.random() < 0.5:
                image, mask = image[:, ::-1], mask[:, ::-1]
            if rng.random() < 0.5:
                image, mask = image[::-1], mask[::-1]
            if image.shape[0] == image.shape[1]:
                k = int(rng.integers(4))
                image, mask = np.rot90(image, k), np.rot90(mask, k)
        if self.crop:
            image, mask = random_crop(image, mask, self.crop, rng)
        return {"image": to_tensor(image), "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
                "index": index}


def synthetic_sets(size: Sequence[int], n_train: int, n_val: int, seed: int, clean_fraction: float,
                   aug_seed: int) -> tuple[SegDataset, SegDataset, tuple[str, ...]]:
    side = int(max(size))

    def loader(offset: int) -> Loader:
        return lambda i: make_scene(seed, offset + i, side, clean_fraction)

    names = [f"scene_{i:05d}" for i in range(max(n_train, n_val))]
    train = SegDataset(loader(0), n_train, size, names[:n_train], augment=True, seed=aug_seed)
    val = SegDataset(loader(VAL_OFFSET), n_val, size, names[:n_val])
    return train, val, SCRAP_CLASSES


def class_mask_sets(root: str, size: Sequence[int], val_fraction: float, split_seed: int,
                    aug_seed: int) -> tuple[SegDataset, SegDataset, tuple[str, ...]]:
    classes = read_class_list(root)
    train_items, val_items = list_class_mask_items(root, val_fraction, split_seed)

    def make(items: list[ClassMaskItem], augment: bool) -> SegDataset:
        return SegDataset(lambda i: read_item(items[i], len(classes)), len(items), size,
                          [it.name for it in items], augment=augment, seed=aug_seed)

    return make(train_items, True), make(val_items, False), classes


def kolektor_sets(root: str, size: Sequence[int], fold: int, n_folds: int, val_fraction: float, split_seed: int,
                  aug_seed: int) -> tuple[SegDataset, SegDataset, SegDataset, tuple[str, ...]]:
    """(train, validation, test, class names): fold ``fold`` of the KolektorSDD folds (segdec's, by item,
    duplicates joined) is the test set; validation is carved from the training folds, never the test fold."""
    if not (0 <= fold < n_folds or fold == ALL_TEST):
        raise ConfigError(f"config key 'data.fold': {fold} is not in 0..{n_folds - 1} (or -1: every image as the "
                          "test set, for eval)")
    items = list_kolektor(root)
    parts = fold_split([it.defective for it in items], [item_group(it.item) for it in items], n_folds, fold,
                       val_fraction, split_seed)

    def make(ids: list[int], augment: bool) -> SegDataset:
        chosen = [items[i] for i in ids]

        def load(i: int) -> tuple[np.ndarray, np.ndarray]:
            return read_image(chosen[i].image), read_kolektor_mask(chosen[i].mask).astype(np.uint8)

        return SegDataset(load, len(chosen), size, [f"{it.item}_{it.part}" for it in chosen],
                          augment=augment, seed=aug_seed, flags=[it.defective for it in chosen])

    return make(parts[0], True), make(parts[1], False), make(parts[2], False), KOLEKTOR_CLASSES


def folder_sets(root: str, size: Sequence[int], fold: int, n_folds: int, val_fraction: float, split_seed: int,
                aug_seed: int, num_classes: int | None = None
                ) -> tuple[SegDataset, SegDataset, SegDataset, tuple[str, ...]]:
    """(train, validation, test, class names) of the generic folder layout or MVTec AD: fold ``fold`` (or
    the ``split`` column) is the test set, validation is carved from the training folds."""
    from ...data.folder import read_folder_mask, read_layout, split_items

    scan = read_layout(root, num_classes)
    weak = [it.name for it in scan.items if not it.pixel_labelled]
    if weak:
        raise DataError(f"folder layout {root}: image {weak[0]} has a label but no mask ({len(weak)} such); "
                        "clip_anomaly trains on pixel masks")
    parts = split_items(scan.items, val_fraction, split_seed, n_folds, fold)

    def make(chosen, augment: bool) -> SegDataset:
        def load(i: int) -> tuple[np.ndarray, np.ndarray]:
            image = read_image(chosen[i].image)
            mask = read_folder_mask(chosen[i].mask) if chosen[i].mask else np.zeros(image.shape[:2], np.uint8)
            return image, mask

        return SegDataset(load, len(chosen), size, [it.name for it in chosen], augment=augment, seed=aug_seed,
                          flags=[it.label > 0 for it in chosen])

    return make(parts[0], True), make(parts[1], False), make(parts[2], False), scan.class_names


def reference_batch(dataset: SegDataset, k: int, normal_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` training samples (only defect-free ones when ``normal_only``), un-augmented."""
    chosen = []
    for i in range(len(dataset)):
        image, mask = dataset.raw(i)
        if normal_only and (mask != 0).any():
            continue
        chosen.append((to_tensor(image), torch.from_numpy(np.ascontiguousarray(mask)).long()))
        if len(chosen) == k:
            break
    if not chosen:
        kind = "defect-free " if normal_only else ""
        raise DataError(f"few-shot: the training split holds no {kind}reference images")
    return torch.stack([c[0] for c in chosen]), torch.stack([c[1] for c in chosen])


class ClipImageFiles(ImageFiles):
    """Inference images (file, key, original size) normalised with CLIP's mean and std."""

    def __init__(self, files: Sequence[Path], image_size: tuple[int, int], mode: str = "RGB",
                 keys: Sequence[str] | None = None) -> None:
        super().__init__(files, image_size, mode, keys)
        self.transform = A.Compose([A.Resize(*image_size, area_for_downscale="image"),
                                    A.Normalize(mean=CLIP_MEAN.tolist(), std=CLIP_STD.tolist())])
