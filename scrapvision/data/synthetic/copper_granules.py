"""Physics-grounded synthetic copper-scrap granules: the embedded benchmark of the ``canet`` head.

No real copper-granule data set is public, so this generator stands in for one. A *sample* is a bag of
granules: copper plus ``I`` impurity types (up to 9), each with its own density, colour/texture, size and
shape distribution. The true copper content is copper mass / total mass, summed over the granule volumes
times the material densities of the whole bag, so it is known exactly. Each *stir* renders a top-down
photo of a random subset of the bag (dead-leaves occlusion, directional light with shading, specular
metals, cast shadows, camera gain/white balance/vignetting/noise) and the binary copper mask of the
visible copper pixels. Because the camera sees projected areas while the content is a mass ratio, the
trivial "copper area fraction" estimate is biased: light impurities (plastic, wood) cover far more area
per gram than copper. Everything is deterministic for ``(seed, split, index)``.

On-disk format (what :mod:`scrapvision.data.copper_samples` reads): one folder per sample with
``images/stir_XX.png``, ``masks/stir_XX.png`` (255 = copper) and ``sample.json`` holding
``copper_content`` (mass fraction in [0, 1]) plus the bag's composition and per-image areas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ...checkpoint import atomic_write


@dataclass(frozen=True)
class Material:
    """One granule type. Sizes are in mm; ``thickness`` is height / width (1 = round wire, 0.3 = flake)."""

    name: str
    density: float  # g/cm^3
    colors: tuple[tuple[int, int, int], ...]  # RGB palette, one entry drawn per granule
    length_mm: float  # median long-axis length (log-normal)
    length_sigma: float
    aspect: tuple[float, float]  # long / short axis, uniform range
    thickness: float
    irregularity: float  # amplitude of the outline's low-order harmonics
    metallic: float  # 0..1, specular strength
    shininess: float
    texture: float  # amplitude of fine surface noise
    pattern: str = ""  # "" | "tarnish" | "rust" | "grain" | "glass"
    mix_weight: float = 1.0  # mean share of the impurity mass (impurities only)


COPPER = Material("copper", 8.96, ((200, 115, 62), (215, 130, 75), (185, 104, 58), (165, 92, 55)),
                  3.2, 0.30, (1.8, 4.0), 1.0, 0.04, 0.85, 24.0, 0.05, "tarnish")

IMPURITIES: tuple[Material, ...] = (
    Material("brass", 8.50, ((200, 165, 85), (185, 150, 80), (175, 140, 95)),
             2.6, 0.30, (1.0, 2.2), 0.8, 0.15, 0.80, 24.0, 0.05, "", 0.20),
    Material("aluminium", 2.70, ((195, 197, 202), (175, 178, 185), (160, 162, 168)),
             3.0, 0.35, (1.0, 2.2), 0.35, 0.20, 0.70, 14.0, 0.06, "", 0.12),
    Material("iron", 7.87, ((95, 92, 90), (120, 116, 112), (104, 94, 86)),
             2.8, 0.35, (1.2, 3.0), 0.6, 0.20, 0.45, 10.0, 0.10, "rust", 0.15),
    Material("plastic", 1.30, ((200, 45, 40), (40, 75, 170), (220, 200, 60), (40, 140, 65), (230, 230, 222),
                               (35, 35, 35)),
             3.6, 0.30, (2.0, 5.0), 0.6, 0.08, 0.10, 8.0, 0.03, "", 0.12),
    Material("rubber", 1.50, ((38, 38, 40), (60, 56, 52)),
             2.8, 0.30, (1.0, 1.8), 0.8, 0.20, 0.03, 4.0, 0.10, "", 0.06),
    Material("glass", 2.50, ((150, 185, 160), (205, 212, 208), (125, 95, 55)),
             2.4, 0.35, (1.0, 1.8), 0.5, 0.30, 0.50, 40.0, 0.03, "glass", 0.05),
    Material("wood", 0.60, ((178, 142, 98), (150, 116, 78), (196, 166, 122)),
             4.2, 0.30, (3.0, 6.0), 0.5, 0.10, 0.02, 4.0, 0.06, "grain", 0.03),
    Material("solder", 8.40, ((150, 152, 156), (128, 130, 136)),
             1.8, 0.25, (1.0, 1.3), 1.0, 0.05, 0.60, 18.0, 0.04, "", 0.12),
    Material("oxide", 6.00, ((50, 38, 32), (82, 52, 40), (40, 40, 42)),
             1.6, 0.35, (1.0, 2.0), 0.5, 0.30, 0.10, 6.0, 0.15, "", 0.15),
)

TRAY_RGB = np.array([52, 50, 48], np.float32)
_ANGLES = np.linspace(0, 2 * np.pi, 32, endpoint=False)
_VOLUME_FACTOR = 0.7  # volume = factor * projected area * thickness (between a dome, 2/3, and a cylinder, pi/4)


@dataclass(frozen=True)
class GeneratorSpec:
    """Knobs of the benchmark. ``impurity_types`` takes the first I materials of :data:`IMPURITIES`."""

    image_size: int = 128  # rendered pixels per side
    field_mm: float = 20.0  # camera field of view per side
    stirs: int = 8  # images per sample
    impurity_types: int = 9
    content_range: tuple[float, float] = (0.60, 0.99)  # target copper mass fraction, drawn uniformly
    impurity_concentration: float = 2.0  # Dirichlet total concentration of the impurity mix (low = few types)
    bag_grams: float = 40.0  # mass of the whole sample (a scoop: ~1100 copper granules when pure)
    coverage: float = 2.2  # projected area drawn per stir, in (extended) camera fields


@dataclass
class GeneratedSample:
    """One bag: its stirs, copper masks, exact copper mass fraction and bookkeeping for the JSON."""

    images: list[np.ndarray]  # HxWx3 uint8
    masks: list[np.ndarray]  # HxW uint8, 255 = copper
    copper_content: float
    info: dict
    material_maps: list[np.ndarray]  # HxW uint8: 0 = tray, 1 = copper, 2.. = impurities (see render_stir)


def materials(impurity_types: int = 9) -> tuple[Material, ...]:
    if not 1 <= impurity_types <= len(IMPURITIES):
        raise ValueError(f"impurity_types must be in 1..{len(IMPURITIES)}, got {impurity_types}")
    return (COPPER, *IMPURITIES[:impurity_types])


# ----------------------------------------------------------------------------------------- the bag
def _granules(mat: Material, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Shape, size, thickness and look of ``n`` granules of one material (arrays of length n)."""
    length = mat.length_mm * np.exp(mat.length_sigma * rng.standard_normal(n))
    width = length / rng.uniform(*mat.aspect, n)
    harmonics = mat.irregularity * rng.standard_normal((n, 3)) / np.array([1.0, 1.5, 2.0])
    phases = rng.uniform(0, 2 * np.pi, (n, 3))
    thickness = width * mat.thickness * rng.uniform(0.8, 1.2, n)
    palette = np.asarray(mat.colors, np.float32)
    color = palette[rng.integers(len(palette), size=n)] * rng.uniform(0.85, 1.12, (n, 1))
    return {"a": length / 2, "b": width / 2, "harm": harmonics, "phase": phases, "t": thickness,
            "color": color.astype(np.float32), "spot": rng.uniform(0, 1, n)}


def _outline(g: dict[str, np.ndarray], angles: np.ndarray = _ANGLES) -> np.ndarray:
    """Radius (mm) of each granule's outline at ``angles``: an ellipse with low-order harmonic bumps."""
    ct, st = np.cos(angles), np.sin(angles)
    ellipse = 1.0 / np.sqrt((ct / g["a"][:, None]) ** 2 + (st / g["b"][:, None]) ** 2)
    k = np.array([2.0, 3.0, 5.0])
    bumps = (g["harm"][:, :, None] * np.cos(k[None, :, None] * angles + g["phase"][:, :, None])).sum(1)
    return ellipse * np.clip(1.0 + bumps, 0.5, 1.6)


def _area_mm2(g: dict[str, np.ndarray]) -> np.ndarray:
    r = _outline(g)
    return 0.5 * (r**2).mean(1) * 2 * np.pi


@lru_cache(maxsize=32)
def _mean_area_and_mass(mat: Material) -> tuple[float, float]:
    """Expected projected area (mm^2) and mass (g) of one granule, by a fixed Monte-Carlo draw."""
    g = _granules(mat, 4000, np.random.default_rng(12345))
    area = _area_mm2(g)
    return float(area.mean()), float((area * g["t"] * _VOLUME_FACTOR * mat.density / 1000).mean())


def make_bag(spec: GeneratorSpec, rng: np.random.Generator) -> dict[str, np.ndarray | float | dict]:
    """Draw a target copper share and an impurity mix, fill a bag with granules, weigh it exactly."""
    mats = materials(spec.impurity_types)
    target = rng.uniform(*spec.content_range)
    weights = np.array([m.mix_weight for m in mats[1:]])
    mix = rng.dirichlet(spec.impurity_concentration * weights / weights.sum())
    mass_share = np.concatenate([[target], (1 - target) * mix])
    stats = np.array([_mean_area_and_mass(m) for m in mats])  # (I+1, 2): area, mass per granule
    counts = rng.poisson(spec.bag_grams * mass_share / stats[:, 1])
    counts[0] = max(counts[0], 1)
    parts = [(_granules(m, int(c), rng), k) for k, (m, c) in enumerate(zip(mats, counts)) if c > 0]
    bag = {key: np.concatenate([p[key] for p, _ in parts]) for key in parts[0][0]}
    bag["material"] = np.concatenate([np.full(len(p["a"]), k) for p, k in parts])
    bag["area"] = _area_mm2(bag)
    density = np.array([m.density for m in mats])[bag["material"]]
    mass = bag["area"] * bag["t"] * _VOLUME_FACTOR * density / 1000
    by_material = np.bincount(bag["material"], weights=mass, minlength=len(mats))
    bag["copper_content"] = float(by_material[0] / by_material.sum())
    bag["mass_fractions"] = {m.name: float(v / by_material.sum()) for m, v in zip(mats, by_material)}
    bag["counts"] = {m.name: int(c) for m, c in zip(mats, np.bincount(bag["material"], minlength=len(mats)))}
    return bag


# ----------------------------------------------------------------------------------------- one stir
def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    field = cv2.GaussianBlur(rng.standard_normal((size, size)).astype(np.float32), (0, 0), sigma)
    return field / (field.std() + 1e-6)


def _place(bag: dict, spec: GeneratorSpec, rng: np.random.Generator, px_per_mm: float) -> dict[str, np.ndarray]:
    """Stir: a random subset of the bag lands on top, at random positions and angles, in random z-order."""
    size = spec.image_size
    margin = min(0.15 * size, float(np.percentile(bag["a"], 95)) * px_per_mm)
    extent = size + 2 * margin
    order = rng.permutation(len(bag["a"]))
    cum = np.cumsum(bag["area"][order] * px_per_mm**2)
    take = order[: max(1, int(np.searchsorted(cum, spec.coverage * extent**2)))]
    drawn = {key: bag[key][take] for key in ("a", "b", "harm", "phase", "t", "color", "spot", "material")}
    for key in ("a", "b", "t"):
        drawn[key] = drawn[key] * px_per_mm
    n = len(take)
    drawn["cx"] = rng.uniform(-margin, size + margin, n)
    drawn["cy"] = rng.uniform(-margin, size + margin, n)
    drawn["phi"] = rng.uniform(0, 2 * np.pi, n)
    return {k: (x if k == "material" else x.astype(np.float32)) for k, x in drawn.items()}


def _id_map(drawn: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Paint granule outlines in z-order; pixel value = 1 + index of the top granule (0 = tray)."""
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    r = _outline(drawn, angles)  # (n, 24) px
    theta = angles[None, :] + drawn["phi"][:, None]
    pts = np.stack([drawn["cx"][:, None] + r * np.cos(theta), drawn["cy"][:, None] + r * np.sin(theta)], -1)
    pts = np.round(pts * 16).astype(np.int32)  # 4 fractional bits (cv2 ``shift``)
    ids = np.zeros((size, size), np.int32)
    for i, poly in enumerate(pts):
        cv2.fillPoly(ids, [poly], i + 1, lineType=cv2.LINE_8, shift=4)
    return ids


_PATTERNS = ("", "tarnish", "rust", "grain", "glass")


def _shade(drawn: dict, ids: np.ndarray, mats: tuple[Material, ...],
           rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float]]:
    """Per-pixel colour of the visible granules: dome normals, diffuse + specular light, surface patterns."""
    size = ids.shape[0]
    fg = ids > 0
    g = ids[fg] - 1
    ys, xs = np.nonzero(fg)
    cos_phi, sin_phi = np.cos(drawn["phi"]).astype(np.float32), np.sin(drawn["phi"]).astype(np.float32)
    dx, dy = xs - drawn["cx"][g], ys - drawn["cy"][g]
    u = dx * cos_phi[g] + dy * sin_phi[g]
    v = -dx * sin_phi[g] + dy * cos_phi[g]
    theta = np.arctan2(v, u)
    radius = _outline_at({key: drawn[key][g] for key in ("a", "b", "harm", "phase")}, theta)
    rho = np.clip(np.hypot(u, v) / radius, 0, 1)
    slope = np.clip(drawn["t"] / (2 * drawn["b"]), 0.15, 1.0)[g] * rho
    cos_t, sin_t = np.cos(theta), np.sin(theta)  # radial direction in the granule frame -> image frame
    normal = np.stack([slope * (cos_t * cos_phi[g] - sin_t * sin_phi[g]),
                       slope * (cos_t * sin_phi[g] + sin_t * cos_phi[g]), np.sqrt(1 - rho**2) + 0.05], -1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(35), np.radians(70))
    light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], np.float32)
    half = (light + [0, 0, 1]) / np.linalg.norm(light + [0, 0, 1])
    props = np.array([[m.metallic, m.shininess, m.texture, _PATTERNS.index(m.pattern)] for m in mats], np.float32)
    per_granule = props[drawn["material"]]
    metallic, shininess, texture, pattern = (per_granule[g, i] for i in range(4))
    diffuse = np.clip(normal @ light.astype(np.float32), 0, 1)
    spec = metallic * np.clip(normal @ half.astype(np.float32), 0, 1) ** shininess
    color = drawn["color"][g] * (1 + texture * rng.standard_normal(len(g)).astype(np.float32))[:, None]
    color = _patterns(color, pattern.astype(int), drawn["spot"][g], v, _smooth_noise(rng, size, 1.5)[fg])
    lit = color * (0.35 + 0.65 * diffuse)[:, None] + spec[:, None] * (0.5 * 255 + 0.5 * color)
    image = np.empty((size, size, 3), np.float32)
    image[:] = TRAY_RGB * (1 + 0.08 * _smooth_noise(rng, size, 3.0))[..., None]
    image[fg] = lit
    return image, (az, el)


def _outline_at(g: dict[str, np.ndarray], theta: np.ndarray) -> np.ndarray:
    """Outline radius of granule i at angle theta_i (one angle per row, unlike :func:`_outline`)."""
    ellipse = 1.0 / np.sqrt((np.cos(theta) / g["a"]) ** 2 + (np.sin(theta) / g["b"]) ** 2)
    k = np.array([2.0, 3.0, 5.0], np.float32)
    bumps = (g["harm"] * np.cos(k[None, :] * theta[:, None] + g["phase"])).sum(1)
    return ellipse * np.clip(1.0 + bumps, 0.5, 1.6)


def _patterns(color: np.ndarray, pattern: np.ndarray, spot: np.ndarray, v: np.ndarray,
              blotch: np.ndarray) -> np.ndarray:
    """Tarnish on copper, rust on iron (both brown: the classic confusion), wood grain, see-through glass."""
    stains = {"tarnish": np.array([95, 58, 42], np.float32), "rust": np.array([150, 78, 40], np.float32)}
    for name, stain in stains.items():
        sel = (pattern == _PATTERNS.index(name)) & (blotch > 2.0 - 1.6 * spot)
        color[sel] = 0.4 * color[sel] + 0.6 * stain
    grain = pattern == _PATTERNS.index("grain")
    color[grain] *= (1 + 0.18 * np.sin(v[grain] * 2.2 + 7 * spot[grain]))[:, None]
    glass = pattern == _PATTERNS.index("glass")
    color[glass] = 0.55 * color[glass] + 0.45 * TRAY_RGB
    return color


def _cast_shadows(image: np.ndarray, ids: np.ndarray, az: float, el: float, height_px: float) -> np.ndarray:
    """Darken pixels that a higher granule (or any granule, for the tray) hides from the light."""
    shift = height_px / np.tan(el)
    toward_light = np.float32([[1, 0, shift * np.cos(az)], [0, 1, shift * np.sin(az)]])
    size = ids.shape[0]
    # WARP_INVERSE_MAP: dst(x) = src(x + d), i.e. the granule id seen one shadow length toward the light
    occluder = cv2.warpAffine(ids.astype(np.float32), toward_light, (size, size),
                              flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    image[occluder > ids] *= 0.55
    return image


def _camera(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, uneven light, vignetting, optical blur and sensor noise."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    tilt = rng.uniform(-0.15, 0.15, 2)
    cx, cy = rng.uniform(-0.15, 0.15, 2)
    vignette = 1 - rng.uniform(0.1, 0.35) * ((xx - cx) ** 2 + (yy - cy) ** 2) * 2
    light = (1 + tilt[0] * xx + tilt[1] * yy) * vignette * rng.uniform(0.8, 1.2)
    image = image * light[..., None] * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 0.8))
    image = image + rng.normal(0, rng.uniform(1.5, 4.0), image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def render_stir(bag: dict, spec: GeneratorSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """One top-down photo of a stirred bag: (RGB image, material map, area share of each material). The map
    (uint8, HxW) numbers the pixels as the areas are ordered: 0 = tray, 1 = copper, 2.. = the impurities."""
    mats = materials(spec.impurity_types)
    px_per_mm = spec.image_size / spec.field_mm * rng.uniform(0.93, 1.07)  # camera height varies a little
    drawn = _place(bag, spec, rng, px_per_mm)
    ids = _id_map(drawn, spec.image_size)
    image, (az, el) = _shade(drawn, ids, mats, rng)
    image = _cast_shadows(image, ids, az, el, 0.5 * px_per_mm)
    material_map = np.where(ids > 0, drawn["material"][np.maximum(ids - 1, 0)] + 1, 0).astype(np.uint8)
    shares = np.bincount(material_map.ravel(), minlength=len(mats) + 1) / material_map.size
    areas = {"tray": float(shares[0]), **{m.name: float(s) for m, s in zip(mats, shares[1:])}}
    return _camera(image, rng), material_map, areas


# ----------------------------------------------------------------------------------------- samples
SPLITS = {"train": 0, "val": 1, "test": 2}


def generate_sample(spec: GeneratorSpec, seed: int, index: int, split: str = "train") -> GeneratedSample:
    """Bag ``index`` of ``split``: the same arguments always give the same pixels and the same content."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    bag = make_bag(spec, rng)
    images, maps, areas = [], [], []
    for _ in range(spec.stirs):
        image, material_map, area = render_stir(bag, spec, rng)
        images.append(image)
        maps.append(material_map)
        areas.append(area)
    info = {"copper_content": bag["copper_content"], "mass_fractions": bag["mass_fractions"],
            "granule_counts": bag["counts"], "generator": {"seed": seed, "split": split, "index": index,
                                                           **{k: getattr(spec, k) for k in spec.__dataclass_fields__}},
            "images": [{"file": f"stir_{j:02d}.png", "copper_area": a["copper"], "area_by_material": a}
                       for j, a in enumerate(areas)]}
    masks = [np.where(m == 1, 255, 0).astype(np.uint8) for m in maps]
    return GeneratedSample(images, masks, bag["copper_content"], info, maps)


def write_sample(sample: GeneratedSample, folder: str | Path) -> Path:
    """Write one sample in the on-disk format read by :mod:`scrapvision.data.copper_samples`."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for entry, image, mask in zip(sample.info["images"], sample.images, sample.masks):
        cv2.imwrite(str(folder / "images" / entry["file"]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / "masks" / entry["file"]), mask)
    with atomic_write(folder / "sample.json", "w") as handle:
        json.dump(sample.info, handle, indent=1)
    return folder


def write_dataset(root: str | Path, spec: GeneratorSpec, counts: dict[str, int], seed: int = 0) -> Path:
    """``root/<split>/sample_XXXXX/`` for each split in ``counts`` (e.g. ``{"train": 200, "test": 50}``)."""
    root = Path(root)
    for split, count in counts.items():
        for index in range(count):
            write_sample(generate_sample(spec, seed, index, split), root / split / f"sample_{index:05d}")
    return root


@dataclass(frozen=True)
class RenderedSplit:
    """One split in memory at model resolution (what the ``canet`` synthetic default trains on)."""

    images: tuple[np.ndarray, ...]  # per sample: uint8 [K, size, size, 3]
    masks: tuple[np.ndarray, ...]  # per sample: uint8 [K, size, size], copper fraction of each pixel x 255
    areas: tuple[np.ndarray, ...]  # per sample: copper share of each full-resolution mask [K]
    contents: tuple[float, ...]  # exact copper mass fraction of each bag
    material_areas: tuple[np.ndarray, ...]  # per sample: [K, I+2] visible share of tray, copper, impurities


@lru_cache(maxsize=6)
def render_split(spec: GeneratorSpec, seed: int, split: str, count: int, size: int) -> RenderedSplit:
    """Render ``count`` bags of ``split`` and downsize the photos to ``size``. Cached, so the runs of a
    benchmark sweep in one process render each split once."""
    names = ["tray", *(m.name for m in materials(spec.impurity_types))]
    images, masks, areas, contents, material_areas = [], [], [], [], []
    for index in range(count):
        sample = generate_sample(spec, seed, index, split)
        images.append(np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in sample.images]))
        masks.append(np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) for m in sample.masks]))
        areas.append(np.array([(m > 127).mean() for m in sample.masks], np.float32))
        contents.append(sample.copper_content)
        material_areas.append(np.array([[e["area_by_material"][n] for n in names] for e in sample.info["images"]],
                                       np.float32))
    return RenderedSplit(tuple(images), tuple(masks), tuple(areas), tuple(contents), tuple(material_areas))
