"""Pure ``nn.Module``s of the ``canet`` head: CANet, the direct-regression baseline, and the loss.

Input layout for both models: ``images`` float [B, N, 3, H, W] in [0, 1], i.e. B samples (stirred bags)
with N photos each. The models fold this into [B*N, 3, H, W] for the backbone (ImageNet normalisation is
done here, so callers pass plain [0, 1] pixels) and unfold the results per sample.

CANet (Content-Aware Network, Zhao et al., sec. 3): a ViT gives a feature per patch; an MLP (1x1 convs)
and a softmax assign every patch to I+1 latent material classes (class 0 = copper); averaging gives each
photo's area-proportion vector, averaging over the N photos gives the sample's. The head turns areas into
a mass fraction with the material densities::

    content = rho_c * p_c / (rho_c * p_c + FC(p_impurities))

FC is one bias-free linear layer with one output whose weights are the impurity densities; they are kept
positive by a softplus (plus a floor), so the denominator is at least ``min_density`` (the proportions sum
to one) and never zero. Since the camera sees areas, a learnt "density" is really density x mean
thickness relative to copper; only the ratios matter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _PhotoFeatures(nn.Module):
    """Backbone over every photo of every sample: [B, N, 3, H, W] -> last feature map [B*N, C, h, w]."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"expected images [B, N, 3, H, W], got {tuple(images.shape)}")
        flat = images.flatten(0, 1)
        return self.backbone((flat - self.mean) / self.std)[-1]


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class CANet(nn.Module):
    """Patch classes -> area proportions -> density-weighted copper mass fraction."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_channels: int,
        num_classes: int = 10,
        hidden: int = 256,
        copper_density: float = 8.96,
        init_densities: Sequence[float] = (0.1, 16.0),
        min_density: float = 1e-3,
    ) -> None:
        """``init_densities`` = (low, high): the I impurity densities start log-spaced over this range, so
        the latent classes start different and can specialise by how heavy their material is. The
        densities are ``softplus(impurity_density_param) + min_density``; Adam moves these I weights by
        about the learning rate per step, ~0.001 g/cm3, so a head that wants them to move in a short run
        gives them a larger learning rate (``canet`` does, through its optimiser parameter groups)."""
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts copper plus at least one impurity class, got {num_classes}")
        if copper_density <= 0 or min_density <= 0:
            raise ValueError("densities must be positive")
        self.features = _PhotoFeatures(backbone)
        self.neck = nn.Sequential(
            nn.Conv2d(feature_channels, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, hidden, 1), nn.GELU(),
            nn.Conv2d(hidden, num_classes, 1),
        )
        low, high = init_densities
        start = torch.logspace(math.log10(low), math.log10(high), num_classes - 1) - min_density
        self.impurity_density_param = nn.Parameter(_inverse_softplus(start.clamp_min(1e-4)).view(1, -1))
        self.register_buffer("copper_density", torch.tensor(float(copper_density)))
        self.min_density = min_density

    def impurity_densities(self) -> torch.Tensor:
        """The FC weights as densities, [1, I], always > 0."""
        return F.softplus(self.impurity_density_param) + self.min_density

    def content_from_proportions(self, proportions: torch.Tensor) -> torch.Tensor:
        """[..., I+1] area proportions (summing to one) -> copper mass fraction [...]."""
        copper = self.copper_density * proportions[..., 0]
        impurities = F.linear(proportions[..., 1:], self.impurity_densities()).squeeze(-1)  # FC: 1 output, no bias
        return copper / (copper + impurities).clamp_min(1e-6)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, n_images = images.shape[:2]
        feats = self.features(images)
        probs = self.neck(feats).softmax(dim=1)  # [B*N, K, h, w]
        image_props = probs.mean(dim=(2, 3)).view(batch, n_images, -1)
        sample_props = image_props.mean(dim=1)
        return {
            "content": self.content_from_proportions(sample_props),  # [B]
            "area": image_props[..., 0],  # [B, N] copper area proportion of each photo
            "image_proportions": image_props,  # [B, N, K]
            "sample_proportions": sample_props,  # [B, K]
            "patch_probs": probs.view(batch, n_images, *probs.shape[1:]),  # [B, N, K, h, w]
        }


class DirectRegression(nn.Module):
    """Paper baseline: concatenate the N photos' feature maps and regress the content with a conv decoder."""

    def __init__(self, backbone: nn.Module, feature_channels: int, num_images: int, width: int = 128) -> None:
        super().__init__()
        self.features = _PhotoFeatures(backbone)
        self.num_images = num_images
        self.decoder = nn.Sequential(
            nn.Conv2d(feature_channels * num_images, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1),
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        batch, n_images = images.shape[:2]
        if n_images != self.num_images:
            raise ValueError(f"this direct-regression model takes exactly {self.num_images} photos per sample, "
                             f"got {n_images}")
        feats = self.features(images)
        stacked = feats.reshape(batch, n_images * feats.shape[1], *feats.shape[2:])
        return {"content": torch.sigmoid(self.decoder(stacked).squeeze(-1))}


def canet_loss(
    outputs: dict[str, torch.Tensor], area: torch.Tensor, content: torch.Tensor,
    lambda_a: float = 0.2, lambda_m: float = 0.8, mask: torch.Tensor | None = None, lambda_p: float = 0.0,
    assayed: torch.Tensor | None = None, lambda_i: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``lambda_a * mean_j (p_c_j - p^_c_j)^2 + lambda_m * (content - content^)^2``, batch-averaged.

    The area term is skipped for models without per-photo areas (the direct baseline). ``lambda_p`` > 0
    adds a term that is not in the paper: each patch's copper probability against the copper fraction of
    the mask pooled to the patch grid (``mask`` [B, N, H, W] in [0, 1]). ``assayed`` [B] (1 = the sample has
    a content label, 0 = mask-only) averages the content term over the assayed samples only; a mask-only
    sample's ``content`` must be a finite placeholder (its residual is multiplied by 0, and 0 * NaN is NaN).
    ``lambda_i`` > 0 adds :func:`impurity_class_spread` (not in the paper either)."""
    squared = (outputs["content"] - content) ** 2
    if assayed is None:
        content_term = squared.mean()
    else:  # no assayed sample in the batch: the term is 0 (clamp), not 0 / 0
        content_term = (squared * assayed).sum() / assayed.sum().clamp_min(1.0)
    loss = lambda_m * content_term
    logs = {"content_mse": float(content_term.detach())}
    if "area" in outputs and lambda_a > 0:
        area_term = F.mse_loss(outputs["area"], area)
        loss = loss + lambda_a * area_term
        logs["area_mse"] = float(area_term.detach())
    if "patch_probs" in outputs and lambda_p > 0 and mask is not None:
        copper = outputs["patch_probs"][:, :, 0]  # [B, N, h, w]
        target = F.adaptive_avg_pool2d(mask.flatten(0, 1), copper.shape[-2:]).view_as(copper)
        patch_term = F.mse_loss(copper, target)
        loss = loss + lambda_p * patch_term
        logs["patch_mse"] = float(patch_term.detach())
    if "patch_probs" in outputs and lambda_i > 0:
        spread = impurity_class_spread(outputs["patch_probs"])
        loss = loss + lambda_i * spread
        logs["class_spread"] = float(spread.detach())
    return loss, logs


def impurity_class_spread(patch_probs: torch.Tensor) -> torch.Tensor:
    """Information maximisation over the impurity classes: the mean entropy of each patch's distribution over
    the I impurity classes minus the entropy of their mean over the batch, both weighted by the patch's
    (detached) non-copper probability. Why: the assays alone let the latent classes lump materials of unlike
    density into one class; minimising this makes each impurity patch commit to one class while the batch
    keeps using many, so the content term has classes to give different densities. [B, N, K, h, w] -> []."""
    impurities = patch_probs[:, :, 1:]
    weight = impurities.sum(2).detach()  # [B, N, h, w]: how much of the patch is not copper
    shares = impurities / impurities.sum(2, keepdim=True).clamp_min(1e-6)
    total = weight.sum().clamp_min(1e-6)
    conditional = (weight * -(shares * shares.clamp_min(1e-8).log()).sum(2)).sum() / total
    marginal = (shares * weight.unsqueeze(2)).sum((0, 1, 3, 4)) / total
    return conditional + (marginal * marginal.clamp_min(1e-8).log()).sum()
