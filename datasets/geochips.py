"""A GeoTIFF mosaic plus vector labels (GeoPackage, GeoJSON, Shapefile), cut into chips on the scorer's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from ordnance.datasets.records import DatasetError, DetectionDataset, Record
from ordnance.inference.georef import gsd_m, map_to_pixel
from ordnance.inference.grid import box_ioa, tile_grid
from pyproj import CRS, Transformer


def read_vector_boxes(vector: Path, raster, class_names: list[str], size_m: dict[str, float], class_field: str):
    """Boxes (N, 4) in raster pixels and labels (N,) from a vector layer in any CRS.

    Points get a square box of the class's size in metres; polygons and lines their bounds.
    """
    vector = Path(vector)
    if not vector.exists():
        raise DatasetError("vector label file does not exist", vector)
    try:
        meta, _, wkb, fields = pyogrio.raw.read(vector)
    except Exception as error:  # GDAL errors of every kind
        raise DatasetError(f"not a readable vector layer ({str(error).splitlines()[0][:160]})", vector) from None
    names = list(meta["fields"])
    if class_field not in names:
        raise DatasetError(f"has no '{class_field}' field (fields: {names})", vector)
    classes = [str(c) for c in fields[names.index(class_field)]]
    unknown = sorted(set(classes) - set(class_names))
    if unknown:
        raise DatasetError(f"unknown classes {unknown}; configured classes are {class_names}", vector)
    geoms = shapely.from_wkb(wkb)
    if meta["crs"] is None:
        raise DatasetError("vector layer has no CRS", vector)
    if CRS.from_user_input(meta["crs"]) != raster.crs:
        to_raster = Transformer.from_crs(CRS.from_user_input(meta["crs"]), raster.crs, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.c_[to_raster.transform(xy[:, 0], xy[:, 1])])
    pixel = shapely.transform(geoms, lambda xy: np.c_[map_to_pixel(raster.transform, xy[:, 0], xy[:, 1])])
    bounds = shapely.bounds(pixel)
    gsd = gsd_m(raster.transform, raster.crs, (raster.width / 2, raster.height / 2)) or 1.0
    is_point = shapely.get_type_id(pixel) == 0
    half = np.array([size_m.get(c, 0.2) / gsd / 2 for c in classes])
    cx, cy = bounds[:, 0], bounds[:, 1]
    bounds[is_point] = np.c_[cx - half, cy - half, cx + half, cy + half][is_point]
    labels = np.array([class_names.index(c) for c in classes], np.int64)
    return bounds.astype(np.float64), labels


def read_geotiff_chips(
    raster_path: str | Path,
    vector_path: str | Path,
    *,
    class_names: list[str],
    size_m: dict[str, float],
    tile_px: int = 512,
    overlap_px: int = 96,
    min_ioa: float = 0.5,
    negative_ratio: float = 0.2,
    class_field: str = "class",
    seed: int = 0,
    block_px: int | None = None,
) -> DetectionDataset:
    """Chips of a mosaic on the scorer's tile grid, with the labels that fall in each.

    Args:
        raster_path: GeoTIFF with a projected CRS.
        vector_path: Points or polygons with a ``class_field``; any CRS (reprojected to the raster's).
        class_names: Configured classes.
        size_m: Box side in metres per class, for point labels.
        tile_px, overlap_px: The grid (as the scorer cuts it).
        min_ioa: A box cut by a chip edge is kept when at least this share of it lies inside the chip.
        negative_ratio: Chips without objects kept, per chip with objects (seeded choice).
        block_px: Split group size: chips are grouped in square blocks of this many pixels (default:
            8 tiles), so spatial splits keep neighbours together.
    """
    import rasterio

    raster_path = Path(raster_path)
    if not raster_path.exists():
        raise DatasetError("raster does not exist", raster_path)
    with rasterio.open(raster_path) as raster:
        if raster.crs is None:
            raise DatasetError("raster has no CRS; vector labels cannot be placed", raster_path)
        boxes, labels = read_vector_boxes(Path(vector_path), raster, list(class_names), size_m, class_field)
        width, height = raster.width, raster.height
    block = block_px or tile_px * 8
    positives, negatives = [], []
    for tile in tile_grid(width, height, tile_px, overlap_px):
        x0, y0, x1, y1 = tile.bounds
        ioa = box_ioa(boxes, (x0, y0, x1, y1))
        keep = ioa >= min_ioa
        local = np.clip(boxes[keep] - [x0, y0, x0, y0], 0, [tile.width, tile.height] * 2)
        norm = local / [tile.width, tile.height, tile.width, tile.height]
        group = f"{raster_path.stem}:block_{int(x0 // block)}_{int(y0 // block)}"
        record = Record(raster_path, norm, labels[keep], group, (x0, y0, tile.width, tile.height), tile.core)
        (positives if keep.any() else negatives).append(record)
    rng = np.random.default_rng(seed)
    n_neg = min(len(negatives), int(round(negative_ratio * max(len(positives), 1))))
    chosen = sorted(rng.choice(len(negatives), n_neg, replace=False)) if n_neg else []
    records = positives + [negatives[i] for i in chosen]
    records.sort(key=lambda r: (r.window[1], r.window[0]))
    return DetectionDataset(records, class_names)
