"""Photographic composites: real items cut from training images, and drawn items lit, shadowed and blurred like
the camera that took the background, pasted onto real backgrounds.

Used online in training (:class:`CopyPaste` on the data module). Boxes stay exact: real items are turned by
multiples of 90 degrees and flipped, drawn items get the tight box of their stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from ordnance.datasets.records import Sample
from ordnance.datasets.synth.items import CATALOG, render_item


@dataclass
class CopyPaste:
    """Items pasted onto training images (all from the training split; no validation or test pixel).

    Attributes:
        p: Probability that an image receives pasted items.
        real_items: At most this many real items (cut from training images) per image.
        synthetic_items: At most this many drawn items (``synthetic_names``) per image.
        synthetic_names: Catalogue items to draw (``ordnance.datasets.synth.items.CATALOG``), e.g. ``pfm1``;
            each keeps its catalogue class, which must be a configured class.
        scale: Size jitter of pasted items (1 = their physical size at the working GSD).
        colour: Strength of per-item brightness and contrast jitter.
        margin: Context kept around a real item's box, as a share of its size; it fades out.
        backgrounds_only: Use only images without boxes as backgrounds (unlabelled real items never pose as
            background); with ``real_items: 0`` no real item pixel is trained on.
        lookalike_items: At most this many drawn look-alikes (``lookalike_names``: dead leaves, stones, ...) per
            image, pasted the same way as drawn items but unlabelled, before them: pasting itself is then no
            clue to an item, only the item's own shape and colour are.
        shade: Probability that a pasted item lies partly in the soft shadow of nearby vegetation (30-60%
            darker under a blurred random edge).
        hide: Probability that a random part of a pasted item (at most half its box) is hidden under the
            ground it lands on (grass over a mine); its box stays that of the whole item.
    """

    p: float = 0.5
    real_items: int = 3
    synthetic_items: int = 0
    synthetic_names: tuple[str, ...] = ("pfm1",)
    scale: tuple[float, float] = (0.85, 1.15)
    colour: float = 0.15
    margin: float = 0.4
    backgrounds_only: bool = False
    lookalike_items: int = 0
    lookalike_names: tuple[str, ...] = ("leaf", "leaf", "leaf", "stone", "branch", "can", "bottle")
    shade: float = 0.0
    hide: float = 0.0


@dataclass(frozen=True)
class Patch:
    """A real item with context: colour (h, w, 3) float32, alpha (h, w), its box in patch pixels, label."""

    colour: np.ndarray
    alpha: np.ndarray
    box: tuple[float, float, float, float]
    label: int


def cut_patches(samples, margin: float) -> list[Patch]:
    """Every box of ``samples`` as a patch with a feathered elliptical alpha (1 over the box, 0 at the edge
    of the context)."""
    patches = []
    for sample in samples:
        h, w = sample.image.shape[:2]
        for (x0, y0, x1, y1), label in zip(sample.boxes, sample.labels):
            if label < 0:  # an ignore region is not an item
                continue
            bw, bh = x1 - x0, y1 - y0
            mx, my = max(3.0, margin * bw), max(3.0, margin * bh)
            c0, r0 = int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my)))
            c1, r1 = int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my)))
            if c1 - c0 < 4 or r1 - r0 < 4:
                continue
            colour = sample.image[r0:r1, c0:c1].astype(np.float32)
            yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32) + 0.5
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            # 1 inside the ellipse through the box corners (sqrt 2 times the half sizes), 0 at the context edge.
            rx, ry = bw / 2 * 1.42 + 1, bh / 2 * 1.42 + 1
            dist = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
            outer = min((bw / 2 + mx) / rx, (bh / 2 + my) / ry)
            alpha = np.clip((outer - dist) / max(outer - 1.0, 1e-3), 0, 1).astype(np.float32)
            patches.append(Patch(colour, alpha, (x0 - c0, y0 - r0, x1 - c0, y1 - r0), int(label)))
    return patches


def _orient(colour: np.ndarray, alpha: np.ndarray, box, rng: np.random.Generator):
    """Random flip and 90-degree turn of a patch and its box."""
    x0, y0, x1, y1 = box
    w = alpha.shape[1]
    if rng.random() < 0.5:
        colour, alpha, (x0, x1) = colour[:, ::-1], alpha[:, ::-1], (w - x1, w - x0)
    for _ in range(int(rng.integers(4))):  # counter-clockwise: (x, y) -> (y, W - x)
        w = alpha.shape[1]
        colour, alpha = np.rot90(colour), np.rot90(alpha)
        x0, y0, x1, y1 = y0, w - x1, y1, w - x0
    return np.ascontiguousarray(colour), np.ascontiguousarray(alpha), (x0, y0, x1, y1)


def _fill_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of an orthophoto's fill outside its footprint: flat white or black in every channel (the tiles of an
    export carry no alpha). Nothing lies there to be photographed."""
    # channel by channel: numpy's reductions over a short last axis are an order of magnitude slower
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    return ((r >= 250) & (g >= 250) & (b >= 250)) | ((r <= 3) & (g <= 3) & (b <= 3))


def fill_regions(image: np.ndarray, min_px: int = 4096) -> np.ndarray:
    """Where an orthophoto tile shows no ground: its flat white or black fill (:func:`_fill_mask`) in connected
    regions (8-neighbour) of at least ``min_px`` pixels. Small flat patches (glare on a can, a white stone, a dark
    hole) stay ground; the fill beyond the photographed footprint and masked-out blocks are far larger than any
    item. Returns a bool (h, w) mask, True on fill."""
    flat = _fill_mask(image).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(flat, connectivity=8)
    large = np.zeros(n, bool)
    large[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    return large[labels]


def _free_spot(shape, size, boxes: list, rng: np.random.Generator, tries: int = 20, fill=None):
    """Top-left corner where a ``size`` (h, w) patch fits inside the image, away from ``boxes`` and, given the
    image's ``fill`` mask, off the fill (at most 2% of the patch on it)."""
    H, W = shape[:2]
    h, w = size
    if h >= H or w >= W:
        return None
    for _ in range(tries):
        top, left = int(rng.integers(0, H - h)), int(rng.integers(0, W - w))
        clear = all(left + w <= b[0] or b[2] <= left or top + h <= b[1] or b[3] <= top for b in boxes)
        if clear and (fill is None or fill[top : top + h, left : left + w].mean() <= 0.02):
            return top, left
    return None


def _blend(image: np.ndarray, colour: np.ndarray, alpha: np.ndarray, top: int, left: int) -> None:
    h, w = alpha.shape
    region = image[top : top + h, left : left + w]
    region[:] = region * (1 - alpha[..., None]) + colour * alpha[..., None]


def _noise_sigma(image: np.ndarray) -> float:
    """Sensor-noise level of an image: median absolute Laplacian, robust to edges (Immerkaer-style)."""
    grey = cv2.cvtColor(np.clip(image, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = cv2.Laplacian(grey, cv2.CV_32F)
    return float(np.median(np.abs(lap)) / 0.6745 / np.sqrt(20.0))


def _shade_and_hide(colour: np.ndarray, alpha: np.ndarray, box, cfg: CopyPaste, rng) -> tuple[np.ndarray, np.ndarray]:
    """A patch (straight colour, alpha) partly shadowed and partly hidden, as ``cfg.shade`` and ``cfg.hide`` draw."""
    h, w = alpha.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    size = max(x1 - x0, y1 - y0, 1.0)
    if rng.random() < cfg.shade:  # a soft shadow edge at a random angle through or near the item
        angle = rng.uniform(0, 2 * np.pi)
        side = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle) - rng.uniform(-0.4, 0.4) * size
        mask = 1 / (1 + np.exp(-side / max(0.08 * size, 0.5)))
        colour = colour * (1 - rng.uniform(0.3, 0.6) * mask)[..., None]
    if rng.random() < cfg.hide:  # a blob of the ground over part of the item, never more than half its box
        inside = np.zeros((h, w), bool)
        inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
        for _ in range(4):
            px, py = rng.uniform(x0, x1), rng.uniform(y0, y1)
            radius = rng.uniform(0.2, 0.45) * size
            blob = ((xx - px) ** 2 + (yy - py) ** 2) <= radius**2
            if (blob & inside).sum() <= 0.5 * inside.sum():
                soft = cv2.GaussianBlur(blob.astype(np.float32), (0, 0), max(0.06 * size, 0.5))
                alpha = alpha * (1 - soft)
                break
    return colour, alpha


def paste_real(image, boxes: list, labels: list, patches: list[Patch], cfg: CopyPaste, rng, n: int, fill=None) -> None:
    """Paste ``n`` random real patches; each is matched to the local light, then jittered. ``fill``: the image's
    fill mask (:func:`_fill_mask`), when the caller has it."""
    fill = _fill_mask(image) if fill is None else fill
    for _ in range(n):
        patch = patches[int(rng.integers(len(patches)))]
        factor = rng.uniform(*cfg.scale)
        colour = cv2.resize(patch.colour, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)
        alpha = cv2.resize(patch.alpha, (colour.shape[1], colour.shape[0]), interpolation=cv2.INTER_LINEAR)
        box = tuple(v * colour.shape[1 - i % 2] / patch.alpha.shape[1 - i % 2] for i, v in enumerate(patch.box))
        colour, alpha, box = _orient(colour, alpha, box, rng)
        spot = _free_spot(image.shape, alpha.shape, boxes, rng, fill=fill)
        if spot is None:
            continue
        top, left = spot
        h, w = alpha.shape
        ring = alpha < 0.5
        if ring.any():  # match the context's colour to where it lands
            target = image[top : top + h, left : left + w][ring].mean(0)
            source = colour[ring].mean(0) + 1e-3
            colour = colour * np.clip(target / source, 0.7, 1.4)
        gain = 1 + rng.uniform(-cfg.colour, cfg.colour)
        mean = colour.mean((0, 1))
        colour = (colour - mean) * (1 + rng.uniform(-cfg.colour, cfg.colour)) + mean * gain
        if cfg.shade or cfg.hide:
            colour, alpha = _shade_and_hide(colour, alpha, box, cfg, rng)
        _blend(image, colour, alpha, top, left)
        boxes.append((left + box[0], top + box[1], left + box[2], top + box[3]))
        labels.append(patch.label)


def paste_drawn(
    image,
    boxes: list,
    labels: list,
    cfg: CopyPaste,
    class_ids: dict,
    gsd_m: float,
    rng,
    n: int,
    names=None,
    fill=None,
):
    """Paste ``n`` catalogue items drawn at ``gsd_m`` (from ``names``, default ``cfg.synthetic_names``), with a
    soft sun shadow, defocus or motion blur and the background's own noise level, so that they look taken by the
    same camera. Look-alikes (no label) get no box. ``fill``: the image's fill mask, when the caller has it."""
    names = names or cfg.synthetic_names
    sun = rng.normal(size=2)
    sun = tuple(sun / (np.linalg.norm(sun) + 1e-9))
    sigma_noise = _noise_sigma(image)
    fill = _fill_mask(image) if fill is None else fill
    for _ in range(n):
        item = CATALOG[names[int(rng.integers(len(names)))]]
        stamp = render_item(item, gsd_m / rng.uniform(*cfg.scale), rng.uniform(0, 2 * np.pi), sun, rng)
        h, w = stamp.alpha.shape
        spot = _free_spot(image.shape, (h, w), boxes, rng, fill=fill)
        if spot is None:
            continue
        top, left = spot
        region = image[top : top + h, left : left + w]
        # Sun elevation and cloud vary: a short faint shadow under a high or veiled sun, a long dark one under a low.
        offset = -np.array(sun) * (stamp.height_px * rng.uniform(0.2, 1.4) + 1)
        shadow = np.roll(np.roll(stamp.alpha, int(round(offset[1])), 0), int(round(offset[0])), 1)
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(0.6, float(np.abs(offset).max()) / 3))
        region *= (1 - rng.uniform(0.0, 0.5) * shadow)[..., None]
        colour = stamp.colour * (region.mean((0, 1)).mean() / 110.0) ** 0.5  # follow the scene's exposure
        alpha = stamp.alpha
        if cfg.shade or cfg.hide:
            colour, alpha = _shade_and_hide(colour, alpha, stamp.box, cfg, rng)
        colour = colour * alpha[..., None]  # blur premultiplied, so that edges do not darken towards black
        if rng.random() < 0.6:  # orthophotos are soft: resampling and blending add to the lens's defocus
            sigma = rng.uniform(0.5, 1.8)
            colour, alpha = cv2.GaussianBlur(colour, (0, 0), sigma), cv2.GaussianBlur(alpha, (0, 0), sigma)
        else:
            length = int(rng.integers(2, 5))
            kernel = np.zeros((length, length), np.float32)
            kernel[length // 2, :] = 1.0 / length
            rot = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), rng.uniform(0, 180), 1.0)
            kernel = cv2.warpAffine(kernel, rot, (length, length))
            kernel /= max(kernel.sum(), 1e-6)
            colour, alpha = cv2.filter2D(colour, -1, kernel), cv2.filter2D(alpha, -1, kernel)
        colour = colour / np.maximum(alpha, 1e-3)[..., None]
        colour = colour + rng.normal(0, sigma_noise, colour.shape).astype(np.float32)
        _blend(image, colour, alpha, top, left)
        if item.label is None:
            continue
        x0, y0, x1, y1 = stamp.box
        boxes.append((left + x0, top + y0, left + x1, top + y1))
        labels.append(class_ids[item.label])


def composite(
    sample: Sample, patches: list[Patch], cfg: CopyPaste, class_ids: dict, gsd_m: float | None, rng
) -> Sample:
    """``sample`` with pasted items (with probability ``cfg.p``), re-encoded as JPEG like the sources."""
    if rng.random() >= cfg.p:
        return sample
    image = sample.image.astype(np.float32)
    boxes = [tuple(b) for b in sample.boxes]
    labels = list(sample.labels)
    fill = _fill_mask(image)  # the orthophoto's own fill, before anything is pasted
    if cfg.real_items and patches:
        paste_real(image, boxes, labels, patches, cfg, rng, int(rng.integers(1, cfg.real_items + 1)), fill)
    if cfg.lookalike_items:
        n = int(rng.integers(0, cfg.lookalike_items + 1))
        paste_drawn(image, boxes, labels, cfg, class_ids, gsd_m, rng, n, cfg.lookalike_names, fill)
    if cfg.synthetic_items:
        n = int(rng.integers(1, cfg.synthetic_items + 1))
        paste_drawn(image, boxes, labels, cfg, class_ids, gsd_m, rng, n, fill=fill)
    out = np.clip(image, 0, 255).astype(np.uint8)
    quality = int(rng.integers(75, 96))
    _, encoded = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    out = np.ascontiguousarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1])
    return Sample(
        out,
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array(labels, np.int64),
        sample.source + "+paste",
    )


def stitch(sample: Sample, donors: list[np.ndarray], rng: np.random.Generator) -> Sample:
    """``sample`` with one to three of its quadrants around a random point replaced by ground of other training
    images (``donors``, tiles with no item): the seams where separately photographed pieces of ground meet, with
    their step in exposure, colour and texture, as on an orthomosaic's seamlines or a mosaic of tiles.

    The point falls in the middle half of each side, so a training crop often holds a seam. Only quadrants that no
    box of ``sample`` touches are replaced, so each item stays whole and labelled and no unlabelled item comes in;
    each replaced quadrant takes a block of its size from a random place of a donor large enough to hold it.
    Without such a quadrant and donor the sample is returned as it is."""
    h, w = sample.image.shape[:2]
    cy, cx = int(rng.integers(h // 4, 3 * h // 4 + 1)), int(rng.integers(w // 4, 3 * w // 4 + 1))
    quadrants = [(0, 0, cx, cy), (cx, 0, w, cy), (0, cy, cx, h), (cx, cy, w, h)]  # x0, y0, x1, y1
    boxes = np.asarray(sample.boxes, np.float32).reshape(-1, 4)

    def free(q) -> bool:
        x0, y0, x1, y1 = q
        if x1 <= x0 or y1 <= y0:
            return False
        touch = (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)
        return not touch.any()

    eligible = [q for q in quadrants if free(q)]
    if not eligible or not donors:
        return sample
    n = int(rng.integers(1, min(3, len(eligible)) + 1))
    image, changed = sample.image.copy(), False
    for k, i in enumerate(rng.choice(len(eligible), n, replace=False)):
        x0, y0, x1, y1 = eligible[int(i)]
        donor = donors[k % len(donors)]
        dh, dw = donor.shape[0] - (y1 - y0), donor.shape[1] - (x1 - x0)
        if dh < 0 or dw < 0:
            continue
        dy, dx = int(rng.integers(0, dh + 1)), int(rng.integers(0, dw + 1))
        image[y0:y1, x0:x1] = donor[dy : dy + y1 - y0, dx : dx + x1 - x0]
        changed = True
    return Sample(image, sample.boxes, sample.labels, sample.source + "+seams") if changed else sample
