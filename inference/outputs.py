"""Turn merged detections into georeferenced candidates, write every output and the run manifest."""

from __future__ import annotations

import base64
import csv
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import shapely
from affine import Affine
from ordnance.inference.camera import place
from ordnance.inference.errors import OutputError
from ordnance.inference.georef import pixel_to_map, to_wgs84
from ordnance.inference.preview import PREVIEW_FILE, Overview, decode, write_preview
from ordnance.inference.raster import RemoteFile
from ordnance.inference.session import file_sha256
from ordnance.inference.writers import FIELDS, write_csv, write_gpkg, write_json, write_lonlat_layer
from pyproj import CRS

log = logging.getLogger(__name__)


def _coverage(plan, records, index: int, transform: Affine | None) -> shapely.Geometry:
    """Union of the cores of windows that held data, each cut to its pixels that held data, in map units (pixels
    when not georeferenced)."""
    mine = [r for r in records if r["f"] == index]
    skipped = {t for r in mine for t in r.get("skip", [])}
    partial = {t: shapely.from_wkb(bytes.fromhex(shape)) for r in mine for t, shape in r.get("cover", [])}
    pieces = [partial[t.index] if t.index in partial else shapely.box(*t.core) for t in plan.tiles
              if t.index not in skipped]  # fmt: skip
    pieces = [p for p in pieces if not p.is_empty]
    if not pieces:
        return shapely.MultiPolygon()
    area = shapely.union_all(pieces)
    if transform is not None:
        area = shapely.transform(area, lambda xy: np.c_[pixel_to_map(transform, xy[:, 0], xy[:, 1])])
    return area


def build_outputs(job, detector, plans, checkpoint, threshold: float, timings: dict, started: float,
                  cluster: dict | None = None):  # fmt: skip
    """Merge, georeference and write the outputs of a complete run; return the ScoringResult. ``cluster``
    (where the windows were scored: engine, address, nodes, workers) goes into the manifest."""
    from ordnance.inference.scoring import ScoringResult, merge_records

    tick = time.perf_counter()
    card = detector.card
    refs: list[tuple[int, int]] = []
    merged = merge_records(plans, checkpoint.records, job.merge, refs)
    timings["merge_s"] = time.perf_counter() - tick
    # "class" .. "source", and the other classes merged into each candidate: per detection
    columns: dict[str, list[Any]] = {k: [] for k in (*FIELDS[1 : FIELDS.index("source") + 1], "also_seen_as")}
    coverages, crs_set, area_m2, sources = [], set(), 0.0, []
    for index, plan in enumerate(plans):
        info = plan.info
        rows = np.array([row for f, row in merged if f == index]).reshape(-1, 8)
        geo = info.crs_wkt is not None
        transform = Affine(*info.transform) if geo else None
        cx, cy = (rows[:, 0] + rows[:, 2]) / 2, (rows[:, 1] + rows[:, 3]) / 2
        if geo:
            xs, ys = pixel_to_map(transform, cx, cy)
            lon, lat = to_wgs84(info.crs_wkt, xs, ys)
            crs_name = f"EPSG:{info.epsg}" if info.epsg else CRS.from_wkt(info.crs_wkt).name
            location = "map"
            crs_set.add(info.crs_wkt)
            uncertainty = np.full(len(rows), np.nan)  # the orthomosaic's own georeferencing error is not known
        elif plan.geometry is not None:
            xs, ys = cx, cy
            lon, lat, location, uncertainty = place(info.pose, plan.geometry, cx, cy, info.width, info.height)
            crs_name = "pixel"
        else:
            xs, ys = cx, cy
            lon, lat = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
            crs_name, location, uncertainty = "pixel", "pixel", np.full(len(rows), np.nan)
        gsd = info.gsd_m if info.gsd_m else np.nan
        columns["class"] += [card.class_names[int(c)] for c in rows[:, 5]]
        columns["also_seen_as"] += [",".join(n for b, n in enumerate(card.class_names) if int(m) >> b & 1)
                                    for m in rows[:, 7]]  # fmt: skip
        columns["score"] += rows[:, 4].round(6).tolist()
        columns["lon"] += list(lon)
        columns["lat"] += list(lat)
        columns["x"] += list(xs)
        columns["y"] += list(ys)
        columns["crs"] += [crs_name] * len(rows)
        columns["epsg"] += [info.epsg or 0] * len(rows)
        columns["location"] += [location] * len(rows)
        columns["position_uncertainty_m"] += list(uncertainty)
        columns["bbox_px"] += [",".join(f"{v:.1f}" for v in r[:4]) for r in rows]
        columns["width_m"] += list((rows[:, 2] - rows[:, 0]) * gsd)
        columns["height_m"] += list((rows[:, 3] - rows[:, 1]) * gsd)
        columns["gsd_m"] += [gsd] * len(rows)
        columns["source"] += [info.path.name] * len(rows)
        coverages.append(_coverage(plan, checkpoint.records, index, transform))
        px = sum(r["px"] for r in checkpoint.records if r["f"] == index)
        file_area = px * gsd**2 if geo and info.gsd_m else 0.0
        area_m2 += file_area
        sources.append(_source_entry(plan, px, file_area))

    n = len(columns["class"])
    table = {k: np.array(v) for k, v in columns.items()}
    table["score"] = table["score"].astype(np.float64) if n else np.zeros(0)
    for name in ("lon", "lat", "x", "y", "position_uncertainty_m", "width_m", "height_m", "gsd_m"):
        table[name] = table[name].astype(np.float64) if n else np.zeros(0)
    table["epsg"] = table["epsg"].astype(np.int32) if n else np.zeros(0, np.int32)
    table["id"] = np.arange(1, n + 1, dtype=np.int64)
    table["model_name"] = np.array([card.model_name] * n, dtype=object)
    table["model_version"] = np.array([card.model_version] * n, dtype=object)
    table["model_sha256"] = np.array([detector.sha256] * n, dtype=object)
    table["processed_utc"] = np.array([checkpoint.started_utc] * n, dtype=object)
    table["review_status"] = np.array(["unreviewed"] * n, dtype=object)
    for name in ("class", "also_seen_as", "crs", "location", "bbox_px", "source"):
        table[name] = table[name].astype(object)

    tick = time.perf_counter()
    out = Path(job.out_dir)
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    staged: dict[str, Path] = {}
    try:
        if "gpkg" in job.formats:
            one_crs = len(crs_set) == 1
            crs_wkt = next(iter(crs_set)) if one_crs else ("EPSG:4326" if crs_set else None)
            geom = np.c_[table["x"], table["y"]] if one_crs or not crs_set else np.c_[table["lon"], table["lat"]]
            cover = shapely.union_all(coverages) if one_crs or not crs_set else shapely.MultiPolygon()
            staged["gpkg"] = stage / STALE["gpkg"]
            write_gpkg(staged["gpkg"], table, geom, crs_wkt, cover)
        if "geojson" in job.formats:
            staged["geojson"] = stage / STALE["geojson"]
            write_lonlat_layer(staged["geojson"], table, "GeoJSON")
        if "kml" in job.formats:
            staged["kml"] = stage / STALE["kml"]
            write_lonlat_layer(staged["kml"], table, "KML")
        if "csv" in job.formats:
            staged["csv"] = stage / STALE["csv"]
            write_csv(staged["csv"], table)
        expected = {"gpkg": n, "csv": n, "geojson": int(np.isfinite(table["lon"]).sum()) if n else 0}
        expected["kml"] = expected["geojson"]
        for kind, path in staged.items():
            verify_output(path, kind, expected[kind])
        if "gpkg" in staged and plans and all(p.preview for p in plans):  # the page reads the GeoPackage
            staged["preview"] = stage / STALE["preview"]
            tick_preview = time.perf_counter()
            _write_preview(staged["preview"], plans, checkpoint.records, refs, detector.card.score_threshold / 2)
            timings["preview_write_s"] = time.perf_counter() - tick_preview
    except Exception:
        shutil.rmtree(stage, ignore_errors=True)  # nothing of this run reaches the folder; the last set stays whole
        raise
    outputs = commit_outputs(out, staged)
    stale = remove_stale(out, set(outputs))
    timings["write_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - started
    n_tiles = sum(len(p.tiles) for p in plans)
    megapixels = sum(p.info.width * p.info.height for p in plans) / 1e6
    manifest = {
        "inputs": sources,
        "model": {"path": str(detector.path), "sha256": detector.sha256, "card": card.to_json()},
        "lineage": card.lineage,
        "settings": {
            "score_threshold": threshold,
            "operating_point": card.operating_point if job.score_threshold is None else "user",
            "overlap_px": card.overlap_px if job.overlap_px is None else job.overlap_px,
            "gsd_tolerance": job.gsd_tolerance,
            "input_gsd_m": job.input_gsd_m,
            "merge": {
                "ios_min": job.merge.ios_min,
                "centre_frac": job.merge.centre_frac,
                "class_aware": job.merge.class_aware,
            },
            "device": job.device,
            "execution_provider": detector.provider,
            # a GPU asked for and not found: said here and in the command's output, not only in a log line
            "device_fallback": device_fallback(job.device, detector.provider),
            "precision": "float16 (TensorRT's engine; the export's parity gate checked the float32 graph only)"
            if detector.precision == "fp16"
            else "the exported graph's",
            "io_binding": detector.io_binding,
            "readers": plans[0].readers if plans else 0,
            "threads": job.threads,
            "sessions": job.sessions,
            "formats": list(job.formats),
        },
        "cluster": cluster,
        "started_utc": checkpoint.started_utc,
        "counts": dict(Counter(table["class"].tolist())),
        "candidates": n,
        "area_scanned_ha": area_m2 / 10_000,
        "tiles": n_tiles,
        "tiles_skipped": sum(len(r.get("skip", [])) for r in checkpoint.records),
        "megapixels": megapixels,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {k: v.name for k, v in outputs.items()},
        "removed_stale": stale,
    }
    outputs["manifest"] = out / "manifest.json"
    write_json(outputs["manifest"], manifest)
    log.info("%d candidates from %d file(s), %.2f ha scanned", n, len(plans), manifest["area_scanned_ha"])
    return ScoringResult(True, table, outputs, manifest)


STALE = {"gpkg": "candidates.gpkg", "geojson": "candidates.geojson", "kml": "candidates.kml", "csv": "candidates.csv",
         "preview": PREVIEW_FILE}  # fmt: skip
STAGING = ".ordnance-staging"


def verify_output(path: Path, kind: str, expected: int) -> None:
    """Read a staged output back and check it holds ``expected`` candidates (GDAL's KML driver, for one, does not
    report a failed write: a full disk leaves a truncated file). OutputError naming the file otherwise."""
    try:
        if kind == "csv":
            with open(path, newline="") as handle:
                rows = list(csv.reader(handle))
            count, complete = len(rows) - 1, bool(rows) and rows[0][0] == "id"
        else:
            layer = "candidates" if kind == "gpkg" else None
            count, complete = pyogrio.read_info(path, layer=layer, force_feature_count=True)["features"], True
            if kind == "gpkg":
                complete = pyogrio.read_info(path, layer="coverage", force_feature_count=True)["features"] == 1
    except Exception as error:  # GDAL and the csv module raise many kinds for a damaged file
        raise OutputError(f"failed its read-back check ({str(error).splitlines()[0][:120]}); the previous outputs "
                          "are untouched", path) from None  # fmt: skip
    if count != expected or not complete:
        raise OutputError(f"read back {count} of {expected} candidates; the previous outputs are untouched", path)


def commit_outputs(out: Path, staged: dict[str, Path]) -> dict[str, Path]:
    """Move a verified set from the staging folder into ``out``. The old manifest goes first, so that from here
    until the new manifest is written (last, by the caller) the folder says it holds no complete set; a run killed
    in between leaves no manifest, and the next run's staging folder replaces what it left."""
    (out / "manifest.json").unlink(missing_ok=True)
    outputs = {}
    for kind, path in staged.items():
        outputs[kind] = out / path.name
        os.replace(path, outputs[kind])
    shutil.rmtree(out / STAGING, ignore_errors=True)
    return outputs


def remove_stale(out: Path, written: set[str]) -> list[str]:
    """Remove outputs of an earlier run that this run did not write (another format, another mosaic) and the
    earlier run's review page, so that the folder never holds a mixed set."""
    removed = [name for key, name in STALE.items() if key not in written and (out / name).exists()]
    # the review page shows the replaced set's candidates; the CLI builds this set's page after the manifest
    removed += [name for name in ("review.html", "review_files") if (out / name).exists()]
    for name in removed:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        page = name in ("review.html", "review_files")
        (log.info if page else log.warning)("%s: removed %s of an earlier run (not written by this one)", out, name)
    return removed


def _write_preview(path: Path, plans, records: list[dict], refs: list[tuple[int, int]], chip_floor: float) -> None:
    """The review page's overviews and chips, cut by the scorer (:mod:`ordnance.inference.preview`), for the
    candidates in id order (``refs``: the record and position of each candidate's detection)."""
    overviews = {}
    for index, plan in enumerate(plans):
        overview = Overview(plan.info.width, plan.info.height)
        for record in records:
            if record["f"] != index:
                continue
            for r0, r1, c0, c1, data in record.get("o", []):
                overview.image[:, r0:r1, c0:c1] = decode(data, (overview.image.shape[0], r1 - r0, c1 - c0))
        overviews[index] = overview.image
    by_record: dict[int, dict[int, str]] = {}
    ids, chips = [], []
    for candidate, (r_i, pos) in enumerate(refs, start=1):
        if r_i not in by_record:
            by_record[r_i] = {int(p): data for p, data in records[r_i].get("c", [])}
        data = by_record[r_i].get(pos)
        if data is not None:
            ids.append(candidate)
            chips.append(base64.b64decode(data))  # the JPEG as the scorer encoded it
    write_preview(path, overviews, np.array(ids, np.int64), chips, chip_floor)


def device_fallback(device: str, provider: str) -> str | None:
    """What ran instead of the device asked for, or None when it ran there."""
    wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    if wanted[device] == provider:
        return None
    return f"--device {device} asked for {wanted[device]}, not available here: ran on {provider}"


def _source_entry(plan, valid_px: float, area_m2: float) -> dict[str, Any]:
    info = plan.info
    remote = isinstance(info.path, RemoteFile)
    return {
        "path": str(info.path),
        # a remote file is read by windows, never whole: its server's size and ETag identify it instead
        "sha256": None if remote else file_sha256(info.path),
        **({"remote": info.path.identity() or "no size or ETag from the server"} if remote else {}),
        "width": info.width,
        "height": info.height,
        "crs": info.crs_wkt and (f"EPSG:{info.epsg}" if info.epsg else info.crs_wkt),
        "gsd_m": info.gsd_m,
        "gps_lonlat": info.gps_lonlat,
        "positions": "map" if info.crs_wkt else (plan.geometry.note if plan.geometry else "pixel (no GNSS position)"),
        "gsd_check": plan.gsd_note,
        "tiles": len(plan.tiles),
        "tile_src_px": plan.tile_src_px,
        "area_scanned_ha": area_m2 / 10_000,
        "valid_pixels": valid_px,
    }
