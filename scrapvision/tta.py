"""Flip test-time augmentation, shared by the segmentation heads (severstal, segdec, clip_anomaly).

The model sees the image as it is and flipped; each pass's maps are flipped back and the probabilities
(never the logits: a mean of logits is not a mean of beliefs) are averaged, as the top Severstal Kaggle
solutions did. A flip is its own inverse, so the same dims undo it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # torch loads with the model, not with the CLI's argument parser that reads TTA_MODES
    import torch

TTA_MODES = ("none", "hflip", "hvflip")
#: the flipped axes of each pass ([B, C, H, W]: -1 = width, -2 = height); () = the image as it is
FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (-1,)),
    "hvflip": ((), (-1,), (-2,), (-2, -1)),
}


def flip_passes(mode: str) -> tuple[tuple[int, ...], ...]:
    if mode not in FLIPS:
        raise ConfigError(f"tta {mode!r}: expected one of {', '.join(TTA_MODES)}")
    return FLIPS[mode]


def tta_average(predict: Callable[[torch.Tensor], Any], images: torch.Tensor, mode: str) -> Any:
    """Mean of ``predict`` over the flip passes of ``images`` [B, C, H, W].

    ``predict`` returns probabilities: one tensor or a tuple. Spatial outputs ([B, K, h, w], any stride
    that divides the input) are flipped back before averaging; image-level outputs (fewer dims) are
    averaged as they are.
    """
    passes = flip_passes(mode)
    total: tuple[torch.Tensor, ...] | None = None
    single = True
    for dims in passes:
        out = predict(images.flip(dims) if dims else images)
        single = not isinstance(out, (tuple, list))
        outs = (out,) if single else tuple(out)
        outs = tuple(o.flip(dims) if dims and o.ndim == 4 else o for o in outs)
        total = outs if total is None else tuple(t + o for t, o in zip(total, outs))
    assert total is not None
    mean = tuple(t / len(passes) for t in total)
    return mean[0] if single else mean  # type: ignore[return-value]
