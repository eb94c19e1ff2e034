"""open_clip image/text encoders built without any download, and multi-scale ViT patch tokens.

``build_clip(name, weights)`` makes the architecture from an open_clip built-in config (``ViT-B-16``,
``ViT-L-14-336``...) or from a small config defined here (``scrap-vit-tiny``, for CPU training from
scratch), then loads weights only from a local file or an open_clip model folder. open_clip "pretrained
tags" (``openai``, ``laion2b_...``) are refused because they would download. The BPE vocabulary of
open_clip's ``SimpleTokenizer`` ships inside the package, so tokenising needs no network either.

``ClipPatchTokens`` turns the image tower into a backbone: the patch tokens of several blocks as
``B x C x h x w`` maps, with the timm-style ``feature_info`` of every scrapvision backbone.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..catalog import CLIP_BACKBONES
from ..errors import CheckpointError, ScrapvisionError, first_line
from ..registry import BACKBONES

#: Small open_clip configs (same dict format as open_clip's ``model_configs/*.json``).
CLIP_CONFIGS: dict[str, dict[str, Any]] = {
    # ~0.5 M-parameter image tower, 16x16 tokens at 128 px: trains from scratch in minutes on a CPU.
    "scrap-vit-tiny": {
        "embed_dim": 64,
        "vision_cfg": {"image_size": 128, "layers": 4, "width": 96, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
}

_REFUSED = "hf-hub:"


def _is_local_model_dir(weights: str) -> bool:
    return bool(weights) and Path(weights).is_dir()


def _weights_in_folder(folder: Path) -> Path | None:
    """open_clip's file names first (as its ``local-dir:`` loader), then any single weights file."""
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                 "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for suffix in (".safetensors", ".bin", ".pth", ".pt") for p in folder.glob(f"*{suffix}"))
    return found[0] if found else None


def _open_clip() -> Any:
    """open_clip is an optional dependency (``pip install scrapvision[clip]``)."""
    try:
        import open_clip
    except ImportError:
        raise ScrapvisionError("CLIP models need open_clip: pip install 'scrapvision[clip]'") from None
    return open_clip


def clip_config(name: str, weights: str = "") -> dict[str, Any]:
    """The open_clip model config of ``name`` (or of the open_clip model folder ``weights``)."""
    open_clip = _open_clip()

    if name.startswith(_REFUSED):
        raise ScrapvisionError(f"CLIP model {name!r}: hf-hub names download; give a local folder as weights")
    if _is_local_model_dir(weights):
        path = Path(weights) / "open_clip_config.json"
        if not path.is_file():
            raise CheckpointError(f"CLIP weights folder {weights}: no open_clip_config.json in it")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"CLIP config {path}: unreadable ({first_line(exc)})") from None
        return copy.deepcopy(data.get("model_cfg", data))
    if name in CLIP_CONFIGS:
        return copy.deepcopy(CLIP_CONFIGS[name])
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        known = ", ".join([*CLIP_CONFIGS, "ViT-B-16", "ViT-L-14-336", "..."])
        raise ScrapvisionError(f"unknown CLIP model {name!r}; known: {known} (open_clip.list_models())")
    return cfg


def _check_supported(name: str, cfg: dict[str, Any]) -> None:
    """Only open_clip's own ViT image tower and BPE text tower: the others fetch weights or tokenizers."""
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "timm_model_name" in vision or isinstance(vision.get("layers"), (list, tuple)):
        raise ScrapvisionError(f"CLIP model {name!r}: only open_clip ViT image towers are supported")
    if "hf_model_name" in text or "hf_tokenizer_name" in text:
        raise ScrapvisionError(f"CLIP model {name!r}: Hugging Face text towers need a download; not supported")


def build_clip(name: str, weights: str | Path = "", image_size: Sequence[int] | int | None = None,
               patch_size: int = 0) -> nn.Module:
    """An open_clip ``CLIP`` model, randomly initialised or with weights from a local file/folder.

    ``weights``: "" (random init), a ``.pt/.bin/.safetensors`` state dict of the whole CLIP model, or an
    open_clip model folder (``open_clip_config.json`` + weights; its config then wins over ``name``).
    ``image_size`` (int or (H, W)) rebuilds the position embedding grid; loaded ones are resampled.
    ``patch_size`` > 0 replaces the config's (random init: loaded weights of another patch size do not fit).
    """
    open_clip = _open_clip()

    weights = str(weights or "")
    cfg = clip_config(name, weights)
    _check_supported(name, cfg)
    if weights and not Path(weights).exists():
        raise CheckpointError(
            f"CLIP weights {weights}: not found (only local files are used; pretrained tags would download)"
        )
    if image_size is not None:
        cfg["vision_cfg"]["image_size"] = tuple(image_size) if isinstance(image_size, Sequence) else image_size
    if patch_size:
        cfg["vision_cfg"]["patch_size"] = int(patch_size)
    cfg.pop("custom_text", None)
    try:
        model = open_clip.CLIP(**cfg)
        if weights:
            path = _weights_in_folder(Path(weights)) if _is_local_model_dir(weights) else weights
            if path is None:
                raise CheckpointError(f"CLIP weights folder {weights}: holds no .safetensors/.bin/.pth file")
            open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:  # weights_only refused code (or the file is not a pickle)
        reason = "it contains pickled Python objects, which are refused" if "weights_only" in str(exc) \
            else first_line(exc)
        raise CheckpointError(f"CLIP weights {weights}: cannot be loaded: {reason}") from None
    except (RuntimeError, ValueError, KeyError, TypeError, OSError, AssertionError) as exc:
        raise CheckpointError(f"CLIP weights {weights or name}: do not fit {name!r} ({first_line(exc)})") from None
    return model


def is_image_tower_file(weights: str | Path) -> bool:
    """A weights file that holds only an image tower (``visual.*`` keys), such as the
    ``backbone.safetensors`` that ``scrapvision train --task pretrain`` writes for a CLIP backbone."""
    from ..checkpoint import load_state_dict_file

    if not weights or Path(weights).is_dir():
        return False
    if str(weights).endswith(".safetensors") and Path(weights).is_file():
        from safetensors import safe_open

        try:  # the header alone: a multi-GB CLIP file is not read twice
            with safe_open(str(weights), framework="pt") as handle:
                return all(key.startswith("visual.") for key in handle.keys())
        except Exception:  # noqa: BLE001 - unreadable: let the loader raise its one-line error
            pass
    return all(key.startswith("visual.") for key in load_state_dict_file(weights))


def clip_tokenizer(name: str, model: nn.Module, weights: str | Path = "") -> Any:
    """open_clip's BPE tokenizer (vocabulary shipped in the package) at the model's context length."""
    open_clip = _open_clip()
    from open_clip.tokenizer import SimpleTokenizer

    weights = str(weights or "")
    context = int(model.context_length)
    if _is_local_model_dir(weights):
        return open_clip.get_tokenizer(f"local-dir:{weights}", context_length=context)
    if name in open_clip.list_models():
        return open_clip.get_tokenizer(name, context_length=context)
    return SimpleTokenizer(context_length=context)


def even_blocks(n_layers: int, n_scales: int = 4) -> tuple[int, ...]:
    """``n_scales`` evenly spaced block indices ending at the last block (12 layers -> 2, 5, 8, 11)."""
    n_scales = max(1, min(n_scales, n_layers))
    return tuple(sorted({n_layers * (i + 1) // n_scales - 1 for i in range(n_scales)}))


class _FeatureInfo:
    """The two methods of timm's FeatureInfo that scrapvision heads use."""

    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        self._channels, self._reductions = channels, reductions

    def channels(self) -> list[int]:
        return list(self._channels)

    def reduction(self) -> list[int]:
        return list(self._reductions)


class FusedSelfAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch first, no dropout) as one qkv projection + ``F.scaled_dot_product_attention``.

    Same parameters under the same names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), so state dicts
    of either load into the other, and the same outputs. Why: exported to ONNX, ``nn.MultiheadAttention``
    unrolls into about twice the nodes (shape arithmetic, per-head reshapes and transposes) and OpenVINO fuses
    less of it; this one exports as one attention pattern, and runs faster in eager too.
    """

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.num_heads = int(mha.num_heads)
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = mha.out_proj

    @staticmethod
    def fits(mha: nn.Module) -> bool:
        """Only the layout this class reproduces exactly: packed q/k/v weights with biases, batch first."""
        return (isinstance(mha, nn.MultiheadAttention) and mha.batch_first and mha._qkv_same_embed_dim
                and mha.in_proj_bias is not None and mha.bias_k is None and not mha.add_zero_attn
                and mha.dropout == 0.0)

    def forward(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None,
                need_weights: bool = False, attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """(output, None), as ``nn.MultiheadAttention(..., need_weights=False)``; self-attention only."""
        if (key is not None and key is not query) or (value is not None and value is not query) or need_weights:
            raise ScrapvisionError("FusedSelfAttention: self-attention without attention weights only")
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # nn.MultiheadAttention: True = masked out; SDPA: True = attended
        b, n, d = query.shape
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d)), None


def fuse_attention(transformer: nn.Module) -> None:
    """Swap every fitting ``nn.MultiheadAttention`` of ``transformer``'s blocks for :class:`FusedSelfAttention`
    in place (parameters shared, not copied); cross-attention blocks (``ln_1_kv``) keep theirs."""
    for block in getattr(transformer, "resblocks", []):
        if FusedSelfAttention.fits(getattr(block, "attn", None)) and not hasattr(block, "ln_1_kv"):
            block.attn = FusedSelfAttention(block.attn)


class ClipPatchTokens(nn.Module):
    """CLIP ViT image tower that returns the patch tokens of ``blocks`` as ``B x C x h x w`` maps.

    Blocks after the last requested one, the final LayerNorm and the projection are dropped (unused
    parameters would break DDP), so this takes ownership of ``visual`` and prunes it in place; its attention
    layers become :class:`FusedSelfAttention` (same weights and outputs, faster).
    ``input_size`` is fixed by the position embedding: (H, W).
    """

    def __init__(self, visual: nn.Module, blocks: Sequence[int] | None = None) -> None:
        super().__init__()
        n_layers = len(visual.transformer.resblocks)
        blocks = tuple(blocks) if blocks else even_blocks(n_layers)
        bad = [b for b in blocks if not 0 <= b < n_layers]
        if bad:
            raise ScrapvisionError(f"CLIP blocks {bad}: the image tower has blocks 0..{n_layers - 1}")
        self.blocks = tuple(sorted(set(blocks)))
        self.visual = visual
        self.visual.prune_intermediate_layers(list(self.blocks), prune_norm=True, prune_head=True)
        fuse_attention(self.visual.transformer)
        self.width = int(self.visual.transformer.width)
        self.patch_size = tuple(self.visual.patch_size)
        self.input_size = tuple(self.visual.image_size)
        if any(size % patch for size, patch in zip(self.input_size, self.patch_size)):
            raise ScrapvisionError(f"CLIP image size {self.input_size} must be a multiple of the patch size "
                                   f"{self.patch_size}")
        self.feature_info = _FeatureInfo([self.width] * len(self.blocks), [self.patch_size[0]] * len(self.blocks))

    def tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch tokens (B, h*w, C) of every chosen block, class token removed."""
        if tuple(x.shape[-2:]) != self.input_size:
            raise ScrapvisionError(f"CLIP image tower expects {self.input_size} inputs, got {tuple(x.shape[-2:])}")
        out = self.visual.forward_intermediates(x, indices=list(self.blocks), stop_early=True,
                                                intermediates_only=True, output_fmt="NLC")
        return out["image_intermediates"]

    def grid(self) -> tuple[int, int]:
        return self.input_size[0] // self.patch_size[0], self.input_size[1] // self.patch_size[1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = self.grid()
        return [t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w) for t in self.tokens(x)]


def _clip_backbone(clip_name: str):
    def factory(in_chans: int = 3, out_indices: tuple[int, ...] | None = None, clip_weights: str = "",
                image_size: Sequence[int] | int | None = None) -> ClipPatchTokens:
        if in_chans != 3:
            raise ScrapvisionError(f"CLIP backbone {clip_name!r}: takes 3-channel images, not {in_chans}")
        model = build_clip(clip_name, clip_weights, image_size)
        return ClipPatchTokens(model.visual, out_indices)

    return factory


for _alias, _name in CLIP_BACKBONES.items():
    BACKBONES.register(_alias)(_clip_backbone(_name))
