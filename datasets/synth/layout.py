"""Where items lie: AT rows, AP clusters, PFM-1 scatter ellipses, submunition footprints, isolated UXO.

Extents are in metres, as in ../shared/domain/ORDNANCE.md; in small scenes (training tiles) each pattern is
cut to fit, so a tile holds a piece of a row or an ellipse, as a crop of a survey would.
"""

from __future__ import annotations

import numpy as np
from ordnance.datasets.synth.items import CATALOG
from ordnance.datasets.synth.scene import BIOMES, Camera, PlacedItem, SceneSpec

AP_TYPES = ("pmn", "pma2", "ozm72", "mon50")
UXO_TYPES = ("projectile", "mortar", "grenade", "ball")


def _at_row(rng, w, h):
    n = rng.integers(3, 12)
    spacing = rng.uniform(3.0, 6.0)
    angle = rng.uniform(0, np.pi)
    start = rng.uniform([0, 0], [w, h])
    kind = rng.choice(["tm62", "tm57"])
    steps = np.arange(n) - n / 2
    pts = start + np.c_[np.cos(angle) * steps * spacing, np.sin(angle) * steps * spacing]
    pts += rng.normal(0, 0.2, pts.shape)
    return [(kind, p) for p in pts]


def _ap_cluster(rng, w, h):
    centre = rng.uniform([0, 0], [w, h])
    n = rng.integers(3, 10)
    kind = AP_TYPES[rng.integers(len(AP_TYPES))]
    return [
        (kind if rng.random() < 0.8 else AP_TYPES[rng.integers(len(AP_TYPES))], p)
        for p in centre + rng.normal(0, rng.uniform(0.5, 2.0), (n, 2))
    ]


def _pfm_ellipse(rng, w, h):
    centre = rng.uniform([0, 0], [w, h])
    a, b = rng.uniform(5, 25), rng.uniform(3, 10)
    a, b = min(a, max(w, 2)), min(b, max(h, 2) / 2)
    n = int(rng.integers(10, 60) * min(1.0, a * b / 100) + rng.integers(3, 10))
    theta = rng.uniform(0, np.pi)
    local = rng.normal(0, 0.45, (n, 2)) * [a, b]
    rot = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
    return [("pfm1", p) for p in centre + local @ rot]


def _submunitions(rng, w, h):
    centre = rng.uniform([0, 0], [w, h])
    a, b = min(rng.uniform(50, 100), max(w, 2)), min(rng.uniform(20, 50), max(h, 2))
    n = int(rng.integers(20, 80) * min(1.0, a * b / 2000)) + int(rng.integers(2, 8))
    return [("submunition" if rng.random() < 0.75 else "ball", p) for p in centre + rng.normal(0, 0.4, (n, 2)) * [a, b]]


def _isolated_uxo(rng, w, h):
    n = rng.poisson(max(1.0, w * h / 400))
    return [(UXO_TYPES[rng.integers(len(UXO_TYPES))], p) for p in rng.uniform([0, 0], [w, h], (n, 2))]


PATTERNS = {
    "at_row": _at_row,
    "ap_cluster": _ap_cluster,
    "pfm_ellipse": _pfm_ellipse,
    "submunitions": _submunitions,
    "isolated_uxo": _isolated_uxo,
}


def make_scene(
    seed: int,
    gsd_m: float,
    width_px: int,
    height_px: int,
    *,
    patterns: int | None = None,
    biome: str | None = None,
    empty: bool = False,
    layouts: tuple[str, ...] | None = None,
) -> SceneSpec:
    """A random scene. ``patterns`` layouts are drawn (default: one per 0.1 ha, at least 3), each from
    ``layouts`` (names in ``PATTERNS``; default: all of them)."""
    names = list(PATTERNS) if layouts is None else list(layouts)
    unknown = sorted(set(names) - set(PATTERNS))
    if unknown or not names:
        raise ValueError(f"layouts must be names in {list(PATTERNS)}, got {names}")
    rng = np.random.default_rng(seed)
    w_m, h_m = width_px * gsd_m, height_px * gsd_m
    biome = biome or list(BIOMES)[rng.integers(len(BIOMES))]
    n_patterns = 0 if empty else (patterns or max(3, int(w_m * h_m / 1000)))
    candidates = []
    for k in range(n_patterns):
        name = names[rng.integers(len(names))]
        placed = PATTERNS[name](rng, w_m, h_m)
        # each item keeps the pattern it belongs to: an isolated UXO is a pattern of its own
        ids = [k * 1000 + j for j in range(len(placed))] if name == "isolated_uxo" else [k * 1000] * len(placed)
        candidates += [(kind, p, pattern) for (kind, p), pattern in zip(placed, ids)]
    items, taken = [], np.zeros((0, 3))
    for kind, (x, y), pattern in candidates:
        radius = max(CATALOG[kind].length_mm) / 2000
        if not (radius < x < w_m - radius and radius < y < h_m - radius):
            continue
        if len(taken) and (np.hypot(taken[:, 0] - x, taken[:, 1] - y) < taken[:, 2] + radius + 0.03).any():
            continue
        taken = np.vstack([taken, [x, y, radius]])
        buried = float(rng.choice([0.0, 0.0, rng.uniform(0.1, 0.5)]))
        items.append(
            PlacedItem(
                kind, x / gsd_m, y / gsd_m, float(rng.uniform(0, 2 * np.pi)), buried, int(rng.integers(2**31)), pattern
            )
        )
    sun = rng.uniform(0, 2 * np.pi)
    camera = Camera(
        blur_sigma_px=float(rng.uniform(0.3, 1.1)),
        noise_sigma=float(rng.uniform(1, 5)),
        jpeg_quality=int(rng.integers(70, 96)),
        exposure=float(rng.uniform(0.8, 1.2)),
    )
    track = None
    if rng.random() < 0.4:
        track = (
            float(rng.uniform(0, h_m)),
            float(rng.uniform(-0.3, 0.3)),
            float(rng.uniform(0, 2)),
            float(rng.uniform(20, 80)),
        )
    return SceneSpec(
        seed=seed,
        gsd_m=gsd_m,
        width_px=width_px,
        height_px=height_px,
        biome=biome,
        sun_xy=(float(np.cos(sun)), float(np.sin(sun))),
        items=tuple(items),
        camera=camera,
        lookalikes_per_m2=float(rng.uniform(0.05, 0.4)),
        shrubs_per_m2=float(rng.uniform(0, 0.04)),
        track=track,
    )
