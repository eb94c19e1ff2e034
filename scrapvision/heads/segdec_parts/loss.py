"""segdec's losses: the seg/decision balance schedule, the joint loss, and the decision-at-chance warning."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import ConfigError


def seg_weight(schedule: str, progress: float, epochs: int, constant: float = 0.5, beta: float = 0.15) -> float:
    """``w_seg`` of a schedule at ``progress`` (0 -> 1 over training); see the module docstring."""
    n = progress * epochs
    if schedule == "constant":
        return constant
    if schedule == "dynamic":
        return max(0.0, 1.0 - progress)
    if schedule == "decay":
        return (1.0 - beta) ** n
    raise ConfigError(f"config key 'loss.schedule': unknown schedule {schedule!r}")


#: the decision loss counts as "at chance" above ln 2 - this: with balanced batches (half defective) a head
#: that ignores its input scores ln 2 = 0.693; 0.15 below it, the geometric mean of the probability given to
#: the true label is still only exp(-0.54) = 0.58, while a decision head that learns reaches ~0.1 within a few
#: epochs on KolektorSDD (benchmarks/results/segdec_transfer.md)
CHANCE_TOLERANCE = 0.15
#: ... and the warning waits until the decision term carries more weight than the segmentation term
WARN_BELOW_W_SEG = 0.5


def decision_at_chance(record: Mapping[str, Any], chance: float = math.log(2)) -> str | None:
    """The warning for an epoch whose decision loss (``train_loss_dec``) stayed at chance although the loss
    balance already gives it most of the weight (``train_w_seg`` < 0.5), else None. This is how segdec fails
    on data the recipe does not fit: the schedule hands the loss to a decision head that has nothing to
    learn from, and the logged total rises while nothing improves."""
    l_dec, w_seg = record.get("train_loss_dec"), record.get("train_w_seg")
    if l_dec is None or w_seg is None or w_seg >= WARN_BELOW_W_SEG or l_dec < chance - CHANCE_TOLERANCE:
        return None
    return (f"epoch {record.get('epoch', '?')}: the decision loss {l_dec:.3f} is still at chance ({chance:.3f}) "
            f"while the loss balance gives it {1 - w_seg:.0%} of the weight (w_seg {w_seg:.2f}); the decision "
            f"head is not learning (benchmarks/results/segdec_transfer.md)")


def soft_dice_loss(seg: torch.Tensor, target: torch.Tensor, gamma: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice of the sigmoid map against the target, over all pixel-labelled images of the batch together
    (``gamma`` > 0). Pooled over the batch rather than per image, so a defect-free image adds its false positives
    to the denominator instead of scoring an undefined 0/0. Unlike a pixel mean, the overlap ratio does not shrink
    with the defect's share of the image: small defects pull as hard as large ones. Not smp's ``DiceLoss``: it
    scores a batch without defect pixels as 0 (no push against false alarms there) and cannot leave out the
    image-labelled images of weak and mixed supervision, whose targets are soft fractions, not an ignore index."""
    keep = (gamma > 0).to(seg.dtype).view(-1, 1, 1, 1)
    prob = torch.sigmoid(seg) * keep
    target = target * keep
    overlap = (prob * target).sum()
    return 1.0 - (2.0 * overlap + eps) / (prob.sum() + target.sum() + eps)


def segdec_loss(decision: torch.Tensor, seg: torch.Tensor, batch: dict[str, torch.Tensor], w_seg: float,
                delta: float, seg_loss: str = "bce", pos_weight: float = 1.0,
                dice: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, L_seg, L_dec): per-image weighted pixel loss masked by gamma (plus ``dice`` x the batch's soft Dice
    loss), BCE on the decision logit. ``pos_weight`` scales the defect part of each pixel's target (soft targets
    at the stride are fractions)."""
    target, weight, gamma = batch["target"], batch["weight"], batch["gamma"]
    if pos_weight != 1.0:
        weight = weight * (1.0 + (pos_weight - 1.0) * target)
    if seg_loss == "bce":
        pixel = F.binary_cross_entropy_with_logits(seg, target, reduction="none")
    else:
        pixel = (torch.sigmoid(seg) - target) ** 2
    l_seg = ((pixel * weight).mean(dim=(1, 2, 3)) * gamma).mean()
    if dice > 0:  # 0 when no image of the batch is pixel-labelled (no host sync needed to check)
        l_seg = l_seg + dice * soft_dice_loss(seg, target, gamma)
    l_dec = F.binary_cross_entropy_with_logits(decision, batch["label"])
    return w_seg * l_seg + (1.0 - w_seg) * delta * l_dec, l_seg, l_dec
