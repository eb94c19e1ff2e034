"""EfficientNet-CLFSEF scrap-grade classifier: pure modules and losses (no config objects).

CLF (cross-layer fusion) projects several backbone stages to one width, brings them to one resolution
and fuses them, so boundaries from shallow stages and semantics from deep ones reach the classifier.
SEF (semantic-enhanced features) splits channels into groups and, inside each group, re-weights every
position by its similarity to the group's global descriptor (spatial group-wise enhancement, SGE); a
learned 1x1 projection in front decides which channels share a group, i.e. groups semantically related
channels. The variants reproduce the paper's ablation: ``baseline`` (pooled last stage -> linear),
``clf``, ``sef`` (SEF on the last stage), ``clfsef``.

``probe`` is not in the paper: a linear probe on a frozen (self-supervised) backbone. Every stage in
``stages`` is average-pooled, the pooled vectors are concatenated and standardised by a BatchNorm without
affine parameters (MAE's linear-probe recipe), and one linear layer classifies them. Only that layer learns;
the backbone stays in eval mode, so its batch-norm statistics stay the pretrained ones. With a few hundred
labelled photos this keeps what pretraining learnt instead of overwriting it with 100-odd noisy steps.
With ``image_stats`` the probe also classifies hand-made colour and texture statistics of the photo
(:mod:`.image_stats`), standardised with the pooled stages.
Being frozen, the backbone's pooled output is memoised per photo (:mod:`.feature_cache`), so on a CPU the
epochs after the first cost about as much as the linear layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..backbones import backbone_channels, backbone_strides, create_backbone
from ..errors import ScrapvisionError
from .feature_cache import FrozenFeatureCache
from .image_stats import ColourTextureStats

VARIANTS = ("baseline", "clf", "sef", "clfsef", "probe")


def conv_bn_act(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.SiLU(inplace=True))


class CrossLayerFusion(nn.Module):
    """Project each stage to ``width`` channels, bring all to the resolution of stage ``target`` and fuse
    them with a 3x3 conv. Finer maps are average-pooled by their (constant) stride ratio, which keeps
    their detail as local statistics and exports to ONNX; coarser maps are upsampled bilinearly."""

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], width: int, out_channels: int,
                 target: int = -2) -> None:
        super().__init__()
        self.target = target
        self.proj = nn.ModuleList(conv_bn_act(c, width) for c in in_channels)
        goal = strides[target]
        self.pool = nn.ModuleList(
            nn.AvgPool2d(goal // s, ceil_mode=True) if s < goal else nn.Identity() for s in strides)
        self.fuse = conv_bn_act(width * len(in_channels), out_channels, kernel=3)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        size = features[self.target].shape[-2:]
        resized = []
        for proj, pool, feat in zip(self.proj, self.pool, features):
            x = pool(proj(feat))
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            resized.append(x)
        return self.fuse(torch.cat(resized, dim=1))


class SemanticEnhance(nn.Module):
    """Group-wise spatial enhancement: each position is scaled by sigmoid(similarity to its group's mean)."""

    def __init__(self, channels: int, groups: int = 8) -> None:
        super().__init__()
        if channels % groups:
            raise ScrapvisionError(f"SEF: {channels} channels do not split into {groups} groups")
        self.groups = groups
        self.regroup = conv_bn_act(channels, channels)
        # weight 0 / bias 1 start as a uniform gate sigmoid(1): the enhancement is learned, not imposed
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.regroup(x)
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        similarity = (g * g.mean(dim=(2, 3), keepdim=True)).sum(dim=1, keepdim=True)  # [B*G, 1, H, W]
        flat = similarity.reshape(b * self.groups, -1)
        flat = (flat - flat.mean(dim=1, keepdim=True)) / (flat.std(dim=1, keepdim=True) + 1e-5)
        gate = flat.reshape(b, self.groups, h, w) * self.weight + self.bias
        return (g * torch.sigmoid(gate).reshape(b * self.groups, 1, h, w)).reshape(b, c, h, w)


class ScrapClassifier(nn.Module):
    """EfficientNet stages -> (CLF) -> (SEF) -> logits.

    ``forward(x)`` returns the logits. ``forward(x, return_aux=True)`` returns ``(logits, aux)``: ``aux``
    are the logits of the enhanced branch alone (None for ``baseline``), the student of self-distillation.
    The final head sees the pooled deep features and the pooled enhanced features side by side.
    """

    def __init__(self, num_classes: int, backbone: str = "tinynet_e", variant: str = "clfsef",
                 stages: Sequence[int] = (2, 3, 4), weights: str | None = None, fuse_channels: int = 96,
                 sef_groups: int = 8, dropout: float = 0.2, image_stats: bool = False, image_size: int = 224,
                 image_stats_lbp: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ScrapvisionError(f"scrap_cls variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        if image_stats and variant != "probe":
            raise ScrapvisionError(f"scrap_cls image_stats needs the probe variant, not {variant!r}")
        if num_classes < 2:
            raise ScrapvisionError(f"scrap_cls needs at least 2 classes, got {num_classes}")
        self.variant = variant
        self.backbone = create_backbone(backbone, weights=weights or None, out_indices=tuple(stages))
        channels = backbone_channels(self.backbone)
        deep = channels[-1]
        self.enhance: nn.Module | None = None
        if variant in ("clf", "clfsef"):
            strides = backbone_strides(self.backbone)
            self.fusion: nn.Module | None = CrossLayerFusion(channels, strides, fuse_channels, fuse_channels)
        elif variant == "sef":
            self.fusion = conv_bn_act(deep, fuse_channels)
        else:
            self.fusion = None
        if variant in ("sef", "clfsef"):
            self.enhance = SemanticEnhance(fuse_channels, sef_groups)
        self.dropout = nn.Dropout(dropout)
        self.standardize: nn.Module | None = None
        self.feature_cache: FrozenFeatureCache | None = None
        # image_size: the input size the statistics' texture filters are scaled for (no parameters, no state)
        self.image_stats = ColourTextureStats(image_size, lbp=image_stats_lbp) if image_stats else None
        if variant == "probe":
            self.backbone.requires_grad_(False)
            self.feature_cache = FrozenFeatureCache()
            deep = sum(channels) + (self.image_stats.dim if self.image_stats is not None else 0)
            self.standardize = nn.BatchNorm1d(deep, affine=False)
        branch = fuse_channels if self.fusion is not None else 0
        self.head = nn.Linear(deep + branch, num_classes)
        self.aux_head = nn.Linear(branch, num_classes) if branch else None

    def train(self, mode: bool = True) -> ScrapClassifier:
        """As nn.Module.train, except that a probe's frozen backbone always runs in eval mode."""
        super().train(mode)
        if self.standardize is not None:
            self.backbone.eval()
        return self

    def pooled_stages(self, x: torch.Tensor) -> torch.Tensor:
        """Every stage average-pooled and concatenated: [B, sum(channels)], what a probe classifies (followed
        by the photo's colour and texture statistics with ``image_stats``)."""
        pooled = [f.mean(dim=(2, 3)) for f in self.backbone(x)]
        return torch.cat(pooled + ([self.image_stats(x)] if self.image_stats is not None else []), dim=1)

    def probe_features(self, x: torch.Tensor) -> torch.Tensor:
        """A probe's unstandardised features [B, D] (:meth:`pooled_stages`, through the frozen-feature cache)."""
        if self.feature_cache is None:
            raise ScrapvisionError(f"scrap_cls variant {self.variant!r} is not a probe")
        return self.feature_cache(self.backbone, self.pooled_stages, x)

    @torch.no_grad()
    def set_probe(self, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Put a probe fitted outside the gradient loop in place: the standardiser's statistics and the linear
        layer (``models/linear_probe.py``)."""
        if self.standardize is None:
            raise ScrapvisionError(f"scrap_cls variant {self.variant!r} is not a probe")
        self.standardize.running_mean.copy_(mean)
        self.standardize.running_var.copy_(var)
        self.head.weight.copy_(weight)
        self.head.bias.copy_(bias)

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        if self.standardize is not None:  # probe: every stage pooled, standardised, one linear layer
            logits = self.head(self.dropout(self.standardize(self.probe_features(x))))
            return (logits, None) if return_aux else logits
        features = self.backbone(x)
        pooled = [features[-1].mean(dim=(2, 3))]
        aux = None
        if self.fusion is not None:
            enhanced = self.fusion(features if isinstance(self.fusion, CrossLayerFusion) else features[-1])
            if self.enhance is not None:
                enhanced = self.enhance(enhanced)
            enhanced = enhanced.mean(dim=(2, 3))
            pooled.append(enhanced)
            aux = self.aux_head(self.dropout(enhanced))
        logits = self.head(self.dropout(torch.cat(pooled, dim=1)))
        return (logits, aux) if return_aux else logits


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton KD: KL(teacher || student) on temperature-softened distributions, scaled by T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher.detach() / t, dim=1),
                    reduction="batchmean", log_target=True) * t * t


def prediction_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy of the softmax: maximising it (Dubey et al. 2018) counters over-confidence."""
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def clfsef_loss(logits: torch.Tensor, aux: torch.Tensor | None, target: torch.Tensor,
                teacher: torch.Tensor | None = None, aux_weight: float = 1.0, kd_weight: float = 0.5,
                kd_temperature: float = 4.0, entropy_weight: float = 0.1) -> tuple[torch.Tensor, dict[str, float]]:
    """CE on the final logits (+ the enhanced branch) + KD + maximum-entropy regulariser.

    KD teacher: ``teacher`` logits when given (a trained checkpoint), else the model's own final logits
    (self-distillation into the enhanced branch, so the full model teaches its fused part).
    """
    ce = F.cross_entropy(logits, target)
    loss, logs = ce, {"ce": ce.item()}
    if aux is not None and aux_weight > 0:
        aux_ce = F.cross_entropy(aux, target)
        loss = loss + aux_weight * aux_ce
        logs["aux_ce"] = aux_ce.item()
    if kd_weight > 0:
        pairs = [(aux, logits)] if teacher is None else [(logits, teacher), (aux, teacher)]
        kd_terms = [distillation_loss(s, t, kd_temperature) for s, t in pairs if s is not None]
        if kd_terms:
            kd = torch.stack(kd_terms).mean()
            loss = loss + kd_weight * kd
            logs["kd"] = kd.item()
    if entropy_weight > 0:
        entropy = prediction_entropy(logits)
        loss = loss - entropy_weight * entropy
        logs["entropy"] = entropy.item()
    return loss, logs
