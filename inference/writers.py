"""Writers of candidate hazard points: GeoPackage, GeoJSON, CSV, KML and the run manifest.

Each file is written under a temporary name in the output folder and renamed when complete, so a file
with the final name is always whole.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from ordnance.inference.errors import InputError
from ordnance.inference.styles import write_styles

# Candidate fields, in order. Documented in README.md ("Outputs").
FIELDS = (
    "id",
    "class",
    "score",
    "lon",
    "lat",
    "x",
    "y",
    "crs",
    "epsg",
    "location",
    "position_uncertainty_m",
    "bbox_px",
    "width_m",
    "height_m",
    "gsd_m",
    "source",
    "model_name",
    "model_version",
    "model_sha256",
    "processed_utc",
    "review_status",
    "also_seen_as",
)
FORMATS = ("gpkg", "geojson", "csv", "kml")


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (same suffix); rename it onto ``final`` on success."""
    final = Path(final)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide outputs from other users
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _field_arrays(table: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    names = [f for f in FIELDS if f in table]
    return names, [np.asarray(table[f]) for f in names]


def write_gpkg(
    path: Path,
    table: dict[str, np.ndarray],
    geom_xy: np.ndarray,
    crs_wkt: str | None,
    coverage: shapely.Geometry,
) -> None:
    """GeoPackage with layers ``candidates`` (points in ``crs_wkt``) and ``coverage`` (scanned area), each with
    its default QGIS style."""
    names, values = _field_arrays(table)
    points = shapely.to_wkb(shapely.points(geom_xy)) if len(geom_xy) else np.array([], dtype=object)
    with atomic_path(path) as tmp:
        pyogrio.raw.write(
            tmp,
            points,
            field_data=values,
            fields=names,
            layer="candidates",
            driver="GPKG",
            geometry_type="Point",
            crs=crs_wkt,
        )
        area_m2 = np.array([coverage.area]) if crs_wkt else np.array([np.nan])
        pyogrio.raw.write(
            tmp,
            np.array([shapely.to_wkb(coverage)], dtype=object),
            field_data=[area_m2 / 10_000],
            fields=["area_ha"],
            layer="coverage",
            driver="GPKG",
            geometry_type="MultiPolygon",
            crs=crs_wkt,
            append=True,
            promote_to_multi=True,
        )
        write_styles(tmp, ["candidates", "coverage"])


def write_lonlat_layer(path: Path, table: dict[str, np.ndarray], driver: str) -> None:
    """Points in EPSG:4326 (GeoJSON or KML); candidates without lon/lat are left out."""
    has = np.isfinite(np.asarray(table["lon"], dtype=np.float64)) if len(table["lon"]) else np.zeros(0, bool)
    sub = {k: np.asarray(v)[has] for k, v in table.items()}
    names, values = _field_arrays(sub)
    points = shapely.to_wkb(shapely.points(np.c_[sub["lon"], sub["lat"]])) if has.any() else np.array([], object)
    extra = {"NameField": "class", "DescriptionField": "score"} if driver == "KML" else {}
    with atomic_path(path) as tmp:
        pyogrio.raw.write(
            tmp,
            points,
            field_data=values,
            fields=names,
            driver=driver,
            geometry_type="Point",
            crs="EPSG:4326",
            layer="candidates",
            dataset_options=extra or None,
        )


def write_csv(path: Path, table: dict[str, np.ndarray]) -> None:
    """CSV, one row per candidate, columns in FIELDS order."""
    names, values = _field_arrays(table)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in zip(*values):
            writer.writerow([_plain(v) for v in row])


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """JSON file, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def read_manifest(path: Path) -> dict:
    """A scoring run's manifest.json; InputError when it is not the scorer's JSON."""
    try:
        manifest = json.loads(Path(path).read_text())
        if not (isinstance(manifest["inputs"], list) and manifest["model"]["card"] and manifest["started_utc"]):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise InputError("not a manifest.json written by 'ordnance score' (corrupt or edited)", path) from None
    return manifest
