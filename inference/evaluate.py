"""Mosaic-level hazard-point evaluation: predicted points against truth items, in map units.

Counts what deminers need: items found and missed, false alarms per hectare of scanned area, recall at
fixed false-alarm densities, average precision, recall near tile seams against interior items, and the
duplicate rate. Torch-free.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from ordnance.inference.errors import InputError
from ordnance.inference.grid import tile_grid
from ordnance.inference.metrics import match_points, pr_curve, summarise
from ordnance.inference.writers import read_manifest
from pyproj import CRS, Transformer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationSettings:
    """Matching rule and report options.

    Attributes:
        floor_m: Smallest match tolerance, metres.
        size_factor: Tolerance = max(floor_m, size_factor * item size).
        score_threshold: Operating point; default: the scorer's (every reported candidate).
        class_aware: Only same-class predictions count as hits (default: any class finds an item).
        fa_per_ha: False-alarm densities at which recall is reported.
    """

    floor_m: float = 0.25
    size_factor: float = 0.5
    score_threshold: float | None = None
    class_aware: bool = False
    fa_per_ha: tuple[float, ...] = (1.0, 5.0, 10.0)


def _read_points(path: Path, layer: str | None = None):
    if not Path(path).exists():
        raise InputError("file does not exist", path)
    try:
        meta, _, wkb, fields = pyogrio.raw.read(path, layer=layer)
    except Exception as error:  # GDAL errors of every kind
        raise InputError(f"not a readable vector layer ({str(error).splitlines()[0][:160]})", path) from None
    geoms = shapely.from_wkb(wkb)
    table = dict(zip(meta["fields"], fields))
    return geoms, table, meta["crs"]


TRUTH_TYPES = {0, 3, 6}  # Point, Polygon, MultiPolygon


def _check_settings(settings: EvaluationSettings) -> None:
    if not (np.isfinite(settings.floor_m) and settings.floor_m > 0):
        raise InputError(f"must be a positive number of metres, got {settings.floor_m}", "--floor-m")
    if not (np.isfinite(settings.size_factor) and settings.size_factor >= 0):
        raise InputError(f"must be zero or more, got {settings.size_factor}", "--size-factor")
    threshold = settings.score_threshold
    if threshold is not None and not (np.isfinite(threshold) and 0 < threshold <= 1):
        raise InputError(f"score threshold must be in (0, 1], got {threshold}", "--score-threshold")


def _read_csv_points(path: Path):
    """The scorer's candidates.csv: points from its ``x``, ``y`` and ``crs`` columns (one CRS per file)."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"x", "y", "crs", "score", "class"} - set(rows[0] if rows else {})
    if rows and missing:
        raise InputError(f"CSV lacks the columns {sorted(missing)} of the scorer's candidates.csv", path)
    crs_names = {r["crs"] for r in rows}
    if len(crs_names) > 1:
        raise InputError(f"CSV mixes coordinate systems {sorted(crs_names)}", path)
    crs = next(iter(crs_names), None)
    try:
        xy = np.array([[float(r["x"]), float(r["y"])] for r in rows], np.float64).reshape(-1, 2)
        scores = np.array([float(r["score"]) for r in rows], np.float64)
    except ValueError:
        raise InputError("x, y or score is not a number", path) from None
    table = {"score": scores, "class": np.array([r["class"] for r in rows], object)}
    return shapely.points(xy), table, (None if crs in (None, "pixel") else crs)


def _to_crs(geoms, source_crs: str | None, target: CRS):
    if source_crs is None or CRS.from_user_input(source_crs) == target:
        return geoms
    transformer = Transformer.from_crs(CRS.from_user_input(source_crs), target, always_xy=True)
    return shapely.transform(geoms, lambda xy: np.c_[transformer.transform(xy[:, 0], xy[:, 1])])


def _scanned(predictions: Path, crs: CRS, area_ha: float | None):
    """Coverage polygon and its area (ha), from the scorer's GeoPackage, unless given."""
    if Path(predictions).suffix.lower() == ".gpkg" and "coverage" in pyogrio.list_layers(predictions)[:, 0]:
        geoms, _, source = _read_points(predictions, "coverage")
        cover = shapely.union_all(_to_crs(geoms, source, crs))
        return cover, (area_ha if area_ha is not None else cover.area / 10_000)
    if area_ha is None:
        raise InputError("no coverage layer; give the scanned area with --area-ha", predictions)
    return None, area_ha


def in_overlap(manifest: dict, xy_px: np.ndarray, source_index: int = 0) -> tuple[np.ndarray, int]:
    """Which points (source pixels) lie where tiles of the scorer's grid overlap (seen by 2+ windows)."""
    entry = manifest["inputs"][source_index]
    tile = entry["tile_src_px"]
    overlap = round(manifest["settings"]["overlap_px"] * tile / json.loads(manifest["model"]["card"])["tile_size_px"])
    grid = tile_grid(entry["width"], entry["height"], tile, overlap)
    cols = sorted({(t.col_off, t.col_off + t.width) for t in grid})
    rows = sorted({(t.row_off, t.row_off + t.height) for t in grid})
    in_x = sum(((xy_px[:, 0] >= a) & (xy_px[:, 0] < b)).astype(int) for a, b in cols)
    in_y = sum(((xy_px[:, 1] >= a) & (xy_px[:, 1] < b)).astype(int) for a, b in rows)
    return (in_x > 1) | (in_y > 1), overlap


def evaluate_mosaic(
    predictions: Path,
    truth: Path,
    *,
    settings: EvaluationSettings = EvaluationSettings(),
    area_ha: float | None = None,
    manifest: Path | None = None,
) -> dict:
    """Match a scoring run's candidates to truth points (or polygons) in the truth's projected CRS."""
    _check_settings(settings)
    if area_ha is not None and not (np.isfinite(area_ha) and area_ha > 0):
        raise InputError(f"must be a positive number of hectares, got {area_ha}", "--area-ha")
    info = read_manifest(Path(manifest)) if manifest is not None else None
    t_geoms, t_table, t_crs = _read_points(truth)
    if t_crs is None or not CRS.from_user_input(t_crs).is_projected:
        raise InputError("truth layer needs a projected CRS (metres)", truth)
    if len(t_geoms) == 0:
        raise InputError("truth layer holds no items: recall would mean nothing", truth)
    kinds = set(shapely.get_type_id(t_geoms).tolist()) - TRUTH_TYPES
    if kinds:
        raise InputError("truth items must be points or polygons, not lines or collections", truth)
    crs = CRS.from_user_input(t_crs)
    if Path(predictions).suffix.lower() == ".csv":
        p_geoms, p_table, p_crs = _read_csv_points(predictions)
    else:
        layer = "candidates" if str(predictions).endswith(".gpkg") else None
        p_geoms, p_table, p_crs = _read_points(predictions, layer)
    if p_crs is None:
        raise InputError(
            "predictions carry no CRS (pixel coordinates of frames?); they cannot meet map truth", predictions
        )
    p_geoms = _to_crs(p_geoms, p_crs, crs)
    cover, area = _scanned(predictions, crs, area_ha)
    if cover is not None:
        inside = shapely.contains_xy(
            cover.buffer(1e-6), shapely.get_x(shapely.centroid(t_geoms)), shapely.get_y(shapely.centroid(t_geoms))
        )
        t_geoms = t_geoms[inside]
        t_table = {k: np.asarray(v)[inside] for k, v in t_table.items()}
    t_xy = np.c_[shapely.get_x(shapely.centroid(t_geoms)), shapely.get_y(shapely.centroid(t_geoms))]
    p_xy = np.c_[shapely.get_x(p_geoms), shapely.get_y(p_geoms)]
    bounds = shapely.bounds(t_geoms)
    try:
        sizes = np.asarray(t_table.get("size_m", np.zeros(len(t_xy))), float)
    except (TypeError, ValueError):
        raise InputError("size_m must be a number of metres on every item", truth) from None
    if ((sizes < 0) | np.isinf(sizes)).any():
        raise InputError("size_m must be a finite, non-negative number of metres on every item", truth)
    sizes = np.nan_to_num(sizes, nan=0.0)  # an item without a size: the floor tolerance
    size = np.where(
        shapely.get_type_id(t_geoms) == 0,
        sizes,
        np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]),
    )
    tolerance = np.maximum(settings.floor_m, settings.size_factor * size)
    scores = np.asarray(p_table["score"], float)
    keep = scores >= (settings.score_threshold if settings.score_threshold is not None else -np.inf)
    p_xy, scores = p_xy[keep], scores[keep]
    p_cls = np.asarray(p_table["class"], object)[keep]
    t_cls = np.asarray(t_table.get("class", np.full(len(t_xy), "item")), object)
    labels = {"pred_labels": p_cls, "truth_labels": t_cls} if settings.class_aware else {}
    matches = match_points(p_xy, scores, t_xy, tolerance, **labels)
    report = {"overall": summarise([matches], area_ha=area, fa_per_ha=settings.fa_per_ha), "area_ha": area}
    report["per_class"] = {}
    for name in sorted(set(t_cls) | set(p_cls)):
        sub = match_points(p_xy[p_cls == name], scores[p_cls == name], t_xy[t_cls == name], tolerance[t_cls == name])
        report["per_class"][str(name)] = summarise([sub], area_ha=area, fa_per_ha=settings.fa_per_ha)
    found = np.zeros(len(t_xy), bool)
    found[matches.matched_truth[matches.matched_truth >= 0]] = True
    if info is not None and "col" in t_table:
        near, overlap = in_overlap(info, np.c_[t_table["col"], t_table["row"]])
        report["seams"] = {
            "overlap_px": overlap,
            "items_near_seams": int(near.sum()),
            "recall_near_seams": float(found[near].mean()) if near.any() else None,
            "recall_interior": float(found[~near].mean()) if (~near).any() else None,
        }
    report["missed"] = [
        {"x": float(x), "y": float(y), "class": str(c)} for (x, y), c in zip(t_xy[~found], t_cls[~found])
    ]
    report["pr_curve"] = [list(map(float, a)) for a in pr_curve([matches])]
    return report


def markdown_table(report: dict) -> str:
    """A short markdown table: overall and per class."""
    keys = [
        "n_truth",
        "n_pred",
        "recall",
        "precision",
        "f1",
        "ap",
        "false_alarms_per_ha",
        "recall_at_1_fa_per_ha",
        "recall_at_5_fa_per_ha",
        "recall_at_10_fa_per_ha",
        "duplicate_rate",
    ]
    rows = [("all", report["overall"]), *list(report.get("per_class", {}).items())]
    lines = ["| class | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 1)]
    for name, values in rows:
        lines.append(f"| {name} | " + " | ".join(_fmt(values.get(k)) for k in keys) + " |")
    if report.get("seams"):
        s = report["seams"]
        lines.append(
            f"\nRecall near tile seams (within {s['overlap_px']} px): {_fmt(s['recall_near_seams'])} "
            f"over {s['items_near_seams']} items; interior: {_fmt(s['recall_interior'])}."
        )
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def plot_pr(report: dict, path: Path) -> None:
    """PR curve PNG (matplotlib when installed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _thresholds, recall, precision = (np.array(a) for a in report["pr_curve"])
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    ax.plot(recall, precision)
    ax.set(xlabel="recall (items found)", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="hazard points")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
