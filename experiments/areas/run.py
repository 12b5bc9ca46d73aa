"""Proposed hazard areas against known minefields on seeded synthetic surveys.

Each survey is drawn by the synthetic generator with a few layout patterns (AT rows, AP clusters, PFM-1 ellipses,
submunition footprints, isolated UXO); every truth item records its pattern, its minefield. The survey is scored
with `ordnance score`, then areas are derived with the default rules in two arms:

- unreviewed: every candidate at or above the model card's operating threshold is evidence;
- dense: the same candidates, kept only where they cluster beyond chance (``--density-alpha 0.01``);
- reviewed: a simulated reviewer decides every candidate at or above the threshold from the truth (a hit within
  half the item's size, at least 5 cm, is confirmed, anything else rejected), imported with `ordnance review
  import`, so only confirmed items make areas.

True minefields: the convex hull of each pattern's items grown by 1 m (a lone item is a 1 m disc); patterns whose
hulls overlap are one minefield. Measures: the share of true items inside an area; how many true minefields are
covered by exactly one area, by none or by several; areas holding items of more than one minefield; the area
proposed against the true minefields' area; false areas (holding no true item) per 100 ha scanned.

    .venv/bin/python experiments/areas/run.py --model experiments/models/synthetic.onnx
    .venv/bin/python experiments/areas/run.py --model experiments/models/synthetic.int8.onnx --seeds 41 42 43 \
        --size-px 20000 --patterns 5 --layouts at_row ap_cluster pfm_ellipse submunitions

The second draws 4 ha surveys from the minefield patterns only. Isolated UXO (one per 400 m² wherever the pattern
is drawn) lie about 20 m apart over the whole survey, within the UXO linking distance: a battle area whose
hazardous area is the whole survey, which the rules propose as one area, not a minefield to tell apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
BIN = Path(sys.executable).absolute().parent
FLOOR_M = 0.05
TRUE_BUFFER_M = 1.0
DENSITY_ALPHA = 0.01  # the dense arm: unreviewed candidates only where they cluster beyond chance


def _read(path: Path, layer: str | None = None) -> tuple[list, dict, str]:
    meta, _, geometry, fields = pyogrio.raw.read(path, layer=layer)
    return [shapely.from_wkb(g) for g in geometry], dict(zip(meta["fields"], fields)), meta["crs"]


def survey(seed: int, size_px: int, patterns: int, layouts: tuple[str, ...] | None) -> dict[str, Path]:
    """The seeded survey mosaic and its truth (generated once)."""
    from ordnance.datasets.synth.writers import write_mosaic

    path = DATA / f"survey_{seed}.tif"
    truth = DATA / f"survey_{seed}_truth.gpkg"
    if not (path.exists() and truth.exists()):
        write_mosaic(
            path, width_px=size_px, height_px=size_px, gsd_m=0.01, seed=seed, patterns=patterns, layouts=layouts
        )
    return {"mosaic": path, "truth": truth}


def score(mosaic: Path, model: Path, out: Path) -> None:
    if (out / "manifest.json").exists():
        return
    subprocess.run([str(BIN / "ordnance"), "score", str(mosaic), "--model", str(model), "-o", str(out),
                    "--no-review", "--format", "gpkg", "--no-progress"], check=True)  # fmt: skip


def true_minefields(points: list, fields: dict) -> list[dict]:
    """Minefields: each pattern's hull grown by 1 m, overlapping ones merged; {"polygon", "items" (indices)}."""
    pattern = np.asarray(fields["pattern"]).astype(int)
    xy = np.array([[p.x, p.y] for p in points])
    hulls = [
        shapely.convex_hull(shapely.multipoints(xy[pattern == k])).buffer(TRUE_BUFFER_M) for k in np.unique(pattern)
    ]
    parts = list(shapely.get_parts(shapely.union_all(hulls)))
    tree = shapely.STRtree(parts)
    owner = np.full(len(xy), -1)
    p_idx, part_idx = tree.query(shapely.points(xy), predicate="intersects")
    owner[p_idx] = part_idx
    return [{"polygon": part, "items": np.flatnonzero(owner == k)} for k, part in enumerate(parts)]


def simulated_review(run: Path, truth_points: list, truth_fields: dict) -> dict[str, int]:
    """Decide every candidate at or above the card's threshold from the truth and import the decisions."""
    from ordnance.inference.metrics import match_points
    from ordnance.inference.review import merge_decisions, run_id

    manifest = json.loads((run / "manifest.json").read_text())
    threshold = json.loads(manifest["model"]["card"])["score_threshold"]
    _, table, _ = _read(run / "candidates.gpkg", "candidates")
    score_ = np.asarray(table["score"], float)
    decide = np.flatnonzero(score_ >= threshold)
    pred_xy = np.c_[np.asarray(table["x"], float), np.asarray(table["y"], float)][decide]
    truth_xy = np.array([[p.x, p.y] for p in truth_points])
    tolerance = np.maximum(np.asarray(truth_fields["size_m"], float) / 2, FLOOR_M)
    matches = match_points(pred_xy, score_[decide], truth_xy, tolerance)
    features = [
        {"type": "Feature", "geometry": None, "properties": {
            "id": int(table["id"][i]), "review_status": "confirmed" if hit else "rejected", "run": run_id(manifest)}}
        for i, hit in zip(decide, matches.true_positive | matches.duplicate)  # a second hit on an item is on it too
    ]  # fmt: skip
    decisions = run / "decisions.geojson"
    decisions.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return merge_decisions(run, decisions)


def measure(run: Path, minefields: list[dict], truth_points: list, truth_fields: dict, scanned_ha: float) -> dict:
    polygons, fields, _ = _read(run / "candidates.gpkg", "hazard_areas")
    xy = shapely.points(np.array([[p.x, p.y] for p in truth_points]))
    inside_area = np.full(len(truth_points), -1)
    if polygons:
        tree = shapely.STRtree(polygons)
        t_idx, a_idx = tree.query(xy, predicate="within")
        inside_area[t_idx] = a_idx
    per_field = [len({int(a) for a in inside_area[m["items"]] if a >= 0}) for m in minefields]
    field_of_item = np.full(len(truth_points), -1)
    for k, m in enumerate(minefields):
        field_of_item[m["items"]] = k
    fields_per_area = [len({int(f) for f in field_of_item[inside_area == a]}) for a in range(len(polygons))]
    true_ha = sum(m["polygon"].area for m in minefields) / 10_000
    proposed_ha = float(np.sum(fields.get("area_ha", []))) if polygons else 0.0
    false_areas = sum(1 for n in fields_per_area if n == 0)
    kinds = np.asarray(truth_fields["item"]).astype(str)
    return {
        # each true minefield: its item types, items, items inside an area, and the areas it lies in
        "per_minefield": [
            {
                "items_types": sorted(set(kinds[m["items"]])),
                "items": len(m["items"]),
                "inside": int(np.sum(inside_area[m["items"]] >= 0)),
                "areas": n,
            }
            for m, n in zip(minefields, per_field)
        ],
        "areas": len(polygons),
        "items_inside": float(np.mean(inside_area >= 0)) if len(truth_points) else float("nan"),
        "minefields": len(minefields),
        "minefields_one_area": sum(n == 1 for n in per_field),
        "minefields_no_area": sum(n == 0 for n in per_field),
        "minefields_several_areas": sum(n > 1 for n in per_field),
        "areas_over_several_minefields": sum(n > 1 for n in fields_per_area),
        "true_ha": true_ha,
        "proposed_ha": proposed_ha,
        "proposed_over_true": proposed_ha / true_ha if true_ha else float("nan"),
        "false_areas": false_areas,
        "false_areas_per_100ha": 100 * false_areas / scanned_ha,
        "scanned_ha": scanned_ha,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "experiments" / "models" / "synthetic.onnx")
    parser.add_argument("--seeds", type=int, nargs="+", default=[31, 32])
    parser.add_argument("--size-px", type=int, default=12000, help="survey side at 1 cm (12,000 px: 1.44 ha)")
    parser.add_argument("--patterns", type=int, default=4, help="layout patterns per survey")
    parser.add_argument(
        "--layouts", nargs="+", default=None, help="layout patterns drawn from (default: all, isolated UXO included)"
    )
    args = parser.parse_args(argv)
    if not args.model.exists():
        parser.error(f"{args.model}: no such model; export the synthetic recipe's checkpoint there (see README)")
    from ordnance.inference.areas import AreaRules, derive_run_areas

    DATA.mkdir(parents=True, exist_ok=True)
    layouts = tuple(args.layouts) if args.layouts else None
    # other surveys already measured stay (each survey records how it was drawn and scored)
    results = json.loads((HERE / "results.json").read_text()) if (HERE / "results.json").exists() else {}
    results.setdefault("surveys", {})
    for seed in args.seeds:
        files = survey(seed, args.size_px, args.patterns, layouts)
        scored = DATA / f"scored_{seed}"
        score(files["mosaic"], args.model, scored)
        truth_points, truth_fields, _ = _read(files["truth"])
        minefields = true_minefields(truth_points, truth_fields)
        manifest = json.loads((scored / "manifest.json").read_text())
        scanned = manifest["area_scanned_ha"]
        card = json.loads(manifest["model"]["card"])
        defaults = AreaRules()
        entry = {"rules": {"link_m": defaults.link_m, "buffer_m": defaults.buffer_m, "hulls_joined": True},
                 "size_px": args.size_px, "patterns": args.patterns, "layouts": list(layouts or []),
                 "model": str(args.model), "model_run": card.get("mlflow_run_id"),
                 "model_quantization": card.get("quantization")}  # fmt: skip
        for arm in ("unreviewed", "dense", "reviewed"):
            run = DATA / f"areas_{seed}_{arm}"
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir()
            for name in ("candidates.gpkg", "manifest.json"):
                shutil.copy2(scored / name, run / name)
            derive_run_areas(run, AreaRules(density_alpha=DENSITY_ALPHA) if arm == "dense" else None)
            decisions = simulated_review(run, truth_points, truth_fields) if arm == "reviewed" else None
            entry[arm] = measure(run, minefields, truth_points, truth_fields, scanned) | (
                {"decisions": decisions} if decisions else {}
            )
            print(seed, arm, json.dumps(entry[arm]), flush=True)
        results["surveys"][str(seed)] = entry
        tmp = HERE / "results.json.tmp"  # after each survey: a stopped run keeps the surveys it finished
        tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, HERE / "results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
