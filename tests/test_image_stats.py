"""Colour and texture statistics (scrapvision/models/image_stats.py) and scrap_cls's probe with them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from scrapvision.models.image_stats import ColourTextureStats, rgb_to_hsv, rgb_to_lab


def random_photo(seed: int = 0, shape: tuple[int, int] = (40, 50)) -> tuple[np.ndarray, torch.Tensor]:
    image = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    return image, torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def normalised(stats: ColourTextureStats, rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - stats.mean) / stats.std


def test_colour_spaces_match_opencv():
    image, rgb = random_photo()
    reference = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in [0, 1]
    hsv = rgb_to_hsv(rgb)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(hsv[..., 0] * 360, reference[..., 0], atol=1e-3)
    np.testing.assert_allclose(hsv[..., 1:], reference[..., 1:], atol=1e-5)
    lab = rgb_to_lab(rgb)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(lab, cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2LAB), atol=0.5)


def test_histograms_are_distributions_and_orientations_land_in_their_bins():
    stats = ColourTextureStats(64)
    _, rgb = random_photo(1, (64, 64))
    features = stats(normalised(stats, rgb))[0]
    assert features.shape == (stats.dim,)
    h, s, v = stats.hsv_bins
    assert float(features[:h * s * v].pow(2).sum()) == pytest.approx(1.0, abs=1e-5)  # square-rooted fractions
    orientation = slice(stats.dim - stats.magnitude_bins - stats.orientation_bins, stats.dim - stats.magnitude_bins)
    assert float(features[orientation].sum()) == pytest.approx(1.0, abs=1e-5)
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
    across = stats(normalised(stats, ramp))[0, orientation]  # brightness grows along x: gradient at 0 degrees
    down = stats(normalised(stats, ramp.transpose(2, 3)))[0, orientation]  # along y: 90 degrees
    assert int(across.argmax()) == 0 and float(across[0]) > 0.99
    assert int(down.argmax()) == stats.orientation_bins // 2 and float(down.max()) > 0.99


def test_a_red_photo_and_a_grey_one_differ_in_colour_not_in_texture():
    stats = ColourTextureStats(32)
    red = torch.zeros(1, 3, 32, 32)
    red[:, 0] = 0.8
    grey = torch.full((1, 3, 32, 32), 0.8 * 0.299)  # the same luma, so the grey image is identical
    a, b = stats(normalised(stats, red))[0], stats(normalised(stats, grey))[0]
    colour = stats.dim - 2 * stats.gabor.shape[0] - stats.orientation_bins - stats.magnitude_bins
    assert float((a[:colour] - b[:colour]).abs().max()) > 0.5
    torch.testing.assert_close(a[colour:], b[colour:], atol=1e-4, rtol=0)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("lbp", [False, True])
def test_probe_with_image_stats_exports_and_runs_like_torch(exporter, lbp, tmp_path, one_thread):
    from scrapvision.api import build_task, get_task_class
    from scrapvision.backbones import backbone_channels
    from scrapvision.engines import OnnxEngine, parity_example, parity_gap
    from scrapvision.export import export_onnx

    overrides = [*get_task_class("scrap_cls").smoke_overrides, "model.variant=probe", "model.image_stats=true",
                 f"model.image_stats_lbp={str(lbp).lower()}"]
    task = build_task("scrap_cls", overrides=overrides)
    torch.manual_seed(0)
    model = task.build_model().eval()
    assert model.head.in_features == sum(backbone_channels(model.backbone)) + model.image_stats.dim
    assert model.image_stats.lbp_scales == (3 if lbp else 0)
    engine = OnnxEngine(export_onnx(task, model, tmp_path / "probe.onnx", exporter=exporter), threads=1)
    assert parity_gap(model, engine, parity_example(task)) < 1e-3


def test_statistics_stay_fp32_under_bf16_autocast():
    """bf16 keeps 8 significant bits: a histogram of 352 px photos counted in it would lose most of its bins."""
    stats = ColourTextureStats(64)
    _, rgb = random_photo(2, (64, 64))
    x = normalised(stats, rgb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = stats(x)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, stats(x), rtol=0, atol=1e-6)


def lbp_reference(grey: np.ndarray, radius: float, points: int = 8) -> np.ndarray:
    """riu2 codes by the definition, pixel by pixel: bilinear neighbours on the circle, edges replicated, as
    bright as the centre within half an 8-bit grey level."""
    h, w = grey.shape
    codes = np.zeros((h, w), dtype=int)

    def at(y: float, x: float) -> float:
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        value = 0.0
        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                value += wy * wx * grey[min(max(yy, 0), h - 1), min(max(xx, 0), w - 1)]
        return value

    for i in range(h):
        for j in range(w):
            bits = [at(round(i - radius * np.sin(2 * np.pi * k / points), 9), round(j + radius * np.cos(2 * np.pi * k / points), 9))
                    >= grey[i, j] - 0.5 / 255 for k in range(points)]
            changes = sum(bits[k] != bits[k - 1] for k in range(points))
            codes[i, j] = sum(bits) if changes <= 2 else points + 1
    return np.bincount(codes.ravel(), minlength=points + 2) / codes.size


@pytest.mark.parametrize("radius", [1.0, 1.5, 2.75])
def test_local_binary_patterns_match_their_definition(radius):
    from scrapvision.models.image_stats import lbp_histogram, neighbour_kernels

    grey = np.random.default_rng(1).random((17, 23))  # float64 both sides: no near-tie decided by rounding
    ours = lbp_histogram(torch.from_numpy(grey)[None, None], neighbour_kernels(radius).double())[0].numpy()
    np.testing.assert_allclose(ours, lbp_reference(grey, radius), atol=1e-6)
    flat = lbp_histogram(torch.full((1, 1, 9, 9), 0.5), neighbour_kernels(radius))[0]
    assert flat[8] == 1  # every neighbour as bright as the centre: all ones, the uniform pattern 8


def test_local_binary_patterns_are_an_option_of_the_statistics():
    _, rgb = random_photo(2, (64, 64))
    plain, with_lbp = ColourTextureStats(64), ColourTextureStats(64, lbp=True)
    a, b = plain(normalised(plain, rgb)), with_lbp(normalised(with_lbp, rgb))
    assert with_lbp.dim == plain.dim + 30 and b.shape == (1, with_lbp.dim)
    torch.testing.assert_close(b[:, :plain.dim], a)
    patterns = b[:, plain.dim:].reshape(3, 10) ** 2  # square-rooted fractions of pixels, per radius
    torch.testing.assert_close(patterns.sum(1), torch.ones(3))
