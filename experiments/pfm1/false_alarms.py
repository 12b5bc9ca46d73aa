"""What a model confuses with a mine on the test mosaic: its highest-scoring false alarms beside the items it
scores lowest, as a contact sheet, with the scores in JSON.

Reads a stage's scoring of the test mosaic (run.py: data/scored_<stage>_fp32/candidates.gpkg) and the mosaic's
point truth; a candidate is a hit within half the item's size, at least 5 cm, as in run.py's evaluation.
Writes docs/pfm1_false_alarms_<stage>.jpg (top two rows: the 16 highest-scoring false alarms; bottom row: the 8
items with the lowest best score, 80 px at 2.94 mm, shown 2x) and false_alarms_<stage>.json beside this script,
which also says how many of the 5, 16 and 50 highest false alarms lie on a seam of the mosaic (within 16 px of
their tile's edge, where the tiles, photographed apart, meet) against that band's share of the mosaic, and how many
false alarms per ha an analyst reviews to find 90%, 95% and every item: those scored at or above the lowest score
that still finds that share (the stage's scanned area from results.json; None where an item has no candidate).

    .venv/bin/python experiments/pfm1/false_alarms.py synth_real_f03 photo_synth
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import cv2
import numpy as np
import pyogrio
import rasterio
import shapely
from common import HERE, REPO, load_results
from ordnance.inference.metrics import match_points

DATA = HERE / "data"
FLOOR_M, SIZE_FACTOR, SIDE = 0.05, 0.5, 80
SEAM_PX = 16  # a false alarm this close to the edge of its tile lies on a seam of the mosaic (4.7 cm at 2.94 mm)
SHARES = (0.9, 0.95, 1.0)  # shares of the items for false_alarms_to_find


def edge_distance_px(src, xy: np.ndarray, placement: list[dict]) -> np.ndarray:
    """Pixels from each point to the nearest edge of the tile that holds it on the mosaic (mosaic.py's placement),
    where the tile meets its neighbour or the mosaic's border."""
    rows, cols = (np.asarray(v) for v in rasterio.transform.rowcol(src.transform, xy[:, 0], xy[:, 1]))
    out = np.full(len(xy), np.inf)
    for p in placement:
        c0, r0, c1, r1 = p["col_off"], p["row_off"], p["col_off"] + p["width"], p["row_off"] + p["height"]
        inside = (cols >= c0) & (cols < c1) & (rows >= r0) & (rows < r1)
        d = np.minimum.reduce([cols - c0, c1 - 1 - cols, rows - r0, r1 - 1 - rows])
        out[inside] = d[inside]
    return out


def band_share(placement: list[dict], band: int) -> float:
    """The share of the tiles' pixels within ``band`` pixels of a tile edge."""
    total = sum(p["width"] * p["height"] for p in placement)
    core = sum(max(0, p["width"] - 2 * band) * max(0, p["height"] - 2 * band) for p in placement)
    return (total - core) / total


def false_alarms_to_find(best: np.ndarray, false_scores: np.ndarray, shares=SHARES) -> dict[str, int | None]:
    """False alarms scored at or above the threshold that finds ``share`` of the items (the k-th highest of the
    items' best scores, k = ceil(share x items)): what an analyst reviews on the way to that recall. A tie with an
    item counts as reviewed. None where that item has no candidate at all."""
    order = np.sort(np.asarray(best, float))[::-1]
    out: dict[str, int | None] = {}
    if not len(order):  # no item: no recall to reach
        return out
    for share in shares:
        k = max(1, math.ceil(share * len(order) - 1e-9))
        threshold = order[k - 1]
        out[f"{share:g}"] = int((np.asarray(false_scores) >= threshold).sum()) if threshold > 0 else None
    return out


def _points(path, layer=None):
    meta, table = pyogrio.read_arrow(path, layer=layer)
    geoms = shapely.from_wkb(np.asarray(table[meta["geometry_name"] or "geom"]))
    return np.c_[shapely.get_x(geoms), shapely.get_y(geoms)], table


def _crop(src, x: float, y: float) -> np.ndarray:
    row, col = src.index(x, y)
    window = rasterio.windows.Window(col - SIDE // 2, row - SIDE // 2, SIDE, SIDE)
    rgb = src.read([1, 2, 3], window=window, boundless=True).transpose(1, 2, 0)[..., ::-1]
    return cv2.resize(np.ascontiguousarray(rgb), (2 * SIDE, 2 * SIDE), interpolation=cv2.INTER_NEAREST)


def sheet(stage: str) -> dict:
    scored = DATA / f"scored_{stage}_fp32" / "candidates.gpkg"
    if not scored.exists():
        raise SystemExit(f"{scored}: no scoring of stage {stage} (run.py {stage} first)")
    p_xy, p_table = _points(scored, "candidates")
    t_xy, t_table = _points(DATA / "pfm1_test_truth.gpkg")
    scores = np.asarray(p_table["score"], float)
    tolerance = np.maximum(FLOOR_M, SIZE_FACTOR * np.asarray(t_table["size_m"], float))
    matches = match_points(p_xy, scores, t_xy, tolerance)
    dist = np.sqrt(((p_xy[:, None] - t_xy[None]) ** 2).sum(-1))
    near_item = (dist <= tolerance[None]).any(axis=1)
    false = np.flatnonzero(~near_item)  # neither a hit nor a second peak on an item
    false = false[np.argsort(-scores[false])]
    placement = json.loads((DATA / "pfm1_test.json").read_text())["placement"]
    best = np.array([scores[dist[:, j] <= tolerance[j]].max(initial=0.0) for j in range(len(t_xy))])
    lowest = np.argsort(best)[:8]
    to_find = false_alarms_to_find(best, scores[false])  # over every false alarm, before the sheet keeps 16
    with rasterio.open(DATA / "pfm1_test.tif") as src:
        edge = edge_distance_px(src, p_xy[false[:50]], placement)
        false = false[:16]
        crops = [_crop(src, *p_xy[i]) for i in false] + [_crop(src, *t_xy[j]) for j in lowest]
    on_seam = {f"top_{k}": int((edge[:k] < SEAM_PX).sum()) for k in (5, 16, 50) if len(edge) >= k}
    mosaic = load_results(HERE / "results.json").get(stage, {}).get("mosaic", {})
    area_ha = mosaic.get("fp32", {}).get("area_scanned_ha")
    blank = np.zeros_like(crops[0])
    crops += [blank] * (24 - len(crops))
    image = np.vstack([np.hstack(crops[0:8]), np.hstack(crops[8:16]), np.hstack(crops[16:24])])
    out = REPO / "docs" / f"pfm1_false_alarms_{stage}.jpg"
    tmp = out.with_suffix(".tmp.jpg")  # a stopped run leaves no half-written sheet under the final name
    cv2.imwrite(str(tmp), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    os.replace(tmp, out)
    record = {
        "stage": stage,
        "candidates": len(scores),
        "hits": int((matches.matched_truth >= 0).sum()),
        "items": len(t_xy),
        "top_false_alarm_scores": [round(float(scores[i]), 4) for i in false],
        "top_false_alarm_xy": [[round(float(v), 3) for v in p_xy[i]] for i in false],
        "item_best_scores": sorted(round(float(v), 4) for v in best),
        "items_above_the_top_false_alarm": int((best > scores[false[0]]).sum()) if len(false) else len(t_xy),
        "top_false_alarm_edge_px": [int(v) if np.isfinite(v) else None for v in edge[:16]],  # None: off every tile
        "seam_band_px": SEAM_PX,
        "seam_band_area_share": round(band_share(placement, SEAM_PX), 4),
        "false_alarms_on_seams": on_seam,
        "false_alarms_to_find": to_find,  # share of the items -> false alarms scored at or above the threshold
        "area_scanned_ha": area_ha,
        "false_alarms_per_ha_to_find": {
            k: (round(v / area_ha, 1) if v is not None else None) for k, v in to_find.items()
        }
        if area_ha
        else None,
        "sheet": str(out.relative_to(REPO)),
    }
    path = HERE / f"false_alarms_{stage}.json"
    path.with_suffix(".json.tmp").write_text(json.dumps(record, indent=1) + "\n")
    os.replace(path.with_suffix(".json.tmp"), path)
    print(f"{stage}: {record['items_above_the_top_false_alarm']} of {len(t_xy)} items above the top false alarm; {out}")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+")
    for stage in parser.parse_args(argv).stages:
        sheet(stage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
