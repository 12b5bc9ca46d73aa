"""How an item's score depends on where it lies in the scorer's window: the test mosaic's items, each placed at
fixed distances from a window's edge, through an exported ONNX file.

`ordnance score` cuts a mosaic into windows of the card's tile size that overlap by ``overlap_px`` and keeps each
detection from the window whose core holds it; the core's edge lies half the overlap in from the window's edge. An
item near a core's edge is judged by a window that sees it close to its own border, with less ground around it
and the network's zero padding near. This measures what that costs: for every truth point of the test mosaic
(mosaic.py) and each distance d from the window's left or right edge (and, separately, its top or bottom edge),
one window is read exactly as the scorer reads it (``ordnance.inference.raster.read_tile``), the item at distance d
on that axis and centred on the other, and the item's score is the highest score the file gives within the
evaluation's match tolerance of the item (``ordnance evaluate``'s rule: max(0.25 m, half the item's size)).
Placements whose window would leave the raster are skipped.

Distances are multiples of 32 px, so the item keeps its phase on the network's cell grid in each; a second set
shifts a centred window by 0 to 28 px, which changes nothing but that phase. Reported per distance: the mean and
median item score, and the share of items at or above the card's validated threshold. Per item, over the
distances a window's core can give at the card's overlap (d >= overlap/2), and over the phases: the spread of its
score, and for how many items the call at the card's threshold changes with that alone; over every placement, how
many items stay below the threshold wherever the window lies.

    .venv/bin/python experiments/pfm1/window_position.py imagenet_real_threads_seed1 [imagenet_flips2 ...]

Files: experiments/pfm1/data/<stage>.onnx (run.py writes them). Results: window_position.json and .md beside this
script (a finished stage is kept: the run resumes).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pyogrio
import rasterio
from common import HERE, load_results, save_results
from ordnance.inference.evaluate import EvaluationSettings
from ordnance.inference.grid import Tile
from ordnance.inference.raster import read_tile, value_range
from ordnance.inference.session import open_session

DATA = HERE / "data"
MOSAIC = DATA / "pfm1_test.tif"
TRUTH = DATA / "pfm1_test_truth.gpkg"
OUT = HERE / "window_position.json"
TABLE = HERE / "window_position.md"
# Source px from the window's edge, all multiples of the network's output stride times 8 (32 px), so the rows differ
# in the ground the window holds around the item and not in the item's phase on the network's cell grid.
DISTANCES = (32, 64, 96, 128, 192, 256, 384)
PHASES = tuple(range(0, 32, 4))  # shifts of a centred window by less than 32 px: the item's phase alone


def truth_points() -> tuple[np.ndarray, np.ndarray]:
    """Truth points (col, row) in mosaic pixels and their match tolerance in metres."""
    meta, _, _, fields = pyogrio.raw.read(TRUTH, read_geometry=False)
    names = list(meta["fields"])
    cols = np.asarray(fields[names.index("col")], float)
    rows = np.asarray(fields[names.index("row")], float)
    sizes = np.nan_to_num(np.asarray(fields[names.index("size_m")], float))
    settings = EvaluationSettings()
    return np.c_[cols, rows], np.maximum(settings.floor_m, settings.size_factor * sizes)


def placements(width: int, height: int, xy: np.ndarray, tile_px: int) -> list[tuple[str, int, int, int]]:
    """(axis, distance, col_off, row_off) of every window that puts the item at that distance from one edge."""
    x, y = int(xy[0]), int(xy[1])
    out = []
    for d in DISTANCES:
        for axis in ("x", "y"):
            for side in ("near", "far") if d != tile_px // 2 else ("near",):
                along = d if side == "near" else tile_px - d
                if axis == "x":
                    col, row = x - along, y - tile_px // 2
                else:
                    col, row = x - tile_px // 2, y - along
                if 0 <= col <= width - tile_px and 0 <= row <= height - tile_px:
                    out.append((axis, d, col, row))
    for shift in PHASES:
        col, row = x - tile_px // 2 - shift, y - tile_px // 2
        if 0 <= col <= width - tile_px and 0 <= row <= height - tile_px:
            out.append(("phase", shift, col, row))
    return out


def measure(stage: str) -> dict:
    for needed in (MOSAIC, TRUTH):
        if not needed.exists():
            raise SystemExit(f"{needed}: missing; lay the test mosaic and its truth first (mosaic.py)")
    path = DATA / f"{stage}.onnx"
    if not path.exists():
        raise SystemExit(f"{path}: no exported file for stage {stage} (run.py writes it)")
    detector = open_session(path)
    card = detector.card
    size = card.tile_size_px
    points, tolerance_m = truth_points()
    with rasterio.open(MOSAIC) as dataset:
        gsd = abs(dataset.transform.a)
        tile_src = round(size * card.gsd_m / gsd) if card.gsd_m else size
        if tile_src != size:
            raise SystemExit(f"{MOSAIC}: GSD {gsd} m differs from the card's {card.gsd_m} m; rebuild it at the card's")
        scale = value_range(dataset, card)
        scores: list[list[tuple[str, int, float]]] = []
        started = time.time()
        for index, (xy, tol_m) in enumerate(zip(points, tolerance_m)):
            item = []
            for axis, d, col, row in placements(dataset.width, dataset.height, xy, size):
                tile = Tile(0, col, row, size, size, (col, row, col + size, row + size))
                image, _ = read_tile(dataset, tile, card, scale, size)
                boxes, s, _ = detector.run(image[None])
                centres = (boxes[0, :, :2] + boxes[0, :, 2:]) / 2 + [col, row]
                near = np.hypot(*(centres - xy).T) * gsd <= tol_m
                item.append((axis, d, float(s[0][near].max()) if near.any() else 0.0))
            scores.append(item)
            print(f"{stage}: item {index + 1}/{len(points)} ({time.time() - started:.0f} s)", file=sys.stderr)
    return {"file": str(path), "sha256": detector.sha256, "threshold": card.score_threshold,
            "overlap_px": card.overlap_px, "scores": scores}  # fmt: skip


def summarise(entry: dict) -> dict:
    threshold, half = entry["threshold"], entry["overlap_px"] // 2
    rows = []
    for d in DISTANCES:
        values = np.array([s for item in entry["scores"] for axis, dd, s in item if dd == d and axis != "phase"])
        rows.append(
            {
                "distance_px": d,
                "placements": int(len(values)),
                "mean_score": float(values.mean()),
                "median_score": float(np.median(values)),
                "share_at_threshold": float((values >= threshold).mean()),
            }
        )
    core = [np.array([s for axis, d, s in item if d >= half and axis != "phase"]) for item in entry["scores"]]
    phase = [np.array([s for axis, _, s in item if axis == "phase"]) for item in entry["scores"]]

    def spread(groups: list[np.ndarray]) -> dict:
        groups = [g for g in groups if len(g)]
        width = [float(g.max() - g.min()) for g in groups]
        return {
            "items": len(groups),
            "calls_changed": sum(int((g >= threshold).any() and (g < threshold).any()) for g in groups),
            "median_spread": float(np.median(width)),
            "max_spread": float(np.max(width)),
        }

    every = [np.array([s for _, _, s in item]) for item in entry["scores"] if item]
    return {
        "by_distance": rows,
        "core": spread(core),
        "phase": spread(phase),
        "items_placed": len(every),
        "items_below_threshold_everywhere": sum(int((g < threshold).all()) for g in every),
        "items_called_somewhere_not_everywhere": sum(
            int((g >= threshold).any() and (g < threshold).any()) for g in every
        ),
    }


def _items(n: int) -> str:
    return f"{n} item" if n == 1 else f"{n} items"


def table(results: dict) -> str:
    lines = [
        "| stage | distance from the window's edge (px) | placements | mean score | median score"
        " | share at the card's threshold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    notes = []
    for stage, entry in results.items():
        s = entry["summary"]
        for row in s["by_distance"]:
            lines.append(
                f"| {stage} | {row['distance_px']} | {row['placements']} | {row['mean_score']:.3f} | "
                f"{row['median_score']:.3f} | {row['share_at_threshold']:.3f} |"
            )
        core, phase = s["core"], s["phase"]
        notes.append(
            f"- {stage} (threshold {entry['threshold']:.3f}): over the distances a window's core can give at the "
            f"card's overlap ({entry['overlap_px']} px: {entry['overlap_px'] // 2} px and more), an item's score "
            f"spreads by {core['median_spread']:.3f} (median over {core['items']} items; largest "
            f"{core['max_spread']:.3f}) and the placement alone decides the call at the card's threshold for "
            f"{_items(core['calls_changed'])}. Shifting a centred window by 0 to {PHASES[-1]} px (the item's phase "
            f"on the network's cell grid, nothing else): spread {phase['median_spread']:.3f} (median over "
            f"{phase['items']} items; largest {phase['max_spread']:.3f}), the call changed for "
            f"{_items(phase['calls_changed'])}. Over every placement, {s['items_below_threshold_everywhere']} of the "
            f"{s['items_placed']} items placed (none where every such window would leave the mosaic) stay "
            f"below the threshold wherever the window lies; called in some placements only: "
            f"{s['items_called_somewhere_not_everywhere']}."
        )
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", help="run.py stages whose exported file lies in experiments/pfm1/data")
    args = parser.parse_args(argv)
    results = load_results(OUT)
    for stage in args.stages:
        if stage not in results:
            results[stage] = measure(stage)
        results[stage]["summary"] = summarise(results[stage])
        save_results(OUT, results)
    tmp = TABLE.with_suffix(".md.tmp")
    tmp.write_text(table(results))
    tmp.replace(TABLE)
    print(TABLE.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
