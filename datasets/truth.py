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
    """Write the labelled items of ``spec`` as points with class, item type, size and burial."""
    from ordnance.datasets.synth.items import CATALOG

    items = [p for p in spec.items if CATALOG[p.name].label is not None]
    cols = np.array([p.x_px for p in items], np.float64)
    rows = np.array([p.y_px for p in items], np.float64)
    xs, ys = pixel_to_map(transform, cols, rows)
    fields = {
        "id": np.arange(1, len(items) + 1, dtype=np.int64),
        "class": np.array([CATALOG[p.name].label for p in items], dtype=object),
        "item": np.array([p.name for p in items], dtype=object),
        "size_m": np.array([np.mean(CATALOG[p.name].length_mm) / 1000 for p in items], np.float64),
        "buried": np.array([p.buried for p in items], np.float64),
        "col": cols,
        "row": rows,
    }
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
