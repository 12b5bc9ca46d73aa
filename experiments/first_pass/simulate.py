"""A first pass at half resolution on real imagery, simulated from scoring runs: what it skips and what it loses.

The first pass is the same exported model run on the mosaic at half resolution (a quarter of the pixels, so about
a quarter of the network's time): every window of the full-resolution grid that holds a first-pass candidate
scoring at least ``t1`` is then run at full resolution, the others are skipped. Simulated, with ``ordnance score``
doing all the work:

1. the full-resolution run (the mosaic as an analyst scores it, every candidate down to 0.02 kept);
2. the half-resolution run: the mosaic averaged 2 x 2 and written with the card's pixel size in its transform, so
   the scorer runs it as it is (items at half their size in pixels), its candidates mapped back to full pixels;
3. for each ``t1``: the windows flagged (those whose extent holds a first-pass candidate >= t1), the full run's
   candidates kept where the window whose core holds them is flagged (a skipped window reports nothing), and
   ``ordnance evaluate``'s recall and false alarms per ha at the card's threshold on what is kept;
4. the cost: windows of the first pass plus windows flagged, over the full run's windows; and the measured model
   seconds of both runs.

``t1`` is chosen on the PFM-1 valid flight's mosaic (the highest value that loses no item there) and then read on
the test flight's mosaic, which never chose anything.

    .venv/bin/python experiments/first_pass/simulate.py --model experiments/pfm1/data/fast_real.int8.onnx

Writes simulate.json and simulate.md beside this script and the table into experiments/README.md between the
``<!-- first_pass_sim:begin -->`` and ``<!-- first_pass_sim:end -->`` markers. Mosaics and runs go under data/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DATA = HERE / "data"
PFM1 = REPO / "experiments" / "pfm1"
sys.path.insert(0, str(HERE.parent))
from bound import box_centres, scorer_grid, write_results  # noqa: E402
from common import write_readme_block  # noqa: E402

BEGIN, END = "<!-- first_pass_sim:begin -->", "<!-- first_pass_sim:end -->"
CURVE_THRESHOLD = 0.02
T1_GRID = (0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3)


def mosaic(split: str) -> tuple[Path, Path]:
    """The flight's mosaic and its truth (experiments/pfm1/mosaic.py), drawn once."""
    tif = PFM1 / "data" / f"pfm1_{split}.tif"
    if not tif.exists():
        subprocess.run([sys.executable, str(PFM1 / "mosaic.py"), "--split", split, "--out", str(tif)], check=True)
    return tif, tif.with_name(f"pfm1_{split}_truth.gpkg")


def half(src_path: Path, out: Path) -> Path:
    """The mosaic averaged 2 x 2, its mask kept, written with the source's pixel size (not twice it)."""
    import rasterio
    from rasterio.enums import Resampling

    if out.exists():
        return out
    with rasterio.open(src_path) as src:
        shape = (src.height // 2, src.width // 2)
        data = src.read(out_shape=(src.count, *shape), resampling=Resampling.average)
        mask = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest)
        profile = src.profile | {"width": shape[1], "height": shape[0], "tiled": True, "blockxsize": 512,
                                 "blockysize": 512, "compress": "deflate"}  # fmt: skip
    tmp = out.with_suffix(".partial.tif")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.write_mask(mask)
    tmp.replace(out)
    return out


def scored(tif: Path, model: Path, out: Path) -> dict:
    """``ordnance score`` at the curve threshold (reused when its manifest names this model's sha256); the
    manifest."""
    import hashlib

    from ordnance.inference.scoring import ScoringJob, score

    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    done = out / "manifest.json"
    if not done.exists() or json.loads(done.read_text())["model"].get("sha256") != digest:
        score(ScoringJob(inputs=(str(tif),), model=model, out_dir=out, progress=False, resume=False,
                         score_threshold=CURVE_THRESHOLD, formats=("gpkg",)))  # fmt: skip
    return json.loads((out / "manifest.json").read_text())


def centres(run: Path, source: dict, scale: float = 1.0) -> tuple[np.ndarray, dict, dict]:
    """Candidate box centres in full-resolution pixels (on ``source``'s raster), with the run's metadata and
    fields."""
    import pyogrio.raw

    meta, _, geometry, fields = pyogrio.raw.read(run / "candidates.gpkg", layer="candidates")
    table = dict(zip(meta["fields"], fields))
    return box_centres(table["bbox_px"], source, scale), meta, {"geometry": geometry, **table}


def kept_run(run: Path, keep: np.ndarray, meta: dict, table: dict, out: Path) -> Path:
    """A copy of ``run``'s GeoPackage with only the kept candidates (its coverage layer as it was)."""
    import pyogrio.raw

    out.mkdir(parents=True, exist_ok=True)
    gpkg = out / "candidates.gpkg"
    gpkg.unlink(missing_ok=True)
    fields = [k for k in table if k != "geometry"]
    pyogrio.raw.write(gpkg, table["geometry"][keep], field_data=[np.asarray(table[k])[keep] for k in fields],
                      fields=fields, layer="candidates", driver="GPKG", geometry_type="Point",
                      crs=meta["crs"])  # fmt: skip
    c_meta, _, c_geom, c_fields = pyogrio.raw.read(run / "candidates.gpkg", layer="coverage")
    pyogrio.raw.write(gpkg, c_geom, field_data=list(c_fields), fields=list(c_meta["fields"]), layer="coverage",
                      driver="GPKG", geometry_type="MultiPolygon", crs=c_meta["crs"], append=True,
                      promote_to_multi=True)  # fmt: skip
    shutil.copy2(run / "manifest.json", out / "manifest.json")
    return gpkg


def found(report: dict) -> int:
    return round(report["overall"]["recall"] * report["overall"]["n_truth"])


def simulate(split: str, model: Path) -> dict:
    from ordnance.inference.evaluate import EvaluationSettings, evaluate_mosaic
    from ordnance.inference.grid import in_core

    tif, truth = mosaic(split)
    full_run, half_run = DATA / f"{split}_full", DATA / f"{split}_half"
    full = scored(tif, model, full_run)
    small = scored(half(tif, DATA / f"pfm1_{split}_half.tif"), model, half_run)
    grid, card, source = scorer_grid(full, full_run)
    threshold = float(card["score_threshold"])
    xy, meta, table = centres(full_run, source)
    core_of = np.full(len(xy), -1)
    for t in grid:
        core_of[in_core(t, xy)] = t.index
    first_xy, _, first_table = centres(half_run, source, scale=2.0)
    first_scores = np.asarray(first_table["score"], float)
    at = EvaluationSettings(score_threshold=threshold)
    baseline = evaluate_mosaic(full_run / "candidates.gpkg", truth, settings=at, manifest=full_run / "manifest.json")
    rows = []
    for t1 in T1_GRID:
        pts = first_xy[first_scores >= t1]
        flagged = np.zeros(len(grid), bool)
        for t in grid:
            x0, y0 = t.col_off, t.row_off
            flagged[t.index] = bool(
                ((pts[:, 0] >= x0) & (pts[:, 0] < x0 + t.width) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + t.height)).any()
            )
        keep = flagged[core_of] & (core_of >= 0)
        gpkg = kept_run(full_run, keep, meta, table, DATA / f"{split}_kept")
        report = evaluate_mosaic(gpkg, truth, settings=at, manifest=full_run / "manifest.json")
        windows = int(full["tiles"])
        cost = (int(small["tiles"]) + int(flagged.sum())) / windows
        rows.append({
            "t1": t1, "windows_flagged": int(flagged.sum()), "windows_full": windows,
            "windows_first_pass": int(small["tiles"]), "cost_share": cost, "speedup_windows": 1 / cost,
            "recall": report["overall"]["recall"], "found": found(report),
            "fa_per_ha": report["overall"]["false_alarms_per_ha"],
        })  # fmt: skip
    model_s = {"full": full["timings"]["infer_s"], "half": small["timings"]["infer_s"]}
    return {
        "split": split, "mosaic": tif.name, "items": baseline["overall"]["n_truth"], "threshold": threshold,
        "baseline_recall": baseline["overall"]["recall"], "baseline_found": found(baseline),
        "baseline_fa_per_ha": baseline["overall"]["false_alarms_per_ha"], "model_s": model_s, "rows": rows,
    }  # fmt: skip


def markdown(r: dict) -> str:
    valid, test = r["valid"], r["test"]
    chosen = r["chosen_t1"]
    lines = [
        f"Model `{r['model']}` (threshold {valid['threshold']:.3f}). Full-resolution model seconds: valid "
        f"{valid['model_s']['full']:.1f}, test {test['model_s']['full']:.1f}; the first pass's: "
        f"{valid['model_s']['half']:.1f} and {test['model_s']['half']:.1f}. Without a first pass: valid "
        f"{valid['baseline_found']} of {valid['items']} items at {valid['baseline_fa_per_ha']:.0f} FA/ha, test "
        f"{test['baseline_found']} of {test['items']} at {test['baseline_fa_per_ha']:.0f} FA/ha. t1 chosen on the "
        f"valid flight: {chosen if chosen is not None else 'none loses no item'}.",
        "",
        "| t1 | valid: windows run (share) | valid: items found | test: windows run (share) | test: items found | "
        "test: recall lost (points) | test: network speed-up (windows) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v, t in zip(valid["rows"], test["rows"]):
        mark = " (chosen)" if v["t1"] == chosen else ""
        lines.append(
            f"| {v['t1']:g}{mark} | {v['windows_first_pass']} + {v['windows_flagged']} of {v['windows_full']} "
            f"({v['cost_share']:.0%}) | {v['found']} | {t['windows_first_pass']} + {t['windows_flagged']} of "
            f"{t['windows_full']} ({t['cost_share']:.0%}) | {t['found']} | "
            f"{(test['baseline_recall'] - t['recall']) * 100:.1f} | x{t['speedup_windows']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=PFM1 / "data" / "fast_real.int8.onnx")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables from simulate.json")
    args = parser.parse_args(argv)
    if args.report:
        result = json.loads((HERE / "simulate.json").read_text())
    else:
        if not args.model.exists():
            sys.exit(f"{args.model}: no such model")
        DATA.mkdir(parents=True, exist_ok=True)
        result = {"model": args.model.name}
        for split in ("valid", "test"):
            result[split] = simulate(split, args.model.resolve())
        lossless = [v["t1"] for v in result["valid"]["rows"] if v["found"] >= result["valid"]["baseline_found"]]
        result["chosen_t1"] = max(lossless) if lossless else None
        write_results(HERE / "simulate.json", result)
    table = markdown(result)
    (HERE / "simulate.md").write_text(table)
    write_readme_block(BEGIN, END, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
