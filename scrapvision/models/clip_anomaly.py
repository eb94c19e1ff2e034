"""Pure modules of the ``clip_anomaly`` head, the CLIP-prompted impurity segmenter (no config objects inside).

Per scale s, patch tokens go through a trainable adapter (LayerNorm + Linear, initialised from CLIP's own
``ln_post``/``proj`` so that with no training it is plain prompt matching) into the joint space; the
logit of class k is ``exp(logit_scale) * cos(adapter_s(token), text_k)``; logits are summed over scales
and upsampled bilinearly to the image. Class text embeddings are computed once from the prompts and kept
as a buffer, so a checkpoint restores them even when the text tower is not at hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from ..backbones.clip import ClipPatchTokens
from ..data.class_masks import IGNORE_INDEX


class PatchAdapter(nn.Sequential):
    """LayerNorm + bias-free Linear from the ViT width into the joint image-text space."""

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__(nn.LayerNorm(width), nn.Linear(width, embed_dim, bias=False))

    @torch.no_grad()
    def init_from_clip(self, ln_post: nn.Module, proj: torch.Tensor | None) -> None:
        """Start from CLIP's final LayerNorm and projection: zero-shot prompt matching out of the box."""
        if isinstance(ln_post, nn.LayerNorm) and ln_post.weight.shape == self[0].weight.shape:
            self[0].load_state_dict(ln_post.state_dict())
        if proj is not None and proj.shape == self[1].weight.T.shape:
            self[1].weight.copy_(proj.T)


@torch.no_grad()
def encode_prompts(clip_model: nn.Module, tokenizer, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
    """(K, D) unit text embeddings: each class's prompt ensemble embedded, normalised, averaged."""
    out = []
    device = next(clip_model.parameters()).device
    for ensemble in prompts:
        emb = F.normalize(clip_model.encode_text(tokenizer(list(ensemble)).to(device)).float(), dim=-1)
        out.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(out)


class ClipAnomalySegmenter(nn.Module):
    """Image -> (B, K, H, W) class logits; class 0 is the normal material, 1..K-1 the impurities.

    ``mode`` "supervised"/"zero_shot" use prompt logits only; "few_shot" mixes them with memory-bank patch
    matching once :meth:`set_memory` was called (see :class:`PatchMemory`).
    """

    def __init__(self, encoder: ClipPatchTokens, text_embeddings: torch.Tensor, embed_dim: int,
                 logit_scale: float = 1 / 0.07, mode: str = "supervised", memory_weight: float = 0.5,
                 memory_patches: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.adapters = nn.ModuleList(PatchAdapter(encoder.width, embed_dim) for _ in encoder.blocks)
        self.register_buffer("text_embeddings", F.normalize(text_embeddings.float(), dim=-1))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.mode = mode
        self.memory = PatchMemory(memory_weight, memory_patches)

    @property
    def num_classes(self) -> int:
        return int(self.text_embeddings.shape[0])

    def scale_logits(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """(B, K, h, w) logits summed over scales at the patch grid."""
        h, w = self.encoder.grid()
        scale = self.logit_scale.exp().clamp(max=100.0)
        total = 0.0
        for adapter, t in zip(self.adapters, tokens):
            feats = F.normalize(adapter(t), dim=-1)
            total = total + scale * feats @ self.text_embeddings.T.to(feats.dtype)
        return total.transpose(1, 2).reshape(tokens[0].shape[0], self.num_classes, h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder.tokens(images)
        logits = F.interpolate(self.scale_logits(tokens), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
        if self.mode != "few_shot" or not self.memory.ready:
            return logits
        mem = self.memory.class_probs(tokens, logits.softmax(1), self.encoder.grid())
        return self.memory.mix(logits.softmax(1), mem).clamp_min(1e-6).log()

    @torch.no_grad()
    def set_memory(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        """Fill the few-shot memory bank from reference images and their class-index masks."""
        self.memory.fill(self.encoder.tokens(images), masks, self.encoder.grid(), self.num_classes)


class PatchMemory(nn.Module):
    """Few-shot memory bank in the style of WinCLIP+/APRIL-GAN: unit patch tokens of reference images
    per scale, labelled with the majority class of their patch.

    Anomaly evidence of a query patch is ``(1 - max cos to normal reference patches) / 2`` (mean over
    scales). Which impurity: nearest labelled impurity patches when the references hold some, otherwise
    the prompt probabilities. The result is mixed with the prompt probabilities by ``weight``.
    ``max_patches`` > 0 bounds the bank: a larger one is cut to that many patches by greedy k-centre coreset
    selection (PatchCore), which keeps the patches that cover the references' feature space, so a query's
    cost stays bounded as k grows. It is not part of the state dict: it is rebuilt from the reference images
    each time.
    """

    def __init__(self, weight: float = 0.5, max_patches: int = 0) -> None:
        super().__init__()
        self.weight = weight
        self.max_patches = max_patches
        self.bank: list[torch.Tensor] = []
        self.labels = torch.empty(0, dtype=torch.long)

    @property
    def ready(self) -> bool:
        return bool(self.bank) and bool((self.labels == 0).any())

    def fill(self, tokens: list[torch.Tensor], masks: torch.Tensor, grid: tuple[int, int], n_classes: int) -> None:
        labels = patch_labels(masks, grid, n_classes).reshape(-1)
        keep = labels != IGNORE_INDEX
        self.bank = [F.normalize(t.reshape(-1, t.shape[-1]).float(), dim=-1)[keep] for t in tokens]
        self.labels = labels[keep]
        if 0 < self.max_patches < len(self.labels):
            chosen = coreset_per_class(torch.cat(self.bank, dim=1), self.labels, self.max_patches)
            self.bank, self.labels = [b[chosen] for b in self.bank], self.labels[chosen]

    def class_probs(self, tokens: list[torch.Tensor], text_probs: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, K, H, W) memory-based class probabilities at the resolution of ``text_probs``."""
        b, k = text_probs.shape[:2]
        labels = self.labels.to(text_probs.device)
        normal = labels == 0
        anomaly_score, nearest = 0.0, torch.full((b, k, grid[0] * grid[1]), -1.0, device=text_probs.device)
        for bank, t in zip(self.bank, tokens):
            sim = F.normalize(t.float(), dim=-1) @ bank.to(t.device).T  # (B, N, M)
            to_normal = sim.amax(-1) if bool(normal.all()) else sim[..., normal].amax(-1)  # no copy of sim
            anomaly_score = anomaly_score + (1 - to_normal) / 2 / len(self.bank)
            for c in range(1, k):
                if (labels == c).any():
                    nearest[:, c] = torch.maximum(nearest[:, c], sim[..., labels == c].amax(-1))
        size = text_probs.shape[-2:]
        score = F.interpolate(anomaly_score.reshape(b, 1, *grid), size=size, mode="bilinear", align_corners=False)
        score = score.clamp(0, 1)
        if (nearest[:, 1:] > -1).any():
            which = F.interpolate((nearest[:, 1:] * 10).reshape(b, k - 1, *grid), size=size, mode="bilinear",
                                  align_corners=False).softmax(1)
        else:
            which = text_probs[:, 1:] / text_probs[:, 1:].sum(1, keepdim=True).clamp_min(1e-6)
        return torch.cat([1 - score, score * which], dim=1)

    def mix(self, text_probs: torch.Tensor, memory_probs: torch.Tensor) -> torch.Tensor:
        return (1 - self.weight) * text_probs + self.weight * memory_probs


def greedy_coreset(features: torch.Tensor, n: int, projection_dim: int = 128) -> torch.Tensor:
    """Indices of ``n`` rows of ``features`` (M, D) chosen by greedy k-centre selection (PatchCore, Roth et al.
    2022): each step takes the row farthest from those already chosen. Distances are computed on a fixed
    random projection to ``projection_dim`` dimensions (Johnson-Lindenstrauss), which keeps the selection
    cheap and deterministic."""
    m = features.shape[0]
    if n >= m:
        return torch.arange(m)
    x = features.float()
    if x.shape[1] > projection_dim:
        generator = torch.Generator().manual_seed(0)
        x = x @ torch.randn(x.shape[1], projection_dim, generator=generator).to(x.device) / projection_dim ** 0.5
    chosen = torch.empty(n, dtype=torch.long)
    chosen[0] = 0
    nearest = (x - x[0]).square().sum(1)
    for i in range(1, n):
        chosen[i] = int(nearest.argmax())
        nearest = torch.minimum(nearest, (x - x[chosen[i]]).square().sum(1))
    return chosen


def coreset_per_class(features: torch.Tensor, labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of about ``n`` rows, each class keeping its share of them (at least one row), so that rare
    impurity patches are not crowded out by the normal ones."""
    total = len(labels)
    picks = []
    for c in labels.unique():
        rows = (labels == c).nonzero().squeeze(1)
        picks.append(rows[greedy_coreset(features[rows], max(1, round(n * len(rows) / total)))])
    return torch.cat(picks).sort().values


def patch_labels(masks: torch.Tensor, grid: tuple[int, int], n_classes: int) -> torch.Tensor:
    """(B, h, w) majority class of every patch; IGNORE_INDEX where ignored pixels dominate."""
    valid = masks != IGNORE_INDEX
    onehot = F.one_hot(torch.where(valid, masks, 0).long(), n_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * valid.unsqueeze(1)
    frac = F.adaptive_avg_pool2d(onehot, grid)
    labels = frac.argmax(1)
    return torch.where(frac.sum(1) > 0.5, labels, torch.full_like(labels, IGNORE_INDEX))


def set_trainable(model: ClipAnomalySegmenter, finetune: str, last_k: int = 1) -> None:
    """``full`` trains the image tower, ``last_k`` only its last k kept blocks, ``frozen`` none of it.
    Adapters and the temperature always train; the text embeddings are a fixed buffer."""
    encoder = model.encoder
    for p in encoder.parameters():
        p.requires_grad = finetune == "full"
    if finetune == "last_k":
        for block in list(encoder.visual.transformer.resblocks)[-last_k:]:
            for p in block.parameters():
                p.requires_grad = True


class FocalDiceLoss(nn.Module):
    """Softmax focal loss + multiclass Dice (smp), both ignoring IGNORE_INDEX pixels."""

    def __init__(self, gamma: float = 2.0, focal_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.gamma, self.focal_weight, self.dice_weight = gamma, focal_weight, dice_weight
        self.dice = DiceLoss(mode="multiclass", from_logits=True, ignore_index=IGNORE_INDEX)

    def focal(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none", ignore_index=IGNORE_INDEX)
        valid = target != IGNORE_INDEX
        weight = (1 - torch.exp(-ce)).pow(self.gamma)
        return (weight * ce)[valid].sum() / valid.sum().clamp_min(1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        focal = self.focal(logits.float(), target)
        dice = self.dice(logits.float(), target)
        loss = self.focal_weight * focal + self.dice_weight * dice
        return loss, {"focal": float(focal.detach()), "dice": float(dice.detach())}
