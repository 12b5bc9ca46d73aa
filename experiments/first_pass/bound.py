"""Can a cheap first pass that skips empty windows pay? An upper bound from finished scoring runs.

A first pass can skip a window only where the full detector, run on it, would report nothing at its operating
threshold: where it reports anything, a false alarm included, the first pass cannot tell that from a mine
without being as good as the detector, and dropping it costs recall. So the share of windows the full detector
leaves empty bounds what any first pass can skip without losing recall. This script reads that share off
scoring runs (the scorer's own window grid, rebuilt from the run's manifest, and the candidates at or above the
card's operating threshold, each counted in the window whose core holds its centre), with the truth items per
window beside it, and gives the speed-up of the network stage a skip of exactly those windows would buy: with a
free first pass, and with one that costs a quarter of a window (the same network at half resolution).

    .venv/bin/python experiments/first_pass/bound.py \\
        pfm1=experiments/pfm1/data/scored_fast_real_int8:experiments/pfm1/data/pfm1_test_truth.gpkg \\
        meadow_1cm=experiments/detectors/data/accuracy/scored_fast_int8_meadow_1cm:...meadow_1cm_truth.gpkg

Writes results.json and results.md beside this script and the table into experiments/README.md between the
``<!-- first_pass:begin -->`` and ``<!-- first_pass:end -->`` markers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from common import write_readme_block  # noqa: E402

BEGIN, END = "<!-- first_pass:begin -->", "<!-- first_pass:end -->"
FIRST_PASS_COST = 0.25  # the detector at half resolution: a quarter of the pixels


def truth_px(truth: Path, raster: Path) -> np.ndarray:
    """Truth points (centres of polygons) in the raster's pixel coordinates, (N, 2) columns x, y."""
    import pyogrio.raw
    import rasterio
    import shapely
    from pyproj import Transformer

    meta, _, wkb, _ = pyogrio.raw.read(truth)
    centres = shapely.centroid(shapely.from_wkb(wkb))
    x, y = shapely.get_x(centres), shapely.get_y(centres)
    with rasterio.open(raster) as src:
        if meta["crs"] and src.crs and src.crs.to_string() != meta["crs"]:
            x, y = Transformer.from_crs(meta["crs"], src.crs, always_xy=True).transform(x, y)
        col, row = ~src.transform * (np.asarray(x), np.asarray(y))
    return np.column_stack([col, row])


def scorer_grid(manifest: dict, where: Path) -> tuple[list, dict, dict]:
    """(the scorer's windows in source pixels, the model card, the input's record) of a one-input scoring run."""
    from ordnance.inference.grid import tile_grid

    if len(manifest["inputs"]) != 1:
        raise SystemExit(f"{where}: one input per run expected, got {len(manifest['inputs'])}")
    source = manifest["inputs"][0]
    card = json.loads(manifest["model"]["card"])
    tile_src = int(source["tile_src_px"])
    overlap_src = round(card["overlap_px"] * tile_src / card["tile_size_px"])
    return tile_grid(source["width"], source["height"], tile_src, overlap_src), card, source


def box_centres(bbox_px, source: dict, scale: float = 1.0) -> np.ndarray:
    """(N, 2) centres of the candidates' ``bbox_px`` strings, times ``scale``, kept on ``source``'s raster: a box
    centred on the padding beyond the raster's edge belongs to the edge window."""
    text = np.asarray(bbox_px).astype(str)
    boxes = np.array(",".join(text).split(",") if len(text) else [], float).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2 * scale
    return np.clip(centres, 0, [source["width"] - 1, source["height"] - 1])


def write_results(path: Path, data: dict) -> None:
    """JSON written whole or not at all."""
    from ordnance.inference.writers import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def bound(run: Path, truth: Path) -> dict:
    import pyogrio.raw
    from ordnance.inference.grid import in_core

    manifest = json.loads((run / "manifest.json").read_text())
    grid, card, source = scorer_grid(manifest, run)
    threshold = float(card["score_threshold"])
    meta, _, _, fields = pyogrio.raw.read(run / "candidates.gpkg", layer="candidates",
                                          columns=["score", "bbox_px"], read_geometry=False)  # fmt: skip
    table = dict(zip(meta["fields"], fields))
    keep = np.asarray(table["score"], float) >= threshold
    centres = box_centres(np.asarray(table["bbox_px"])[keep], source)
    items = truth_px(truth, Path(source["path"]))
    with_candidates = np.array([in_core(t, centres).any() for t in grid])
    with_items = np.array([in_core(t, items).any() for t in grid])
    run_windows = int(manifest["tiles"])  # windows the scorer ran (those wholly outside the valid data skipped)
    empty = run_windows - int(with_candidates.sum())
    share = empty / run_windows
    return {
        "run": str(run.relative_to(REPO)) if run.is_relative_to(REPO) else str(run),
        "model": card["model_name"], "tile_px": card["tile_size_px"], "gsd_cm": round(card["gsd_m"] * 100, 3),
        "threshold": threshold, "windows_run": run_windows, "windows_in_grid": len(grid),
        "windows_with_candidates": int(with_candidates.sum()), "windows_with_items": int(with_items.sum()),
        "items": len(items), "candidates": int(keep.sum()), "skippable_share": share,
        "speedup_free_first_pass": 1 / max(1 - share, 1e-9),
        "speedup_quarter_cost_first_pass": 1 / (FIRST_PASS_COST + 1 - share),
    }  # fmt: skip


def markdown(rows: list[dict]) -> str:
    lines = [
        "| run | model, tile, GSD | windows run | with a candidate at the threshold | with a truth item | "
        "skippable at most | network speed-up, free first pass | first pass at 1/4 cost |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['tag']} | {r['model']}, {r['tile_px']} px, {r['gsd_cm']:g} cm | {r['windows_run']} | "
            f"{r['windows_with_candidates']} | {r['windows_with_items']} | {r['skippable_share']:.1%} | "
            f"x{r['speedup_free_first_pass']:.2f} | x{r['speedup_quarter_cost_first_pass']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="TAG=RUN_DIR:TRUTH")
    args = parser.parse_args(argv)
    rows = []
    for spec in args.runs:
        tag, _, rest = spec.partition("=")
        run, _, truth = rest.partition(":")
        if not (tag and run and truth):
            raise SystemExit(f"{spec!r}: expected TAG=RUN_DIR:TRUTH")
        for path in (Path(run) / "manifest.json", Path(truth)):
            if not path.exists():
                raise SystemExit(f"{path}: no such file")
        rows.append({"tag": tag, **bound(Path(run).resolve(), Path(truth).resolve())})
        print(json.dumps(rows[-1]), flush=True)
    write_results(HERE / "results.json", {"first_pass_cost": FIRST_PASS_COST, "rows": rows})
    table = markdown(rows)
    (HERE / "results.md").write_text(table)
    write_readme_block(BEGIN, END, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
