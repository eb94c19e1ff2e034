"""Hand-made colour and texture statistics of a photo, as a fixed (parameter-free) torch module.

Scrap grades differ by what a trader looks at first: the colour of the metal (rust, bright steel, copper,
paint, zinc coating) and the size and direction of its pieces (plate, wire, turnings, shredded lumps). A
histogram of colours and the energy of oriented band-pass filters measure those directly, with no training,
so they do not depend on how many labelled photos a plant has. On the 333 real scrap photos they classify as
well as the self-supervised backbone's pooled features and complement them (benchmarks/RESULTS.md,
pretrain_transfer section): scrap_cls's probe concatenates the two (``model.image_stats``). Local binary
patterns (``model.image_stats_lbp``) add the fine texture of the metal's surface and edges, which the band-pass
energies average away.

Everything is written with exportable operations (comparisons, einsum, fixed convolutions), so the
statistics are part of the exported ONNX graph and ``predict`` needs no separate preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: albumentations' A.Normalize() defaults, which scrap_cls's transforms apply (undone here)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ITU-R BT.601 luma weights (OpenCV's RGB2GRAY)
LUMA = (0.299, 0.587, 0.114)
#: sRGB (D65) -> XYZ, rows X, Y, Z, each divided by the D65 white point so that white maps to (1, 1, 1)
_RGB_TO_XYZ = ((0.412453 / 0.950456, 0.357580 / 0.950456, 0.180423 / 0.950456),
               (0.212671, 0.715160, 0.072169),
               (0.019334 / 1.088754, 0.119193 / 1.088754, 0.950227 / 1.088754))
#: Gabor filters at 256 px on the photo's shorter side: (sigma, wavelength) per scale, 4 orientations each
GABOR_SCALES = ((2.0, 5.0), (4.0, 10.0), (8.0, 20.0))
GABOR_ORIENTATIONS = 4
#: local binary patterns: radii in px at 256 px on the photo's shorter side, and neighbours on each circle
LBP_RADII = (1.0, 2.0, 4.0)
LBP_POINTS = 8
LBP_TOLERANCE = 0.5 / 255


def gabor_bank(scale: float, scales: Sequence[tuple[float, float]] = GABOR_SCALES,
               orientations: int = GABOR_ORIENTATIONS, aspect: float = 0.5) -> torch.Tensor:
    """Real Gabor kernels [scales * orientations, 1, K, K] for an image ``scale`` times 256 px; K is odd and
    covers the largest kernel's 21 px at 256 px, scaled."""
    size = max(3, round(21 * scale) | 1)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    kernels = []
    for sigma, wavelength in scales:
        sigma, wavelength = sigma * scale, wavelength * scale
        for k in range(orientations):
            theta = k * math.pi / orientations
            xr, yr = x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta)
            kernels.append(torch.exp(-(xr ** 2 + aspect ** 2 * yr ** 2) / (2 * sigma ** 2))
                           * torch.cos(2 * math.pi * xr / wavelength))
    return torch.stack(kernels).unsqueeze(1).float()


def neighbour_kernels(radius: float, points: int = LBP_POINTS) -> torch.Tensor:
    """[points, 1, K, K] kernels that each sample one neighbour on a circle of ``radius`` px around the centre
    pixel, bilinearly (the circular neighbourhood of Ojala et al. 2002), starting to the right, anticlockwise."""
    reach = math.ceil(radius - 1e-9)
    size = 2 * reach + 1
    kernels = torch.zeros(points, 1, size, size, dtype=torch.float64)
    for k in range(points):
        y, x = -radius * math.sin(2 * math.pi * k / points) + reach, radius * math.cos(2 * math.pi * k / points) + reach
        y, x = round(y, 9), round(x, 9)  # exact grid points stay exact (no weight of 1e-17 on a neighbour)
        y0, x0 = math.floor(y), math.floor(x)
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                if wy * wx > 0:
                    kernels[k, 0, yy, xx] += wy * wx
    return kernels.float()


def lbp_histogram(grey: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Rotation-invariant uniform local binary patterns (LBP riu2, Ojala et al. 2002) of a grey image
    [B, 1, H, W] in [0, 1]: each pixel's neighbours (``kernels``, :func:`neighbour_kernels`) at least as bright
    as it (within :data:`LBP_TOLERANCE`) are ones; a pattern with at most two 0/1 changes around the circle counts its ones (0..P), any other is P + 1.
    Returns the fraction of pixels per code [B, P + 2]. Comparisons and sums only, so it exports to ONNX."""
    points, pad = kernels.shape[0], kernels.shape[-1] // 2
    # as bright within half an 8-bit grey level: the interpolation weights' rounding must not decide flat regions
    bits = (F.conv2d(F.pad(grey, (pad,) * 4, mode="replicate"), kernels) >= grey - LBP_TOLERANCE).float()
    changes = (bits - bits.roll(1, dims=1)).abs().sum(1)
    code = torch.where(changes <= 2, bits.sum(1), torch.full_like(changes, points + 1)).long()
    return one_hot(code, points + 2).mean((2, 3))


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> HSV, each channel in [0, 1] (hue 0 for grey pixels)."""
    r, g, b = rgb.unbind(1)
    value, _ = rgb.max(1)
    delta = value - rgb.min(1)[0]
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = torch.where(delta > 0, hue / 6, torch.zeros_like(hue))
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, torch.ones_like(value)),
                             torch.zeros_like(value))
    return torch.stack([hue, saturation, value], 1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] sRGB in [0, 1] -> CIE L*a*b* (D65): L in [0, 100], a and b about [-100, 100]."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).clamp(min=0) ** 2.4, rgb / 12.92)
    matrix = torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device).view(3, 3, 1, 1)
    xyz = F.conv2d(linear, matrix)
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def one_hot(index: torch.Tensor, bins: int) -> torch.Tensor:
    """[B, H, W] bin indices -> [B, bins, H, W] indicators. Comparisons with a constant range, not scatter or
    flatten: ONNX shape inference then knows every width, which the probe's BatchNorm1d needs to export."""
    return (index.unsqueeze(1) == torch.arange(bins, device=index.device).view(1, bins, 1, 1)).float()


def bin_of(values: torch.Tensor, bins: int, high: float = 1.0) -> torch.Tensor:
    """Equal-width bin index of values in [0, high]; the top edge and anything beyond go to the last bin."""
    return (values * (bins / high)).floor().clamp(0, bins - 1).long()


class ColourTextureStats(nn.Module):
    """[B, 3, H, W] normalised photo -> [B, :attr:`dim`] statistics, per photo:

    - a joint hue x saturation x value histogram (12 x 4 x 4 bins, square-rooted: the Hellinger map, so that
      a linear classifier compares histograms sensibly);
    - the mean and standard deviation of L*, a*, b* and a 16-bin histogram of L* (square-rooted);
    - Gabor energy: mean and standard deviation of |response| of 3 scales x 4 orientations on the grey image
      at half the input size;
    - a gradient-orientation histogram (8 bins over 180 degrees, weighted by magnitude) and a 10-bin histogram
      of the gradient magnitude, from Sobel filters at the same size;
    - with ``lbp``: rotation-invariant uniform local binary pattern histograms (10 bins, square-rooted) at 3
      radii on the same grey image.

    ``image_size``: the input size it is built for; the Gabor wavelengths are set for a photo 256 px on its
    shorter side, so they are scaled to image_size / 2 (the grey image is pooled 2x first).
    """

    hsv_bins = (12, 4, 4)
    lightness_bins = 16
    orientation_bins = 8
    magnitude_bins = 10

    def __init__(self, image_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, lbp: bool = False) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("gabor", gabor_bank(image_size / 2 / 256), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("sobel", torch.stack([sobel, sobel.t()]).unsqueeze(1), persistent=False)
        # bin edges half a bin off the axes, so horizontal and vertical edges (common in photos) sit mid-bin
        angles = (torch.arange(self.orientation_bins) + 0.5) * math.pi / self.orientation_bins
        self.register_buffer("edges", torch.stack([angles.cos(), angles.sin()], 1), persistent=False)
        # lbp: local binary pattern histograms at LBP_RADII (scaled as the Gabor filters are, at least 1 px)
        self.lbp_scales = len(LBP_RADII) if lbp else 0
        for i in range(self.lbp_scales):
            self.register_buffer(f"lbp{i}", neighbour_kernels(max(1.0, LBP_RADII[i] * image_size / 2 / 256)),
                                 persistent=False)
        h, s, v = self.hsv_bins
        self.dim = (h * s * v + 6 + self.lightness_bins + 2 * self.gabor.shape[0] + self.orientation_bins
                    + self.magnitude_bins + self.lbp_scales * (LBP_POINTS + 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 even under bf16 autocast (`--precision bf16`): pixel counts of a 352 px photo need 17 bits
        with torch.autocast(x.device.type, enabled=False):
            rgb = (x.float() * self.std + self.mean).clamp(0, 1)
            colour = self.colour(rgb)
            grey = F.avg_pool2d((rgb * self.luma).sum(1, keepdim=True), 2)
            return torch.cat([colour, self.texture(grey)], 1)

    def colour(self, rgb: torch.Tensor) -> torch.Tensor:
        hsv = rgb_to_hsv(rgb)
        nh, ns, nv = self.hsv_bins
        hue = one_hot(bin_of(hsv[:, 0], nh), nh)
        sat_val = one_hot(bin_of(hsv[:, 1], ns) * nv + bin_of(hsv[:, 2], nv), ns * nv)
        joint = torch.einsum("bihw,bjhw->bij", hue, sat_val).flatten(1)  # hue x (saturation, value) pixel counts
        lab = rgb_to_lab(rgb)
        lightness = one_hot(bin_of(lab[:, 0], self.lightness_bins, 100.0), self.lightness_bins).mean((2, 3))
        return torch.cat([(joint / joint.sum(1, keepdim=True)).sqrt(), lab.mean((2, 3)) / 100,
                          lab.std((2, 3)) / 100, lightness.sqrt()], 1)

    def texture(self, grey: torch.Tensor) -> torch.Tensor:
        # edge-replicated borders: zero padding would add a strong false edge around every photo
        pad = self.gabor.shape[-1] // 2
        energy = F.conv2d(F.pad(grey, (pad,) * 4, mode="replicate"), self.gabor).abs()
        gradient = F.conv2d(F.pad(grey, (1,) * 4, mode="replicate"), self.sobel)
        gx, gy = gradient[:, 0], gradient[:, 1]
        magnitude = (gx * gx + gy * gy).sqrt()
        # orientation modulo 180 degrees without atan2 (not in ONNX): fold to the upper half-plane, count the bin
        # edges the gradient lies beyond (cross product with each edge direction >= 0); past the last edge is bin 0
        flip = torch.where(gy < 0, -torch.ones_like(gy), torch.ones_like(gy))
        gx, gy = (gx * flip).unsqueeze(1), (gy * flip).unsqueeze(1)
        cos, sin = self.edges[:, 0].view(1, -1, 1, 1), self.edges[:, 1].view(1, -1, 1, 1)
        orientation = (cos * gy - sin * gx >= 0).long().sum(1) % self.orientation_bins
        # magnitude-weighted fractions; a photo whose mean gradient is below 0.01 counts as flat (its noise stays
        # near zero instead of filling one bin)
        weighted = (one_hot(orientation, self.orientation_bins) * magnitude.unsqueeze(1)).mean((2, 3))
        oriented = weighted / magnitude.mean((1, 2)).clamp(min=0.01).unsqueeze(1)
        strength = one_hot(bin_of(magnitude, self.magnitude_bins, 2.0), self.magnitude_bins).mean((2, 3))
        patterns = [lbp_histogram(grey, getattr(self, f"lbp{i}")).sqrt() for i in range(self.lbp_scales)]
        return torch.cat([energy.mean((2, 3)), energy.std((2, 3)), oriented, strength, *patterns], 1)
