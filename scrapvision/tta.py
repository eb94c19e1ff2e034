"""Flip (and, for square images, rotation) test-time augmentation, shared by the heads that take ``--tta``.

The model sees the image as it is and flipped (``d4``: also transposed, so rotated by 90 degrees); each pass's
maps are turned back and the probabilities (never the logits: a mean of logits is not a mean of beliefs) are
averaged, as the top Severstal Kaggle solutions did. A flip and a transpose are each their own inverse, so a pass
is undone by the same steps in reverse order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:  # torch loads with the model, not with the CLI's argument parser that reads TTA_MODES
    import torch

TTA_MODES = ("none", "hflip", "hvflip", "d4")
#: the flipped axes of each pass ([B, C, H, W]: -1 = width, -2 = height); () = the image as it is
FLIPS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),),
    "hflip": ((), (-1,)),
    "hvflip": ((), (-1,), (-2,), (-2, -1)),
}
#: a pass: (flipped axes, then transposed?); d4 adds the transposes of hvflip's four passes, which gives all eight
#: rotations by 90 degrees and their mirror images (square images only: a transpose swaps height and width)
Pass = tuple[tuple[int, ...], bool]
PASSES: dict[str, tuple[Pass, ...]] = {
    **{mode: tuple((dims, False) for dims in flips) for mode, flips in FLIPS.items()},
    "d4": tuple((dims, transpose) for transpose in (False, True) for dims in FLIPS["hvflip"]),
}


def tta_passes(mode: str) -> tuple[Pass, ...]:
    if mode not in PASSES:
        raise ConfigError(f"tta {mode!r}: expected one of {', '.join(TTA_MODES)}")
    return PASSES[mode]


def apply_pass(x: torch.Tensor, step: Pass) -> torch.Tensor:
    """``x`` (spatial in its last two dims) as one TTA pass sees it: flipped, then transposed."""
    dims, transpose = step
    x = x.flip(dims) if dims else x
    return x.transpose(-2, -1) if transpose else x


def undo_pass(x: torch.Tensor, step: Pass) -> torch.Tensor:
    """The inverse of :func:`apply_pass`: a map predicted on the pass, back in the image's orientation."""
    dims, transpose = step
    x = x.transpose(-2, -1) if transpose else x
    return x.flip(dims) if dims else x


def check_square(images: torch.Tensor, mode: str) -> None:
    if any(t for _, t in tta_passes(mode)) and images.shape[-1] != images.shape[-2]:
        raise ConfigError(f"tta {mode}: rotates the image, so it needs square inputs; got "
                          f"{images.shape[-2]}x{images.shape[-1]} px (use hvflip)")


def tta_average(predict: Callable[[torch.Tensor], Any], images: torch.Tensor, mode: str) -> Any:
    """Mean of ``predict`` over the TTA passes of ``images`` [..., H, W].

    ``predict`` returns probabilities: one tensor or a tuple. Spatial outputs ([B, K, h, w], any stride
    that divides the input) are turned back before averaging; image-level outputs (fewer dims) are
    averaged as they are.
    """
    passes = tta_passes(mode)
    check_square(images, mode)
    total: tuple[torch.Tensor, ...] | None = None
    single = True
    for step in passes:
        out = predict(apply_pass(images, step))
        single = not isinstance(out, (tuple, list))
        outs = (out,) if single else tuple(out)
        outs = tuple(undo_pass(o, step) if o.ndim == 4 else o for o in outs)
        total = outs if total is None else tuple(t + o for t, o in zip(total, outs))
    assert total is not None
    mean = tuple(t / len(passes) for t in total)
    return mean[0] if single else mean  # type: ignore[return-value]
