"""``create_backbone``: one entry point for registered and timm backbones, with local-file weights only."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_state_dict_file
from ..errors import CheckpointError, ScrapvisionError, first_line
from ..registry import BACKBONES

_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "body.")


def backbone_channels(backbone: nn.Module) -> list[int]:
    return list(backbone.feature_info.channels())


def backbone_strides(backbone: nn.Module) -> list[int]:
    return list(backbone.feature_info.reduction())


def create_backbone(
    name: str,
    weights: str | Path | None = None,
    out_indices: Sequence[int] | None = None,
    in_chans: int = 3,
    **kwargs,
) -> nn.Module:
    """Build a multi-scale feature extractor.

    ``name`` is a registered backbone (``scrapvision list``) or any timm model name. The result's forward
    returns a list of feature maps and its ``feature_info`` gives their channels and strides. ``weights``
    is a local ``.safetensors`` or state-dict file; nothing is ever downloaded.
    """
    indices = tuple(out_indices) if out_indices is not None else None
    if name in BACKBONES:
        model = BACKBONES.get(name)(in_chans=in_chans, out_indices=indices, **kwargs)
    else:
        import timm

        if not timm.is_model(name):
            known = ", ".join(BACKBONES.names())
            raise ScrapvisionError(f"unknown backbone {name!r}: not registered ({known}) and not a timm model name")
        extra = {"out_indices": indices} if indices is not None else {}
        try:
            model = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans, **extra, **kwargs)
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as exc:
            where = f" (out_indices {indices})" if indices is not None else ""
            raise ScrapvisionError(f"backbone {name!r}{where}: {first_line(exc)}") from None
    if weights:
        load_backbone_weights(model, weights)
    return model


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _timm_filter(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply the model family's own ``checkpoint_filter_fn`` (key renames of original releases), if any."""
    inner = getattr(model, "model", model)
    module = importlib.import_module(type(inner).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        return filter_fn(state, inner)
    except Exception:  # noqa: BLE001 - a filter that does not fit this file: fall back to plain keys
        return state


def _adapt(name: str, value: torch.Tensor, target: torch.Tensor,
           grid: tuple[int, int] | None = None) -> torch.Tensor | None:
    """Make a checkpoint tensor fit: input-conv channel count, ViT position-embedding grid (``grid``: the
    model's (rows, cols) of patches; a non-square grid cannot be told from the token count alone)."""
    if value.shape == target.shape:
        return value
    if value.ndim == 4 and target.ndim == 4 and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]:
        from timm.models import adapt_input_conv

        return adapt_input_conv(target.shape[1], value)
    if name.endswith("pos_embed") and value.ndim == 3 and target.ndim == 3 and value.shape[-1] == target.shape[-1]:
        from timm.layers import resample_abs_pos_embed

        n_prefix = 0
        for n in range(0, 9):
            side = int(round((value.shape[1] - n) ** 0.5))
            if side * side == value.shape[1] - n:
                n_prefix = n
                break
        new_side = int(round((target.shape[1] - n_prefix) ** 0.5))
        new_grid = (new_side, new_side)
        if grid is not None and grid[0] * grid[1] == target.shape[1] - n_prefix:
            new_grid = (int(grid[0]), int(grid[1]))  # e.g. a square pretraining crop into a 200x80 head
        elif new_side * new_side != target.shape[1] - n_prefix:
            return None  # a non-square grid the model does not name: the layout is ambiguous
        return resample_abs_pos_embed(value, new_grid, num_prefix_tokens=n_prefix)
    if name.endswith("positional_embedding") and value.ndim == 2 and target.ndim == 2:  # open_clip: no batch axis
        fitted = _adapt("pos_embed", value[None], target[None], grid)
        return None if fitted is None else fitted[0]
    return None


def load_backbone_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local weights file into ``model``; every parameter of ``model`` must be found.

    Accepts a bare state dict, one saved from a full classifier (its head keys are ignored), or one with
    ``module.``/``backbone.``/``encoder.`` prefixes. Returns the ignored checkpoint keys.
    """
    state = {_strip(k): v for k, v in load_state_dict_file(path).items()}
    target = model.state_dict()
    by_stripped = {_strip(k): k for k in target}
    if not set(by_stripped).intersection(state):
        state = {_strip(k): v for k, v in _timm_filter(model, state).items()}
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in by_stripped:
            continue
        full = by_stripped[key]
        fitted = _adapt(key, value, target[full], _patch_grid(model))
        if fitted is None:
            raise CheckpointError(
                f"weights file {path}: '{key}' has shape {tuple(value.shape)}, the backbone expects "
                f"{tuple(target[full].shape)} (another architecture?)"
            )
        loaded[full] = fitted
    missing = [k for k in target if k not in loaded and not k.endswith("num_batches_tracked")]
    unused = sorted(set(state) - set(by_stripped))
    if missing:
        extra = f"; the file has {_some(unused)} that it lacks" if unused else ""
        raise CheckpointError(f"weights file {path}: does not fit this backbone ({type(model).__name__}), "
                              f"missing {_some(missing)}{extra} (a file of another backbone?)")
    model.load_state_dict(loaded, strict=False)
    print(f"weights file {path}: loaded {len(loaded)} of the backbone's {len(target)} tensors"
          + (f"; {len(unused)} tensors of the file unused (layers this model does not have)" if unused else ""),
          file=sys.stderr)
    return unused


def _patch_grid(model: nn.Module) -> tuple[int, int] | None:
    """(rows, cols) of a ViT's patch grid as the model states it (CLIP towers, timm ViTs); None for CNNs."""
    if callable(getattr(model, "grid", None)):
        return tuple(model.grid())
    for module in model.modules():
        grid = getattr(getattr(module, "patch_embed", None), "grid_size", None)
        if grid is not None:
            return tuple(grid)
    return None


def _some(keys: Sequence[str], shown: int = 4) -> str:
    """The first few keys and how many more: an error line stays one line."""
    head = ", ".join(keys[:shown])
    return head + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def is_timm_vit(name: str) -> bool:
    """A timm ViT family model (built for a given ``img_size``, ``patch_size`` and ``depth``)."""
    import timm

    return name not in BACKBONES and timm.is_model(name) and timm.models.is_model_in_modules(
        name, ["vision_transformer", "deit", "eva", "beit", "vision_transformer_relpos"])
