"""Synthetic aerial scenes: procedural ground, items laid out as mines really lie, look-alikes, camera.

A scene is a frozen spec (seed, GSD, size, sun, placed items). Any rectangular block of it renders on its
own and identically whichever block asks, so tiles and huge mosaics come from one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from ordnance.datasets.synth.items import CATALOG, LOOKALIKES, render_item
from ordnance.datasets.synth.noise import cell_rngs, fractal_noise, hash_uniform, value_noise

TERRAINS = ("green_grass", "dry_grass", "bare_soil", "ploughed", "gravel", "sand")
_BASE = {
    "green_grass": (78, 104, 52),
    "dry_grass": (150, 136, 88),
    "bare_soil": (120, 96, 72),
    "ploughed": (104, 82, 62),
    "gravel": (138, 132, 122),
    "sand": (188, 170, 132),
}
_BLADES = {
    "green_grass": ((60, 96, 40), (96, 128, 60), (48, 76, 34)),
    "dry_grass": ((170, 154, 100), (136, 120, 76), (190, 176, 124)),
}
BIOMES = {  # terrain weights of each biome
    "meadow": {"green_grass": 1.0, "dry_grass": 0.4, "bare_soil": 0.25},
    "steppe": {"dry_grass": 1.0, "green_grass": 0.3, "bare_soil": 0.4, "gravel": 0.2},
    "farmland": {"ploughed": 1.0, "bare_soil": 0.5, "green_grass": 0.3},
    "arid": {"sand": 1.0, "gravel": 0.6, "dry_grass": 0.3},
    "roadside": {"gravel": 1.0, "bare_soil": 0.6, "dry_grass": 0.5, "green_grass": 0.3},
}


@dataclass(frozen=True)
class PlacedItem:
    """An item in scene pixels: centre (x_px, y_px), rotation, burial (share hidden), its own seed, and the
    layout pattern it belongs to (a row, a cluster, an ellipse; -1: none), which is its minefield."""

    name: str
    x_px: float
    y_px: float
    angle: float
    buried: float
    seed: int
    pattern: int = -1


@dataclass(frozen=True)
class Camera:
    blur_sigma_px: float = 0.6
    noise_sigma: float = 3.0
    jpeg_quality: int = 90
    exposure: float = 1.0


@dataclass(frozen=True)
class SceneSpec:
    """A whole scene. Sizes in pixels at ``gsd_m`` metres per pixel."""

    seed: int
    gsd_m: float
    width_px: int
    height_px: int
    biome: str
    sun_xy: tuple[float, float]
    items: tuple[PlacedItem, ...]
    camera: Camera = field(default_factory=Camera)
    lookalikes_per_m2: float = 0.08
    shrubs_per_m2: float = 0.02
    track: tuple[float, float, float, float] | None = None  # (y0_m, slope, amplitude_m, wavelength_m)


def _weights(x0: int, y0: int, w: int, h: int, spec: SceneSpec) -> dict[str, np.ndarray]:
    cell = 6.0 / spec.gsd_m
    raw = {}
    for k, (name, bias) in enumerate(BIOMES[spec.biome].items()):
        n = fractal_noise(x0, y0, w, h, cell, spec.seed * 31 + k, octaves=3)
        raw[name] = np.exp(6.0 * (n + 0.35 * bias))
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def _ground(x0: int, y0: int, w: int, h: int, spec: SceneSpec) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    gsd, seed = spec.gsd_m, spec.seed
    weights = _weights(x0, y0, w, h, spec)
    image = np.zeros((h, w, 3), np.float32)
    detail = fractal_noise(x0, y0, w, h, 0.8 / gsd, seed + 1, octaves=5)
    fine = value_noise(x0, y0, w, h, max(1.5, 0.02 / gsd), seed + 2)
    for name, weight in weights.items():
        base = np.array(_BASE[name], np.float32)
        tone = 0.75 + 0.5 * detail + (0.25 if name in ("gravel", "sand") else 0.15) * (fine - 0.5)
        if name == "ploughed":
            xs, ys = np.meshgrid(np.arange(x0, x0 + w) * gsd, np.arange(y0, y0 + h) * gsd)
            period = 0.6 + 0.2 * ((seed % 7) / 7)
            furrow = np.sin(2 * np.pi * (xs * 0.8 + ys * 0.6) / period)
            tone = tone * (0.85 + 0.15 * furrow)
        image += weight[..., None] * tone[..., None] * base
    grain = hash_uniform(*np.meshgrid(np.arange(x0, x0 + w), np.arange(y0, y0 + h)), seed + 3)
    image *= (0.9 + 0.2 * grain.astype(np.float32))[..., None]
    if spec.track is not None:
        y_m, slope, amp, wave = spec.track
        xs_m = np.arange(x0, x0 + w) * gsd
        centre = y_m + slope * xs_m + amp * np.sin(2 * np.pi * xs_m / wave)
        ys_m = np.arange(y0, y0 + h)[:, None] * gsd
        for rut in (-0.8, 0.8):
            d = np.abs(ys_m - (centre + rut)[None, :])
            rut_w = np.clip(1.0 - d / 0.22, 0, 1) ** 0.7
            image = image * (1 - rut_w[..., None]) + rut_w[..., None] * np.array(_BASE["bare_soil"]) * (
                0.8 + 0.3 * detail[..., None]
            )
            for name in ("green_grass", "dry_grass"):
                if name in weights:
                    weights[name] = weights[name] * (1 - rut_w)
    return image, weights


def _grass(image, weights, x0, y0, spec: SceneSpec) -> None:
    """Grass as strokes: hashed per-pixel noise smeared along a few blade directions (seam-free)."""
    gsd = spec.gsd_m
    h, w = image.shape[:2]
    gx, gy = np.meshgrid(np.arange(x0, x0 + w), np.arange(y0, y0 + h))
    length = max(3, int(round(0.05 / gsd)))
    for k, name in enumerate(("green_grass", "dry_grass")):
        if name not in weights:
            continue
        white = (hash_uniform(gx, gy, spec.seed * 7 + k) > 0.88).astype(np.float32)
        strokes = np.zeros((h, w), np.float32)
        for angle in np.linspace(0, np.pi, 5)[:-1] + 0.3 * k:
            kernel = np.zeros((2 * length + 1, 2 * length + 1), np.float32)
            c = length
            cv2.line(
                kernel,
                (int(c - np.cos(angle) * length), int(c - np.sin(angle) * length)),
                (int(c + np.cos(angle) * length), int(c + np.sin(angle) * length)),
                1.0,
                1,
                cv2.LINE_AA,
            )
            strokes = np.maximum(strokes, cv2.filter2D(white, -1, kernel / kernel.max(), borderType=cv2.BORDER_REFLECT))
        shade = hash_uniform(gx // 3, gy // 3, spec.seed * 5 + k)
        shades = np.array(_BLADES[name], np.float32)
        colour = np.where(
            (shade < 0.45)[..., None], shades[0], np.where((shade < 0.8)[..., None], shades[1], shades[2])
        )
        cover = np.clip(strokes, 0, 1) * weights[name] * 0.9
        image[:] = image * (1 - cover[..., None]) + colour * cover[..., None]


def _blades_over(image, weights, top, left, h, w, spec: SceneSpec, rng) -> None:
    """A few tall blades drawn over an item where grass grows (partial occlusion)."""
    grass = sum(weights[n] for n in ("green_grass", "dry_grass") if n in weights)
    if np.isscalar(grass):
        return
    cy, cx = min(max(top + h // 2, 0), image.shape[0] - 1), min(max(left + w // 2, 0), image.shape[1] - 1)
    n = rng.poisson(12 * float(grass[cy, cx]) * max(1.0, h * w / 400))
    length = 0.08 / spec.gsd_m
    for _ in range(n):
        px, py = left + rng.uniform(0, w), top + rng.uniform(0, h)
        angle = rng.uniform(0, np.pi)
        end = (px + length * np.cos(angle), py + length * np.sin(angle))
        shade = np.array(_BLADES["green_grass" if rng.random() < 0.5 else "dry_grass"][rng.integers(3)], np.float32)
        cv2.line(
            image,
            (int(px * 4), int(py * 4)),
            (int(end[0] * 4), int(end[1] * 4)),
            shade.tolist(),
            max(1, round(0.004 / spec.gsd_m)),
            cv2.LINE_AA,
            shift=2,
        )


def _shadow(image: np.ndarray, alpha: np.ndarray, top: int, left: int, offset: np.ndarray, strength: float):
    h, w = image.shape[:2]
    sh = np.zeros((h, w), np.float32)
    dy, dx = int(round(top + offset[1])), int(round(left + offset[0]))
    _paste(sh, alpha, dy, dx, np.maximum)
    if sh.any():
        sh = cv2.GaussianBlur(sh, (0, 0), _shadow_sigma(offset))
        image *= (1 - strength * sh)[..., None]


def _shadow_sigma(offset: np.ndarray) -> float:
    return max(0.6, float(np.abs(offset).max()) / 3)


def _paste(target, patch, top, left, op):
    h, w = target.shape[:2]
    ph, pw = patch.shape[:2]
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + ph, h), min(left + pw, w)
    if t0 >= t1 or l0 >= l1:
        return False
    region = target[t0:t1, l0:l1]
    target[t0:t1, l0:l1] = op(region, patch[t0 - top : t1 - top, l0 - left : l1 - left])
    return True


def _composite(image, x0, y0, spec: SceneSpec, placed: PlacedItem, boxes: list | None, weights) -> None:
    item = CATALOG[placed.name]
    rng = np.random.default_rng(placed.seed)
    stamp = render_item(item, spec.gsd_m, placed.angle, spec.sun_xy, rng)
    h, w = stamp.alpha.shape
    top, left = int(round(placed.y_px - y0 - h / 2)), int(round(placed.x_px - x0 - w / 2))
    if top > image.shape[0] or left > image.shape[1] or top + h < 0 or left + w < 0:
        return
    alpha = stamp.alpha.copy()
    if placed.buried > 0:  # soil covers part of the item: a noisy front
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        front = (xx * np.cos(placed.angle) + yy * np.sin(placed.angle)) + 0.15 * rng.random((h, w))
        cut = np.quantile(front[alpha > 0.25], placed.buried) if (alpha > 0.25).any() else 0
        alpha *= np.clip((front - cut) * 20, 0, 1)
    offset = -np.array(spec.sun_xy) * (stamp.height_px * 1.2 + 1)
    # Shadow and blend touch only the item's neighbourhood: its stamp and shadow, plus the shadow blur's
    # reach (zeros beyond it, so the blur there equals the whole-image blur).
    dy, dx = int(round(top + offset[1])), int(round(left + offset[0]))
    reach = int(np.ceil(4 * _shadow_sigma(offset))) + 2
    r0, r1 = max(min(top, dy) - reach, 0), min(max(top, dy) + h + reach, image.shape[0])
    c0, c1 = max(min(left, dx) - reach, 0), min(max(left, dx) + w + reach, image.shape[1])
    view = image[r0:r1, c0:c1]
    _shadow(view, alpha, top - r0, left - c0, offset, 0.45)
    blended = np.zeros_like(view[..., 0])
    _paste(blended, alpha, top - r0, left - c0, lambda region, patch: patch)
    canvas = np.zeros_like(view)
    _paste(canvas, stamp.colour, top - r0, left - c0, lambda region, patch: patch)
    view[:] = view * (1 - blended[..., None]) + canvas * blended[..., None]
    _blades_over(image, weights, top, left, h, w, spec, rng)
    if boxes is not None and item.label is not None:
        bx0, by0, bx1, by1 = stamp.box
        boxes.append((left + bx0, top + by0, left + bx1, top + by1, item.label, placed.name, placed.buried))


def _lookalikes(spec: SceneSpec, x0: int, y0: int, w: int, h: int) -> list[PlacedItem]:
    cell = max(64, int(2.0 / spec.gsd_m))
    found = []
    for cx, cy, rng in cell_rngs(x0, y0, w, h, cell, int(1.3 / spec.gsd_m), spec.seed * 11 + 3):
        for _ in range(rng.poisson(spec.lookalikes_per_m2 * (cell * spec.gsd_m) ** 2)):
            name = LOOKALIKES[rng.integers(len(LOOKALIKES))]
            if name == "stone" and rng.random() < 0.5:
                name = "stone"
            found.append(
                PlacedItem(
                    name,
                    rng.uniform(cx, cx + cell),
                    rng.uniform(cy, cy + cell),
                    rng.uniform(0, 2 * np.pi),
                    0.0,
                    int(rng.integers(2**31)),
                )
            )
    return found


def _shrubs(image, spec: SceneSpec, x0, y0) -> None:
    h, w = image.shape[:2]
    cell = max(64, int(3.0 / spec.gsd_m))
    for cx, cy, rng in cell_rngs(x0, y0, w, h, cell, int(1.5 / spec.gsd_m), spec.seed * 17 + 9):
        if rng.random() > spec.shrubs_per_m2 * (cell * spec.gsd_m) ** 2:
            continue
        r = rng.uniform(0.25, 0.8) / spec.gsd_m
        px, py = rng.uniform(cx, cx + cell) - x0, rng.uniform(cy, cy + cell) - y0
        size = int(2 * r) + 4
        local = np.zeros((size, size), np.float32)
        cv2.circle(local, (size // 2, size // 2), int(r), 1.0, -1, cv2.LINE_AA)
        edge = fractal_noise(px + x0, py + y0, size, size, max(r / 3, 2), int(rng.integers(1 << 30)), octaves=3)
        local *= np.clip((edge - 0.35) * 4, 0, 1)
        top, left = int(py - size / 2), int(px - size / 2)
        _shadow(image, local, top, left, -np.array(spec.sun_xy) * r * 0.6, 0.55)
        green = np.array((44, 66, 30), np.float32) * (0.7 + 0.6 * edge[..., None])
        canvas = np.zeros_like(image)
        mask = np.zeros(image.shape[:2], np.float32)
        _paste(canvas, green, top, left, lambda a, b: b)
        _paste(mask, local, top, left, lambda a, b: b)
        image[:] = image * (1 - mask[..., None]) + canvas * mask[..., None]


def render_block(spec: SceneSpec, x0: int, y0: int, width: int, height: int, margin: int = 16):
    """Render pixels [x0, x0 + width) x [y0, y0 + height) of a scene.

    Returns:
        image (height, width, 3) uint8 RGB, and the labelled items touching the block as a list of
        (x0, y0, x1, y1, class name, item name, buried share) in block pixels (unclipped).
    """
    bx, by, bw, bh = x0 - margin, y0 - margin, width + 2 * margin, height + 2 * margin
    image, weights = _ground(bx, by, bw, bh, spec)
    _grass(image, weights, bx, by, spec)
    _shrubs(image, spec, bx, by)
    reach = int(1.0 / spec.gsd_m)
    for placed in _lookalikes(spec, bx, by, bw, bh):
        _composite(image, bx, by, spec, placed, None, weights)
    boxes: list = []
    for placed in spec.items:
        if bx - reach < placed.x_px < bx + bw + reach and by - reach < placed.y_px < by + bh + reach:
            _composite(image, bx, by, spec, placed, boxes, weights)
    lighting = 0.85 + 0.3 * value_noise(bx, by, bw, bh, 25.0 / spec.gsd_m, spec.seed + 99)
    image *= (lighting * spec.camera.exposure)[..., None]
    image = _camera(image, spec, bx, by)
    image = image[margin : margin + height, margin : margin + width]
    boxes = [(b[0] - margin, b[1] - margin, b[2] - margin, b[3] - margin, *b[4:]) for b in boxes]
    return np.ascontiguousarray(image), boxes


def _camera(image: np.ndarray, spec: SceneSpec, bx: int, by: int) -> np.ndarray:
    cam = spec.camera
    if cam.blur_sigma_px > 0:
        image = cv2.GaussianBlur(image, (0, 0), cam.blur_sigma_px)
    rng = np.random.default_rng(abs(hash((spec.seed, bx, by))) % 2**32)
    image = image + rng.normal(0, cam.noise_sigma, image.shape).astype(np.float32)
    image = np.clip(image, 1, 255).astype(np.uint8)
    if cam.jpeg_quality < 100:
        _, encoded = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, cam.jpeg_quality])
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    return np.clip(image, 1, 255)
