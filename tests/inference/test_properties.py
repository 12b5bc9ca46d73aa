"""Properties that must hold for every raster size, tiling and transform (hypothesis): the tile grid covers
every pixel and gives each to exactly one core, the seam merge keeps one point per object whatever the
tiling, and pixel <-> map coordinates round-trip for rotated and south-up transforms."""

from __future__ import annotations

import numpy as np
from affine import Affine
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from ordnance.inference.georef import gsd_m, map_to_pixel, pixel_to_map
from ordnance.inference.grid import in_core, tile_grid
from ordnance.inference.merge import merge_detections

SIZES = st.integers(1, 2500)


@st.composite
def grids(draw, min_overlap: int = 0):
    """Raster size, tile and overlap; the overlap at most half the tile, as the scorer allows."""
    tile = draw(st.integers(max(16, 2 * min_overlap), 700))
    return draw(SIZES), draw(SIZES), tile, draw(st.integers(min_overlap, tile // 2))


@settings(max_examples=150, deadline=None)
@given(grids(), st.integers(0, 2**32 - 1))
def test_every_pixel_is_in_a_window_and_in_exactly_one_core(grid, seed):
    width, height, tile, overlap = grid
    tiles = tile_grid(width, height, tile, overlap)
    rng = np.random.default_rng(seed)
    points = np.c_[rng.integers(0, width, 400), rng.integers(0, height, 400)] + 0.5  # pixel centres
    points = np.r_[points, [[0.5, 0.5], [width - 0.5, height - 0.5], [width - 0.5, 0.5], [0.5, height - 0.5]]]
    windows = np.zeros(len(points), int)
    cores = np.zeros(len(points), int)
    for t in tiles:
        assert 0 <= t.col_off and t.col_off + t.width <= width and 0 <= t.row_off and t.row_off + t.height <= height
        assert t.width == min(tile, width) and t.height == min(tile, height)
        x0, y0, x1, y1 = t.bounds
        windows += (points[:, 0] >= x0) & (points[:, 0] < x1) & (points[:, 1] >= y0) & (points[:, 1] < y1)
        cores += in_core(t, points)
    assert (windows >= 1).all() and (cores == 1).all()
    assert sum((t.core[2] - t.core[0]) * (t.core[3] - t.core[1]) for t in tiles) == width * height


@settings(max_examples=80, deadline=None)
@given(grids(min_overlap=42), st.integers(4, 40), st.integers(0, 2**32 - 1))
def test_seam_merge_keeps_one_point_per_object_whatever_the_tiling(grid, side, seed):
    width, height, tile, overlap = grid
    assume(overlap >= side + 2 and width >= 3 * side and height >= 3 * side)  # the card's rule: overlap > item
    rng = np.random.default_rng(seed)
    objects = []
    for _ in range(60):  # objects apart from each other by more than twice their size
        c = rng.uniform([side, side], [width - side, height - side])
        if all(np.hypot(*(c - o)) > 2.5 * side for o in objects):
            objects.append(c)
    boxes, scores, priority, owner = [], [], [], []
    for t in tile_grid(width, height, tile, overlap):
        x0, y0, x1, y1 = t.bounds
        for k, c in enumerate(objects):
            box = np.r_[c - side / 2, c + side / 2]
            if box[0] >= x0 and box[1] >= y0 and box[2] <= x1 and box[3] <= y1:  # seen whole by this window
                jitter = rng.uniform(-1, 1, 4) * side / 8  # windows decode an item within an eighth of its size
                boxes.append(box + jitter)
                scores.append(rng.uniform(0.3, 1))
                priority.append(float(in_core(t, c[None])[0]))
                owner.append(k)
    assume(boxes)
    kept = merge_detections(np.array(boxes), np.array(scores), np.zeros(len(boxes), int), priority=np.array(priority))
    assert sorted(np.array(owner)[kept].tolist()) == sorted(set(owner))


@st.composite
def transforms(draw):
    gsd = draw(st.floats(0.001, 5.0))
    angle = draw(st.floats(-180, 180))
    south_up = draw(st.booleans())
    origin = (draw(st.floats(-1e6, 1e6)), draw(st.floats(-1e6, 1e7)))
    t = Affine.translation(*origin) * Affine.rotation(angle) * Affine.scale(gsd, gsd if south_up else -gsd)
    return t, gsd


@settings(max_examples=200, deadline=None)
@given(transforms(), st.lists(st.tuples(st.floats(0, 1e5), st.floats(0, 1e5)), min_size=1, max_size=20))
def test_pixel_map_round_trip_for_rotated_and_south_up_transforms(transform, pixels):
    t, gsd = transform
    cols, rows = np.array(pixels).T
    xs, ys = pixel_to_map(t, cols, rows)
    back_c, back_r = map_to_pixel(t, xs, ys)
    scale = max(1.0, np.abs([t.c, t.f]).max() / gsd) * 1e-9  # float64 error grows with the origin in pixels
    np.testing.assert_allclose(back_c, cols, atol=1e-6 + scale * 1e3)
    np.testing.assert_allclose(back_r, rows, atol=1e-6 + scale * 1e3)
    # one pixel step is one GSD on the map, whatever the rotation
    x2, y2 = pixel_to_map(t, cols + 1, rows)
    np.testing.assert_allclose(np.hypot(x2 - xs, y2 - ys), gsd, rtol=1e-6, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.floats(-60, 60), st.floats(0.005, 0.5), st.floats(-180, 180))
def test_gsd_is_the_same_on_the_ground_in_utm_and_in_degrees(lat, gsd, angle):
    from pyproj import CRS, Transformer

    zone = 32600 + 31 if lat >= 0 else 32700 + 31
    to_utm = Transformer.from_crs(4326, zone, always_xy=True)
    x, y = to_utm.transform(3.0, lat)
    utm = Affine.translation(x, y) * Affine.rotation(angle) * Affine.scale(gsd, -gsd)
    assert abs(gsd_m(utm, CRS.from_epsg(zone)) - gsd) / gsd < 0.01
    deg = gsd / 111_320.0
    geographic = Affine.translation(3.0, lat) * Affine.scale(deg / np.cos(np.radians(lat)), -deg)
    assert abs(gsd_m(geographic, CRS.from_epsg(4326)) - gsd) / gsd < 0.02


def test_one_object_seen_as_two_classes_is_one_candidate_with_the_other_class_recorded():
    from ordnance.inference.merge import MergeSettings
    from ordnance.inference.scoring import merge_records

    # one item on a seam: the left window calls it class 2 (seen whole, 0.8), the right one class 0 (0.6);
    # a second item elsewhere, class 1 only
    records = [{"f": 0, "d": [[0, 100, 100, 110, 110, 0.8, 2, 1], [1, 100.5, 100, 110.5, 110, 0.6, 0, 0],
                              [1, 300, 300, 310, 310, 0.9, 1, 1]]}]  # fmt: skip
    merged = merge_records([None], records, MergeSettings())
    rows = sorted((row.tolist() for _, row in merged), key=lambda r: r[0])
    assert len(rows) == 2
    assert rows[0][4:6] == [0.8, 2] and int(rows[0][7]) == 1 << 0  # best class kept, class 0 recorded
    assert rows[1][5] == 1 and int(rows[1][7]) == 0
    per_class = merge_records([None], records, MergeSettings(class_aware=True))
    assert len(per_class) == 3
    absorbed = np.empty(2, np.int64)
    kept = merge_detections(np.array([[0, 0, 10, 10], [0.5, 0, 10.5, 10]]), np.array([0.5, 0.9]), np.array([0, 1]),
                            absorbed=absorbed)  # fmt: skip
    assert kept.tolist() == [1] and absorbed.tolist() == [1, -1]
