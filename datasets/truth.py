"""Truth points of synthetic surveys as GeoPackage and GeoJSON, and reading truth layers back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from affine import Affine
from ordnance.inference.georef import pixel_to_map, to_wgs84
from ordnance.inference.writers import atomic_path


def write_truth(stem: Path, spec, transform: Affine, epsg: int) -> dict[str, Path]:
    """Write the labelled items of a synthetic scene ``spec`` as points with class, item type, size, burial and
    layout pattern (the minefield each item belongs to)."""
    from ordnance.datasets.synth.items import CATALOG

    items = [p for p in spec.items if CATALOG[p.name].label is not None]
    return write_truth_points(
        stem,
        cols=np.array([p.x_px for p in items], np.float64),
        rows=np.array([p.y_px for p in items], np.float64),
        classes=[CATALOG[p.name].label for p in items],
        sizes_m=[np.mean(CATALOG[p.name].length_mm) / 1000 for p in items],
        transform=transform,
        epsg=epsg,
        extra={
            "item": np.array([p.name for p in items], dtype=object),
            "buried": np.array([p.buried for p in items], np.float64),
            "pattern": np.array([p.pattern for p in items], np.int64),
        },
    )


def write_truth_points(
    stem: Path,
    *,
    cols: np.ndarray,
    rows: np.ndarray,
    classes,
    sizes_m,
    transform: Affine,
    epsg: int,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write truth items as points (GeoPackage in the raster's CRS, GeoJSON in EPSG:4326).

    Args:
        stem: Output path without suffix; files are ``<stem>_truth.gpkg`` and ``<stem>_truth.geojson``.
        cols, rows: Item centres in raster pixels (N,).
        classes: Class name of each item.
        sizes_m: Each item's size (its longest side) in metres; ``ordnance evaluate`` matches within half.
        transform: The raster's affine transform (pixel -> map).
        epsg: The raster's projected CRS.
        extra: More fields, each (N,).
    """
    cols, rows = np.asarray(cols, np.float64), np.asarray(rows, np.float64)
    xs, ys = pixel_to_map(transform, cols, rows)
    fields = {
        "id": np.arange(1, len(cols) + 1, dtype=np.int64),
        "class": np.array(list(classes), dtype=object),
        "size_m": np.asarray(sizes_m, np.float64).reshape(-1),
        **(extra or {}),
        "col": cols,
        "row": rows,
    }
    items = len(cols) > 0
    out = {"truth_gpkg": Path(f"{stem}_truth.gpkg"), "truth_geojson": Path(f"{stem}_truth.geojson")}
    names, values = list(fields), list(fields.values())
    with atomic_path(out["truth_gpkg"]) as tmp:
        pyogrio.raw.write(
            tmp,
            shapely.to_wkb(shapely.points(np.c_[xs, ys])) if items else np.array([], object),
            field_data=values,
            fields=names,
            layer="truth",
            driver="GPKG",
            geometry_type="Point",
            crs=f"EPSG:{epsg}",
        )
    lon, lat = to_wgs84(f"EPSG:{epsg}", xs, ys)
    with atomic_path(out["truth_geojson"]) as tmp:
        pyogrio.raw.write(
            tmp,
            shapely.to_wkb(shapely.points(np.c_[lon, lat])) if items else np.array([], object),
            field_data=values,
            fields=names,
            layer="truth",
            driver="GeoJSON",
            geometry_type="Point",
            crs="EPSG:4326",
        )
    return out
