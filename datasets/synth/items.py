"""Ordnance items and look-alikes drawn at their physical size, as RGBA stamps.

Sizes are from ../shared/domain/ORDNANCE.md (approximate, in millimetres). Each stamp is drawn 4x
supersampled and reduced with area averaging, lit from one sun direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SS = 4  # supersampling factor
# Largest supersampled canvas side: an item whose canvas would be larger is drawn with less supersampling (2x at
# least). Only long items at fine GSD reach it (a metre-long branch is 500 px at 3 mm, 2,000 px at 4x), where
# every layer of the drawing costs the canvas's pixels and 2x keeps their edges as smooth.
MAX_SS_PX = 1024

OLIVE = (84, 92, 52)
DARK_OLIVE = (58, 64, 38)
GREEN = (72, 98, 48)
SAND = (172, 152, 104)
PALE_SAND = (214, 186, 162)  # sun-bleached sand plastic
BROWN = (108, 80, 52)
BLACK = (36, 36, 34)
RUST = (122, 72, 42)
GREY = (122, 122, 116)
COPPER = (182, 112, 62)


@dataclass(frozen=True)
class ItemType:
    """One kind of item. ``label`` is None for look-alikes (unlabelled)."""

    name: str
    label: str | None
    shape: str
    length_mm: tuple[float, float]
    width_mm: tuple[float, float]
    colours: tuple[tuple[int, int, int], ...]
    height_mm: float
    in_scenes: bool = True


CATALOG: dict[str, ItemType] = {
    t.name: t
    for t in [
        ItemType("pfm1", "ap_mine", "butterfly", (118, 122), (58, 63), (GREEN, SAND, PALE_SAND, BROWN), 20),
        ItemType("pmn", "ap_mine", "round_cross", (112, 121), (112, 121), (DARK_OLIVE, BLACK), 50),
        ItemType("pma2", "ap_mine", "round_star", (66, 70), (66, 70), (GREEN, OLIVE), 40),
        ItemType("ozm72", "ap_mine", "round", (75, 108), (75, 108), (OLIVE, RUST), 60),
        ItemType("mon50", "ap_mine", "curved_box", (220, 230), (62, 68), (OLIVE, DARK_OLIVE), 80),
        ItemType("tm62", "at_mine", "round_well", (315, 325), (315, 325), (OLIVE, DARK_OLIVE, GREEN), 110),
        ItemType("tm57", "at_mine", "round_well", (312, 320), (312, 320), (OLIVE, RUST), 100),
        ItemType("projectile", "uxo", "projectile", (500, 700), (122, 152), (RUST, OLIVE, DARK_OLIVE), 140),
        ItemType("mortar", "uxo", "mortar", (330, 700), (82, 120), (OLIVE, RUST, DARK_OLIVE), 100),
        ItemType("submunition", "uxo", "cylinder_ribbon", (83, 150), (39, 65), (OLIVE, GREY, RUST), 45),
        ItemType("ball", "uxo", "sphere", (58, 62), (58, 62), (GREY, OLIVE), 60),
        ItemType("grenade", "uxo", "grenade", (114, 117), (55, 58), (OLIVE, DARK_OLIVE), 55),
        # look-alikes
        ItemType("stone", None, "stone", (40, 350), (30, 250), (GREY, (140, 130, 118), (96, 90, 84)), 60),
        ItemType(
            "can",
            None,
            "cylinder",
            (110, 125),
            (60, 68),
            ((170, 170, 175), (150, 40, 40), (200, 180, 60)),
            60,
        ),
        ItemType(
            "bottle",
            None,
            "bottle",
            (200, 300),
            (60, 80),
            ((60, 110, 60), (110, 70, 30), (190, 200, 200)),
            70,
        ),
        ItemType("tyre", None, "arc", (250, 600), (60, 110), (BLACK, (50, 48, 46)), 60),
        ItemType("branch", None, "branch", (300, 1200), (20, 50), ((92, 70, 50), (120, 96, 70)), 40),
        # dead leaves (oak and the like): the size and colour of a PFM-1, strewn by the thousand under trees
        ItemType(
            "leaf",
            None,
            "leaf",
            (60, 160),
            (30, 80),
            ((150, 108, 66), (182, 148, 102), (120, 82, 52), (200, 176, 140)),
            8,
        ),
        # Pale dead oak and maple leaves, curled and sun-bleached to beige and grey-white: pointed lobes between
        # deep sinuses, along the midrib (oak) or fanned from the stalk (maple). Where they lie under deciduous
        # trees they are the brightest objects of a PFM-1's size on the ground. Drawn only where a recipe names
        # them (copy-paste look-alikes); the scene generator's look-alikes stay the general set.
        ItemType(
            "oak_leaf",
            None,
            "oak_leaf",
            (80, 170),
            (55, 120),
            ((222, 212, 196), (206, 192, 170), (190, 180, 168), (196, 174, 140), (170, 140, 104), (140, 104, 70)),
            8,
            in_scenes=False,
        ),
    ]
}
LOOKALIKES = tuple(name for name, t in CATALOG.items() if t.label is None and t.in_scenes)


def _rot(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _poly(canvas: np.ndarray, pts_mm: np.ndarray, angle: float, scale: float, centre: float, value) -> None:
    pts = _rot(np.asarray(pts_mm, np.float64), angle) * scale + centre
    cv2.fillPoly(canvas, [np.round(pts * 16).astype(np.int32)], value, lineType=cv2.LINE_AA, shift=4)


def _ellipse(canvas, centre_mm, axes_mm, angle, scale, centre, value, thickness=-1) -> None:
    c = _rot(np.array([centre_mm], np.float64), angle)[0] * scale + centre
    axes = (max(1, round(axes_mm[0] * scale)), max(1, round(axes_mm[1] * scale)))
    cv2.ellipse(canvas, (round(c[0]), round(c[1])), axes, -np.degrees(angle), 0, 360, value, thickness, cv2.LINE_AA)


def _outline(shape: str, length: float, width: float, rng: np.random.Generator) -> list[tuple[str, object]]:
    """Parts of an item in mm around its centre: ("poly", points) or ("ellipse", (centre, axes)), with a
    tone (multiplier of the base colour)."""
    L, W = length / 2, width / 2
    if shape == "butterfly":
        # Seen from above a PFM-1 is two rounded lobes along its length with a notch between them: the thicker
        # body (liquid charge) and the flat wing, the fuze boss at the notch on one side. Soft plastic: the
        # outline is a squarish superellipse pinched at the middle, each lobe a little different.
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        p = rng.uniform(2.4, 3.2)
        x = L * np.sign(c) * np.abs(c) ** (2 / p)
        y = W * np.sign(s) * np.abs(s) ** (2 / p)
        y *= np.where(x < 0, 1.0, rng.uniform(0.82, 0.95))  # the wing is a little narrower than the body
        notch = np.exp(-((x / (L * rng.uniform(0.12, 0.2))) ** 2))
        y *= 1 - np.where(y < 0, rng.uniform(0.15, 0.35), rng.uniform(0.05, 0.25)) * notch
        parts = [("poly", np.c_[x, y], 1.0)]
        if rng.random() < 0.7:
            tone = "highlight" if rng.random() < 0.6 else 0.8
            parts.append(("ellipse", ((-L * 0.05, -W * 0.55), (L * 0.17, L * 0.17)), tone))
        return parts
    if shape in ("round", "round_cross", "round_star", "round_well", "sphere"):
        parts = [("ellipse", ((0, 0), (L, W)), 1.0)]
        if shape == "round_well":
            parts += [
                ("ring", ((0, 0), (L * 0.8, W * 0.8)), 0.8),
                ("ellipse", ((0, 0), (L * 0.28, W * 0.28)), 0.55),
            ]
        if shape == "round_cross":
            parts += [
                (
                    "poly",
                    np.array([[-L * 0.7, -W * 0.15], [L * 0.7, -W * 0.15], [L * 0.7, W * 0.15], [-L * 0.7, W * 0.15]]),
                    0.7,
                ),
                (
                    "poly",
                    np.array([[-L * 0.15, -W * 0.7], [L * 0.15, -W * 0.7], [L * 0.15, W * 0.7], [-L * 0.15, W * 0.7]]),
                    0.7,
                ),
            ]
        if shape == "round_star":
            parts += [("ellipse", ((0, 0), (L * 0.35, W * 0.35)), 0.6)]
        if shape == "round":
            parts += [("ellipse", ((0, 0), (L * 0.3, W * 0.3)), 0.75)]
        return parts
    if shape == "curved_box":
        t = np.linspace(-1, 1, 12)
        top = np.c_[t * L, -W + 0.25 * W * (1 - t**2)]
        return [("poly", np.r_[top, (top + [0, 2 * W])[::-1]], 1.0)]  # noqa: RUF005 (numpy addition)
    if shape == "projectile":
        body = np.array([[-L, -W], [L * 0.45, -W], [L, 0], [L * 0.45, W], [-L, W]])
        band = np.array([[-L * 0.75, -W], [-L * 0.62, -W], [-L * 0.62, W], [-L * 0.75, W]])
        return [("poly", body, 1.0), ("poly", band, "copper")]
    if shape == "mortar":
        return [
            ("ellipse", ((L * 0.25, 0), (L * 0.72, W)), 1.0),
            (
                "poly",
                np.array([[-L, -W * 0.25], [-L * 0.3, -W * 0.25], [-L * 0.3, W * 0.25], [-L, W * 0.25]]),
                0.9,
            ),
            (
                "poly",
                np.array([[-L, -W * 0.8], [-L * 0.8, -W * 0.8], [-L * 0.8, W * 0.8], [-L, W * 0.8]]),
                0.8,
            ),
        ]
    if shape in ("cylinder_ribbon", "cylinder"):
        parts = [
            ("poly", np.array([[-L, -W], [L, -W], [L, W], [-L, W]]), 1.0),
            ("ellipse", ((L * 0.95, 0), (L * 0.08, W)), 1.15),
        ]
        if shape == "cylinder_ribbon" and rng.random() < 0.6:
            parts.append(
                ("poly", np.array([[-L * 2.2, -W * 0.2], [-L, -W * 0.2], [-L, W * 0.2], [-L * 2.2, W * 0.5]]), "ribbon")
            )
        return parts
    if shape == "grenade":
        return [
            ("ellipse", ((0, 0), (L, W)), 1.0),
            (
                "poly",
                np.array([[L * 0.6, -W * 0.2], [L * 1.05, -W * 0.2], [L * 1.05, W * 0.2], [L * 0.6, W * 0.2]]),
                0.8,
            ),
            ("line", np.array([[-L * 0.3, -W], [-L * 0.3, W]]), 0.8),
            ("line", np.array([[L * 0.2, -W], [L * 0.2, W]]), 0.8),
        ]
    if shape == "leaf":
        lobes = rng.integers(3, 8)
        x = np.linspace(-L, L, 48)
        half = W * np.sqrt(np.clip(1 - (x / L) ** 2, 0, 1)) ** 0.8
        half *= 1 - rng.uniform(0.0, 0.4) * np.abs(np.sin(lobes * np.pi * (x / L + 1) / 2))
        outline = np.r_[np.c_[x, half], np.c_[x[::-1], -half[::-1] * rng.uniform(0.8, 1.1)]]
        return [
            ("poly", outline, 1.0),
            ("line", np.array([[-L * 1.15, 0], [L * 0.9, 0]]), 0.8),  # stalk and midrib
        ]
    if shape == "oak_leaf":
        return _dead_leaf(L, W, rng)
    if shape == "stone":
        n = rng.integers(6, 11)
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.7, 1.0, n)
        return [("poly", np.c_[np.cos(angles) * L * radii, np.sin(angles) * W * radii], 1.0)]
    if shape == "bottle":
        return [
            (
                "poly",
                np.array(
                    [
                        [-L, -W],
                        [L * 0.3, -W],
                        [L * 0.55, -W * 0.4],
                        [L, -W * 0.4],
                        [L, W * 0.4],
                        [L * 0.55, W * 0.4],
                        [L * 0.3, W],
                        [-L, W],
                    ]
                ),
                1.0,
            ),
            (
                "poly",
                np.array([[-L * 0.8, -W * 0.6], [L * 0.2, -W * 0.6], [L * 0.2, -W * 0.3], [-L * 0.8, -W * 0.3]]),
                1.5,
            ),
        ]
    if shape == "arc":
        t = np.linspace(-0.8, 0.8, 14)
        outer = np.c_[np.sin(t) * L, -np.cos(t) * L * 0.5]
        return [("poly", np.r_[outer, (outer * [1, 1] + [0, W * 2])[::-1]], 1.0)]
    if shape == "branch":
        bend = rng.normal(0, W, 5)
        pts = np.c_[np.linspace(-L, L, 5), bend]
        parts = [("line", pts, 1.0)]
        for _ in range(rng.integers(1, 4)):
            start = pts[rng.integers(1, 4)]
            tip = start + rng.normal(0, L * 0.3, 2)
            parts.append(("line", np.array([start, tip]), 0.9))
        return parts
    raise ValueError(f"unknown shape {shape}")


def _lobed(t: np.ndarray, lobes: float, phase: float, depth: float, sharp: float) -> np.ndarray:
    """1 at a lobe's tip, ``depth`` in a sinus: ``lobes`` pointed lobes over ``t`` in [0, 1]."""
    tri = 1 - 2 * np.abs((lobes * t + phase) % 1 - 0.5)
    return depth + (1 - depth) * tri**sharp


def _dead_leaf(L: float, W: float, rng: np.random.Generator) -> list[tuple[str, object, float]]:
    """A dead leaf of half-length ``L`` and half-width ``W`` (mm): oak (lobes along the midrib, widest past the
    middle) or maple (lobes fanned from the stalk). Curled, so one half catches more light than the other."""
    lit, shaded = rng.uniform(1.0, 1.2), rng.uniform(0.8, 1.0)
    depth, sharp = rng.uniform(0.25, 0.6), rng.uniform(0.7, 1.6)  # an oak's; a maple draws its own, shallower
    if rng.random() < 0.6:  # oak
        x = np.linspace(-L, L, 96)
        envelope = W * np.clip(np.sin(np.pi * (x + L) / (2 * L)), 0, 1) ** rng.uniform(0.5, 0.9)
        lobes, t = rng.uniform(2.5, 4.5), (x + L) / (2 * L)
        upper = envelope * _lobed(t, lobes, rng.uniform(0, 1), depth, sharp)
        lower = envelope * _lobed(t, lobes, rng.uniform(0, 1), depth, sharp) * rng.uniform(0.8, 1.1)
        zero = np.zeros_like(x)
        return [
            ("poly", np.r_[np.c_[x, upper], np.c_[x[::-1], zero]], lit),
            ("poly", np.r_[np.c_[x, zero], np.c_[x[::-1], -lower[::-1]]], shaded),
            ("line", np.array([[-L * 0.6, 0], [L * 0.9, 0]]), 0.85),  # midrib
            ("line", np.array([[-L * 1.15, 0], [-L * 0.6, 0]]), 0.8),  # stalk
        ]
    # maple: 3 to 5 lobes over the circle but the stalk's side, around a point behind the middle
    theta = np.linspace(-np.pi, np.pi, 120)
    lobes = int(rng.integers(3, 6))
    depth, sharp = rng.uniform(0.45, 0.75), rng.uniform(0.6, 1.2)
    t = (theta + np.pi * 0.8) / (2 * np.pi * 0.8)  # the lobes span 0.8 of the circle, opposite the stalk
    radius = np.where(np.abs(theta) > np.pi * 0.8, depth * 0.6, _lobed(np.clip(t, 0, 1), lobes, 0.5, depth, sharp))
    x, y = L * radius * np.cos(theta) * 0.9 + L * 0.1, W * radius * np.sin(theta)
    upper = y >= 0
    return [
        ("poly", np.r_[np.c_[x[upper], y[upper]], [[L * 0.1, 0]]], lit),
        ("poly", np.r_[np.c_[x[~upper], y[~upper]], [[L * 0.1, 0]]], shaded),
        ("line", np.array([[-L * 1.1, 0], [L * 0.1, 0]]), 0.8),  # stalk, into the leaf's centre
    ]


@dataclass
class Stamp:
    """An item rendered at one GSD: colour (h, w, 3) float32, alpha (h, w) float32, its centre in stamp
    pixels, and its tight box (x0, y0, x1, y1) in stamp pixels."""

    colour: np.ndarray
    alpha: np.ndarray
    centre: tuple[float, float]
    box: tuple[float, float, float, float]
    height_px: float


def render_item(
    item: ItemType, gsd_m: float, angle: float, sun_xy: tuple[float, float], rng: np.random.Generator
) -> Stamp:
    """Draw one item, rotated by ``angle`` (radians), lit from ``sun_xy`` (unit vector towards the sun)."""
    length = rng.uniform(*item.length_mm)
    width = rng.uniform(*item.width_mm) if item.shape != "stone" else rng.uniform(0.6, 1.0) * length
    if item.shape in ("round", "round_cross", "round_star", "round_well", "sphere"):
        width = length
    reach = 1.2 * np.hypot(length, max(width, length * 0.4 if item.shape == "branch" else width)) / 2
    if item.shape == "cylinder_ribbon":
        reach *= 2.2
    ss = max(2, min(SS, MAX_SS_PX // (int(np.ceil(2 * reach / (gsd_m * 1000))) + 2)))
    scale = ss / (gsd_m * 1000)  # supersampled px per mm
    size = int(np.ceil(2 * reach * scale / ss)) * ss + 2 * ss
    centre = size / 2
    base = np.array(item.colours[rng.integers(len(item.colours))], np.float32)
    base *= rng.uniform(0.8, 1.15)
    if item.label is not None:  # weathering and dust take colour out of plastic and paint
        base += (base.mean() - base) * rng.uniform(0.0, 0.5)
    colour = np.zeros((size, size, 3), np.float32)
    alpha = np.zeros((size, size), np.float32)
    thickness = max(1, round(width * scale))
    for kind, geometry, tone in _outline(item.shape, length, width, rng):
        tint = (
            np.array(COPPER, np.float32)
            if tone == "copper"
            else np.array((200, 200, 190), np.float32)
            if tone == "ribbon"
            else base * 0.35 + np.array((150, 150, 142), np.float32)
            if tone == "highlight"
            else base * tone
        )
        layer = np.zeros((size, size), np.float32)
        if kind == "poly":
            _poly(layer, geometry, angle, scale, centre, 1.0)
        elif kind in ("ellipse", "ring"):
            (c, axes) = geometry
            _ellipse(layer, c, axes, angle, scale, centre, 1.0, thickness=-1 if kind == "ellipse" else max(1, ss))
        else:
            pts = _rot(np.asarray(geometry, np.float64), angle) * scale + centre
            w = thickness if tone == 1.0 or item.shape == "branch" else max(1, ss // 2)
            cv2.polylines(layer, [np.round(pts).astype(np.int32)], False, 1.0, w, cv2.LINE_AA)
        rows, cols = np.nonzero(layer.any(axis=1))[0], np.nonzero(layer.any(axis=0))[0]
        if len(rows):  # blend where the layer is drawn (elsewhere the blend leaves colour as it is)
            box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            colour[box] = colour[box] * (1 - layer[box][..., None]) + tint * layer[box][..., None]
            alpha[box] = np.maximum(alpha[box], layer[box])
    # The parts were blended over black: divide by their coverage so that antialiased edges keep the item's
    # colour instead of a dark fringe.
    colour /= np.maximum(alpha, 1e-3)[..., None]
    # Lighting: brighter on the sun side of the item, darker opposite; fine weathering noise.
    axis = (np.arange(size, dtype=np.float64) - centre) / max(reach * scale, 1)
    light = 1.0 + 0.35 * (axis[None, :] * sun_xy[0] + axis[:, None] * sun_xy[1])
    grain = cv2.GaussianBlur(rng.normal(1.0, 0.12, (size, size)).astype(np.float32), (0, 0), ss * 0.7)
    colour *= (light * grain)[..., None]
    if item.label is not None and rng.random() < 0.5:  # dust and corrosion blotches
        dirt = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), ss * 2) > 0.52
        colour[dirt] = colour[dirt] * 0.6 + np.array(BROWN, np.float32) * 0.4
    small = size // ss  # reduce premultiplied colour, so that edge pixels average the item, not the black around it
    colour = cv2.resize(colour * alpha[..., None], (small, small), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(alpha, (small, small), interpolation=cv2.INTER_AREA)
    colour /= np.maximum(alpha, 1e-3)[..., None]
    ys, xs = np.nonzero(alpha > 0.25)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if len(xs) else (0, 0, 1, 1)
    return Stamp(colour, alpha, (small / 2, small / 2), box, item.height_mm / 1000 / gsd_m)
