"""GSD from item boxes, resampling to a working GSD, and pasting items with exact boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ordnance.datasets.composite import CopyPaste, composite, cut_patches, paste_drawn, paste_real
from ordnance.datasets.gsd import gsd_from_boxes, resample_sample
from ordnance.datasets.records import Sample


def _rotated_box_wh(length_m, width_m, angle, gsd_m):
    """Axis-aligned box of a rotated rectangle from its four corners (independent of the closed form)."""
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [length_m / 2, width_m / 2]
    c, s = np.cos(angle), np.sin(angle)
    turned = corners @ np.array([[c, s], [-s, c]])
    return np.ptp(turned, axis=0) / gsd_m


@pytest.mark.parametrize("angle_deg", [0, 10, 33, 45, 71, 90, 150])
def test_gsd_from_boxes_recovers_the_gsd_at_any_angle(angle_deg):
    wh = _rotated_box_wh(0.12, 0.061, np.radians(angle_deg), 0.003)
    assert gsd_from_boxes(wh[None], 0.12, 0.061)[0] == pytest.approx(0.003, rel=1e-9)


def test_gsd_from_boxes_refuses_a_square_reference():
    with pytest.raises(ValueError, match="length > width"):
        gsd_from_boxes(np.array([[10.0, 10.0]]), 0.1, 0.1)


def _sample_with_bar(shape=(200, 300), bar=(100, 60, 124, 70), value=(250, 20, 20), background=90):
    image = np.full((*shape, 3), background, np.uint8)
    x0, y0, x1, y1 = bar
    image[y0:y1, x0:x1] = value
    return Sample(image, np.array([bar], np.float32), np.array([0]), "bar")


def test_resample_sample_keeps_boxes_on_the_item():
    sample = _sample_with_bar()
    out = resample_sample(sample, 0.003, 0.005)  # 0.6 x
    assert out.image.shape[:2] == (120, 180)
    x0, y0, x1, y1 = out.boxes[0]
    assert (x0, y0, x1, y1) == pytest.approx((60, 36, 74.4, 42), abs=1e-4)
    red = out.image[..., 0] > 200
    rows, cols = np.nonzero(red)
    assert x0 - 1 <= cols.min() and cols.max() + 1 <= x1 + 1
    assert y0 - 1 <= rows.min() and rows.max() + 1 <= y1 + 1


def test_pasted_real_items_land_inside_their_boxes():
    source = _sample_with_bar()
    patches = cut_patches([source], margin=0.4)
    assert len(patches) == 1
    target = Sample(np.full((256, 256, 3), 60, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), "t")
    cfg = CopyPaste(p=1.0, real_items=3, scale=(1.0, 1.0), colour=0.0)
    for seed in range(12):
        out = composite(target, patches, cfg, {"ap_mine": 0}, 0.005, np.random.default_rng(seed))
        assert len(out.boxes) >= 1 and (out.labels == 0).all()
        red = (out.image[..., 0].astype(int) - out.image[..., 1]) > 80
        inside = np.zeros_like(red)
        for x0, y0, x1, y1 in out.boxes:
            w, h = x1 - x0, y1 - y0
            assert {round(w), round(h)} == {24, 10}  # turned by 90 degrees or not, never resized
            inside[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
            assert red[int(y0) + 2 : int(y1) - 2, int(x0) + 2 : int(x1) - 2].all()
        assert not (red & ~inside).any()


def test_drawn_items_get_their_class_and_a_tight_box():
    image = np.full((300, 300, 3), 100, np.float32)
    boxes, labels = [], []
    cfg = CopyPaste(p=1.0, real_items=0, synthetic_items=3, synthetic_names=("pfm1",), scale=(1.0, 1.0))
    paste_drawn(image, boxes, labels, cfg, {"ap_mine": 0}, 0.005, np.random.default_rng(1), 3)
    assert labels == [0] * len(boxes) and len(boxes) >= 2
    for x0, y0, x1, y1 in boxes:
        long_side = max(x1 - x0, y1 - y0) * 0.005
        assert 0.09 <= long_side <= 0.14  # a PFM-1 is 120 mm long
        changed = np.abs(image[int(y0) : int(y1), int(x0) : int(x1)] - 100).max()
        assert changed > 10


@pytest.mark.parametrize("seed", range(6))
def test_drawn_pfm1_has_its_physical_size_and_no_dark_fringe(seed):
    from ordnance.datasets.synth.items import CATALOG, render_item

    gsd = 0.002
    stamp = render_item(CATALOG["pfm1"], gsd, 0.0, (0.6, 0.8), np.random.default_rng(seed))
    x0, y0, x1, y1 = stamp.box
    assert 0.110 <= (x1 - x0) * gsd <= 0.130  # 120 mm long, unturned along x
    assert 0.050 <= (y1 - y0) * gsd <= 0.070  # 61 mm wide
    # Antialiased edge pixels keep the item's colour: composited over black, their brightness would fall with
    # their coverage (a dark outline the camera never records).
    luma = stamp.colour @ np.array([0.299, 0.587, 0.114], np.float32)
    interior = luma[stamp.alpha > 0.99]
    edge = luma[(stamp.alpha > 0.05) & (stamp.alpha < 0.6)]
    assert len(edge) > 20 and len(interior) > 100
    assert np.percentile(edge, 5) >= 0.8 * np.percentile(interior, 5)


def _solidity(alpha: np.ndarray) -> float:
    """Drawn area over its convex hull's: near 1 for a convex outline, lower the deeper its notches."""
    mask = (alpha > 0.5).astype(np.uint8)
    points = cv2.findNonZero(mask)
    return float(mask.sum()) / max(cv2.contourArea(cv2.convexHull(points)), 1.0)


def test_drawn_oak_leaves_are_pale_lobed_and_mine_sized_but_not_in_generated_scenes():
    """The look-alike the PFM-1 model confused most on grass under oaks: a pale dead leaf of a mine's size with
    pointed lobes. Its outline is notched far deeper than a PFM-1's; the scene generator does not draw it."""
    from ordnance.datasets.synth.items import CATALOG, LOOKALIKES, render_item

    gsd, rng = 0.003, np.random.default_rng(0)
    leaves = [render_item(CATALOG["oak_leaf"], gsd, rng.uniform(0, 2 * np.pi), (0.6, 0.8), rng) for _ in range(40)]
    mines = [render_item(CATALOG["pfm1"], gsd, rng.uniform(0, 2 * np.pi), (0.6, 0.8), rng) for _ in range(40)]
    leaf_solidity = np.array([_solidity(s.alpha) for s in leaves])
    mine_solidity = np.array([_solidity(s.alpha) for s in mines])
    assert np.median(leaf_solidity) < 0.85 < np.percentile(mine_solidity, 10), (leaf_solidity, mine_solidity)
    extent = np.array([max(s.box[2] - s.box[0], s.box[3] - s.box[1]) * gsd for s in leaves])
    assert 0.06 <= extent.min() and extent.max() <= 0.22  # 80-170 mm with its stalk, at any angle
    luma = np.array([np.median(s.colour[s.alpha > 0.9] @ [0.299, 0.587, 0.114]) for s in leaves])
    assert np.mean(luma > 170) > 0.4  # most are sun-bleached, paler than the grass around them
    assert "oak_leaf" not in LOOKALIKES and "leaf" in LOOKALIKES


def test_pasted_lookalikes_change_the_image_but_add_no_box():
    image = np.full((300, 300, 3), 100, np.float32)
    boxes, labels = [(10.0, 10.0, 40.0, 30.0)], [0]
    cfg = CopyPaste(p=1.0, real_items=0, lookalike_items=3)
    paste_drawn(image, boxes, labels, cfg, {"ap_mine": 0}, 0.003, np.random.default_rng(2), 3, ("leaf",))
    assert boxes == [(10.0, 10.0, 40.0, 30.0)] and labels == [0]
    changed = np.abs(image - 100).max(axis=2) > 10
    assert changed.sum() > 3 * 200  # three leaves of 60-160 x 30-80 mm at 3 mm: hundreds of pixels each
    assert not changed[10:30, 10:40].any()  # the existing item's box is left alone


def test_composite_pastes_lookalikes_before_items():
    sample = Sample(np.full((256, 256, 3), 100, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), "g")
    cfg = CopyPaste(p=1.0, real_items=0, synthetic_items=2, synthetic_names=("pfm1",), lookalike_items=4)
    out = composite(sample, [], cfg, {"ap_mine": 0}, 0.003, np.random.default_rng(0))
    assert set(out.labels.tolist()) == {0} and 1 <= len(out.boxes) <= 2


@pytest.mark.parametrize("seed", [1, 4, 5, 7, 8])  # branches of 340-525 px at 3 mm: 4x would be 1,350-2,100 px
def test_long_lookalikes_at_fine_gsd_keep_their_shape_with_less_supersampling(monkeypatch, seed):
    """A long branch at 3 mm is drawn on a 2x or 3x canvas instead of 4x: against the same branch drawn at full
    supersampling, the stamp has the same size, its solid part the same area within 8% (the antialiased edge
    spans half a final pixel instead of a quarter) and the same box within 2 px."""
    from ordnance.datasets.synth import items

    def draw():
        rng = np.random.default_rng(seed)
        return items.render_item(items.CATALOG["branch"], 0.00294, rng.uniform(0, 2 * np.pi), (0.6, 0.8), rng)

    capped = draw()
    assert capped.alpha.shape[0] * items.SS > items.MAX_SS_PX  # the cap is what this branch is drawn under
    monkeypatch.setattr(items, "MAX_SS_PX", 10**6)
    full = draw()
    assert capped.alpha.shape == full.alpha.shape
    solid_capped, solid_full = (capped.alpha > 0.5).sum(), (full.alpha > 0.5).sum()
    assert abs(solid_capped / solid_full - 1) < 0.08, (solid_capped, solid_full)
    assert np.abs(np.subtract(capped.box, full.box)).max() <= 2, (capped.box, full.box)


def test_items_are_never_pasted_onto_the_orthophotos_fill():
    """A tile whose left two thirds are the export's white fill: every pasted item, drawn or real, lands on the
    photographed third."""
    image = np.full((200, 600, 3), 255, np.float32)
    image[:, 400:] = np.random.default_rng(0).normal(110, 12, (200, 200, 3))
    boxes, labels = [], []
    cfg = CopyPaste(p=1.0, real_items=0, synthetic_items=3, synthetic_names=("pfm1",), lookalike_items=3)
    rng = np.random.default_rng(4)
    for _ in range(5):
        paste_drawn(image, boxes, labels, cfg, {"ap_mine": 0}, 0.003, rng, 3)
    assert len(boxes) >= 5 and min(b[0] for b in boxes) >= 398
    patch_image = np.full((60, 60, 3), 100, np.uint8)
    patch_image[20:40, 20:44] = (230, 200, 180)
    patches = cut_patches([Sample(patch_image, np.array([[20, 20, 44, 40]], np.float32), np.array([0]), "p")], 0.4)
    real = []
    paste_real(image, real, [], patches, CopyPaste(p=1.0, real_items=3), rng, 12)
    assert len(real) >= 5 and min(b[0] for b in real) >= 398


def _paste_bright_item(seed, **effects):
    """One bright 24 x 20 px real item (200) pasted onto an even ground (100) with ``effects``: the image and the
    item's box in whole pixels."""
    source = np.full((60, 60, 3), 100, np.uint8)
    source[20:40, 18:42] = 200
    patches = cut_patches([Sample(source, np.array([[18, 20, 42, 40]], np.float32), np.array([0]), "p")], 0.4)
    image = np.full((120, 120, 3), 100, np.float32)
    boxes = []
    cfg = CopyPaste(p=1.0, real_items=1, colour=0.0, scale=(1.0, 1.0), **effects)
    paste_real(image, boxes, [], patches, cfg, np.random.default_rng(seed), 1)
    return image, tuple(int(round(v)) for v in boxes[0])


@pytest.mark.parametrize("seed", range(4))
def test_shaded_items_are_darker_in_part_and_never_brighter(seed):
    image, (x0, y0, x1, y1) = _paste_bright_item(seed, shade=1.0)
    item = image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2, 0]
    assert item.max() <= 201  # light matching on an even ground changes nothing; a shadow only darkens
    assert item.min() <= 200 * 0.8  # some of the item lies at least 20% darker


@pytest.mark.parametrize("seed", range(4))
def test_hidden_items_show_the_ground_over_at_most_half_their_box(seed):
    image, (x0, y0, x1, y1) = _paste_bright_item(seed, hide=1.0)
    assert (x1 - x0, y1 - y0) in {(24, 20), (20, 24)}  # the box is the whole item's
    item = image[y0:y1, x0:x1, 0]
    ground = (item < 110).mean()  # item pixels where the ground shows through
    assert 0.02 <= ground <= 0.55


def test_stitch_replaces_free_quadrants_with_donor_ground_and_keeps_every_item():
    """Quadrants around a point in the middle half take ground from the donors; a quadrant that a box touches is
    never replaced, at least one of the image's own quadrants stays, the boxes are unchanged, and a donor too small
    for a quadrant is not used for it."""
    from ordnance.datasets.composite import stitch

    image = np.full((200, 300, 3), 100, np.uint8)
    boxes = np.array([[10, 10, 30, 30]], np.float32)  # in the top-left quadrant whatever the point
    sample = Sample(image, boxes, np.array([0]), "tile")
    donor = (np.arange(400 * 500) % 97 + 150).astype(np.uint8).reshape(400, 500, 1).repeat(3, 2)  # 150-246
    tiny = np.full((20, 20, 3), 50, np.uint8)  # smaller than any quadrant: never used
    sizes = set()
    for seed in range(40):
        out = stitch(sample, [donor, tiny], np.random.default_rng(seed))
        replaced = out.image[..., 0] != 100
        assert (out.image[..., 0] >= 150)[replaced].all()  # donor ground, never the tiny donor's 50
        assert not replaced[0:31, 0:31].any()
        assert 0 < replaced.mean() < 1
        np.testing.assert_array_equal(out.boxes, boxes)
        rows, cols = np.flatnonzero(replaced.any(1)), np.flatnonzero(replaced.any(0))
        assert rows[0] == 0 or rows[-1] == 199  # a quadrant reaches the image's edges
        assert cols[0] == 0 or cols[-1] == 299
        assert out.source == "tile+seams"
        sizes.add(int(replaced.sum()))
    assert len(sizes) > 5  # the point moves from draw to draw
    blocked = Sample(image, np.array([[0, 0, 300, 200]], np.float32), np.array([0]), "tile")
    assert stitch(blocked, [donor], np.random.default_rng(0)) is blocked
    assert stitch(sample, [tiny], np.random.default_rng(0)) is sample
