"""Metrics shared by the heads. Inputs may be NumPy arrays or torch tensors (any device)."""

from __future__ import annotations

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_bool(x: ArrayLike) -> torch.Tensor:
    """Booleans stay as they are; numbers count as foreground above 0.5 (so 0/1 float targets work)."""
    t = torch.as_tensor(x)
    return t if t.dtype == torch.bool else t > 0.5


def kaggle_dice_pairs(pred: ArrayLike, target: ArrayLike) -> torch.Tensor:
    """Dice of every (image, class) pair of [N, C, H, W] masks as a float64 [N, C] CPU tensor.

    Dice = 2|P & T| / (|P| + |T|), and 1 where both masks are empty (the Severstal Kaggle rule), so
    predicting nothing on a clean image is rewarded. Concatenate these across batches to score a loader.
    """
    p = _as_bool(pred)
    t = _as_bool(target).to(p.device)
    if p.shape != t.shape or p.ndim != 4:
        raise ValueError(f"kaggle dice needs pred and target of one [N, C, H, W] shape, got {tuple(p.shape)} "
                         f"and {tuple(t.shape)}")
    p, t = p.flatten(2), t.flatten(2)
    inter = (p & t).sum(-1, dtype=torch.float64)
    total = p.sum(-1, dtype=torch.float64) + t.sum(-1, dtype=torch.float64)
    dice = torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))
    return dice.cpu()


def kaggle_dice(pred: ArrayLike, target: ArrayLike) -> float:
    """Mean Dice over every (image, class) pair: the Severstal competition score."""
    pairs = kaggle_dice_pairs(pred, target)
    if pairs.numel() == 0:
        raise ValueError("kaggle dice of an empty batch is undefined")
    return float(pairs.mean())


def dice_per_class(pred: ArrayLike, target: ArrayLike) -> list[float]:
    """Mean Kaggle Dice of each class over the images: which defect type the model gets wrong."""
    pairs = kaggle_dice_pairs(pred, target)
    if pairs.shape[0] == 0:
        raise ValueError("per-class dice of an empty batch is undefined")
    return pairs.mean(0).tolist()


class KaggleDiceMeter:
    """Accumulates pair Dice over batches, so ``evaluate`` can score a whole loader without holding masks."""

    def __init__(self) -> None:
        self._pairs: list[torch.Tensor] = []

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        self._pairs.append(kaggle_dice_pairs(pred, target))

    def pairs(self) -> torch.Tensor:
        if not self._pairs:
            raise ValueError("kaggle dice meter has seen no batch")
        return torch.cat(self._pairs)

    def value(self) -> float:
        return float(self.pairs().mean())

    def per_class(self) -> list[float]:
        return self.pairs().mean(0).tolist()
